// The sorted algorithm on CUDA (sigmoid_rank.h: sigmoid_rank_sorted_sums_cuda): one thread per
// element of rows that arrive sorted (vsl_ext/kernels/cuda.py sorts them with torch.sort and maps
// every element back to its column). Neighbouring threads hold neighbouring centres, so their
// windows overlap and their loads hit the same cache lines.
//
// For a centre u and sorted values v_0 <= ... <= v_{n-1}, a term with |v_a - u| > hw, where
// hw = Saturation<T> * tau, is exactly what rounding makes of it in a sum: sigma is 1 or 0 and
// sigma' is 0 (see sigmoid_math.h). So a row sum is a count of saturated ones, found by position,
// plus the terms of the window [lo, hi) = { a : |v_a - u| <= hw }, found by binary search. (The CPU
// implementation of the sorted algorithm walks the window incrementally and separates the
// exponentials instead: sigmoid_rank_cpu_impl.h.)
//
// Rows are NaN-free (rows with NaN take the dense algorithm). Infinities sort to the ends of a row,
// beyond every finite centre's window, and are counted by position (an infinity against a finite
// value is saturated); an infinite centre's window is the run of values equal to it, ties
// (sigma = 1/2, sigma' = 0; see rank_diff / grad_diff in sigmoid_math.h).
#include <cuda_runtime.h>

#include <stdexcept>

#include "cuda_common.cuh"
#include "sigmoid_math.h"
#include "sigmoid_rank.h"

namespace vsl {
namespace {

constexpr int kThreads = 256;
// Float partial sums of this many terms are added in double (as in the dense kernels).
constexpr int64_t kChunk = 64;

template <typename T> struct WindowParams {
  T k;
  T half_window;  // hw, in units of the input
  bool descending;
};

template <typename T> WindowParams<T> window_params(double tau, bool descending) {
  WindowParams<T> p;
  p.k = static_cast<T>((descending ? 1.0 : -1.0) / tau);
  p.half_window = length_in<T>(Saturation<T>::value * tau);
  p.descending = descending;
  return p;
}

// First index with v[index] >= x, in sorted v[0, n).
template <typename T> __device__ int64_t first_at_least(const T* v, int64_t n, T x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (v[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// First index with v[index] > x, in sorted v[0, n).
template <typename T> __device__ int64_t first_above(const T* v, int64_t n, T x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (v[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The position to leave out for element e (position i of its row): skip_positions[e] where given;
// without them the rank leaves out the centre's own position (the centres are the sorted row itself)
// and the gradient sums leave out nothing.
template <SortedSum Kind> __device__ int64_t skip_at(const int64_t* skip_positions, int64_t e, int64_t i) {
  return skip_positions ? skip_positions[e] : (Kind == SortedSum::rank ? i : -1);
}

// One element: v, w the sorted row and its weights (w may be null unless the kind reads it), u and
// wu the centre and its weight, skip the position in v of the centre's own column (-1: none).
template <SortedSum Kind, typename T>
__device__ T element_sum(const T* v, const T* w, int64_t n, T u, T wu, int64_t skip, const WindowParams<T>& p) {
  // [u - hw, u + hw]; an infinite centre's window is the run of values equal to it.
  const T reach = is_infinite(u) ? T(0) : p.half_window;
  const int64_t lo = first_at_least(v, n, u - reach);
  const int64_t hi = first_above(v, n, u + reach);
  double total = 0;
  for (int64_t c0 = lo; c0 < hi; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < hi ? c0 + kChunk : hi;
    T s = 0;
    for (int64_t a = c0; a < c1; ++a) {
      if (a == skip) continue;
      if constexpr (Kind == SortedSum::rank) {
        s += sigmoid(rank_diff(v[a], u) * p.k);
      } else {
        const T g = sigmoid_grad(grad_diff(v[a], u) * p.k);
        if constexpr (Kind == SortedSum::row_rank_grad) {
          s += g * (w[a] - wu);
        } else if constexpr (Kind == SortedSum::ranked_grad) {
          s += g;
        } else {
          s += g * w[a];
        }
      }
    }
    total += static_cast<double>(s);
  }
  if constexpr (Kind == SortedSum::rank) {
    // sigma = 1 above the window when descending, below it when ascending; the centre's own
    // column does not count.
    int64_t ones = p.descending ? n - hi : lo;
    if (skip >= 0 && (p.descending ? skip >= hi : skip < lo)) --ones;
    return static_cast<T>(1.0 + static_cast<double>(ones) + total);
  } else if constexpr (Kind == SortedSum::ranked_grad) {
    return static_cast<T>(-static_cast<double>(p.k) * static_cast<double>(wu) * total);
  } else {
    return static_cast<T>(static_cast<double>(p.k) * total);
  }
}

template <SortedSum Kind, typename T>
__global__ void __launch_bounds__(kThreads)
sorted_sums_kernel(const T* __restrict__ sorted_values, const T* __restrict__ value_weights,
                   const T* __restrict__ sorted_centres, const T* __restrict__ centre_weights,
                   const int64_t* __restrict__ centre_columns, const int64_t* __restrict__ skip_positions,
                   T* __restrict__ out, int64_t rows, int64_t cols, WindowParams<T> p) {
  const int64_t total = rows * cols;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = (e / cols) * cols;
    out[o + centre_columns[e]] = element_sum<Kind>(sorted_values + o, value_weights ? value_weights + o : nullptr, cols,
                                                   sorted_centres[e], centre_weights ? centre_weights[e] : T(0),
                                                   skip_at<Kind>(skip_positions, e, e - o), p);
  }
}

unsigned grid_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (1 << 30) ? blocks : (1 << 30));  // the kernel strides past it
}

template <SortedSum Kind, typename T>
void launch(const void* sorted_values, const void* value_weights, const void* sorted_centres,
            const void* centre_weights, const int64_t* centre_columns, const int64_t* skip_positions, void* out,
            int64_t rows, int64_t cols, double tau, bool descending, cudaStream_t st) {
  sorted_sums_kernel<Kind, T><<<grid_for(rows * cols), kThreads, 0, st>>>(
      static_cast<const T*>(sorted_values), static_cast<const T*>(value_weights), static_cast<const T*>(sorted_centres),
      static_cast<const T*>(centre_weights), centre_columns, skip_positions, static_cast<T*>(out), rows, cols,
      window_params<T>(tau, descending));
  cuda::check(cudaGetLastError(), "sigmoid_rank sorted_sums_kernel launch");
}

template <typename T>
void sorted_sums(SortedSum kind, const void* v, const void* w, const void* u, const void* wu,
                 const int64_t* centre_columns, const int64_t* skip_positions, void* out, int64_t rows, int64_t cols,
                 double tau, bool descending, cudaStream_t st) {
  switch (kind) {
    case SortedSum::rank:
      return launch<SortedSum::rank, T>(v, w, u, wu, centre_columns, skip_positions, out, rows, cols, tau, descending,
                                        st);
    case SortedSum::row_rank_grad:
      return launch<SortedSum::row_rank_grad, T>(v, w, u, wu, centre_columns, skip_positions, out, rows, cols, tau,
                                                 descending, st);
    case SortedSum::ranked_grad:
      return launch<SortedSum::ranked_grad, T>(v, w, u, wu, centre_columns, skip_positions, out, rows, cols, tau,
                                               descending, st);
    case SortedSum::compared_grad:
      return launch<SortedSum::compared_grad, T>(v, w, u, wu, centre_columns, skip_positions, out, rows, cols, tau,
                                                 descending, st);
  }
  throw std::invalid_argument("vsl_ext: unknown SortedSum kind");
}

}  // namespace

void sigmoid_rank_sorted_sums_cuda(DType dt, SortedSum kind, const void* sorted_values, const void* value_weights,
                                   const void* sorted_centres, const void* centre_weights,
                                   const int64_t* centre_columns, const int64_t* skip_positions, void* out,
                                   int64_t rows, int64_t cols, double tau, bool descending, int device,
                                   uintptr_t stream) {
  if (rows <= 0 || cols <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  if (dt == DType::f32)
    sorted_sums<float>(kind, sorted_values, value_weights, sorted_centres, centre_weights, centre_columns,
                       skip_positions, out, rows, cols, tau, descending, st);
  else
    sorted_sums<double>(kind, sorted_values, value_weights, sorted_centres, centre_weights, centre_columns,
                        skip_positions, out, rows, cols, tau, descending, st);
}

}  // namespace vsl
