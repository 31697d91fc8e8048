// CUDA sorted-window kernels: one thread per element of rows that arrive sorted (the Python layer
// sorts them with torch.sort). Neighbouring threads hold neighbouring centres, so their windows
// overlap and their loads hit the same cache lines. The element code is csrc/sorted_window.h,
// which the CPU loop in sorted_window_cpu.cpp runs too.
#include <cuda_runtime.h>

#include <stdexcept>

#include "cuda_common.cuh"
#include "kernels.h"
#include "sorted_window.h"

namespace vsl {
namespace {

constexpr int kThreads = 256;

template <WindowKind Kind, typename T>
__global__ void __launch_bounds__(kThreads)
window_kernel(const T* __restrict__ v, const T* __restrict__ w, const T* __restrict__ u, const T* __restrict__ wu,
              const int64_t* __restrict__ uperm, const int64_t* __restrict__ skip, T* __restrict__ out, int64_t rows,
              int64_t cols, WindowParams<T> p) {
  const int64_t total = rows * cols;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = (e / cols) * cols;
    out[o + uperm[e]] = window_element<Kind>(v + o, w ? w + o : nullptr, cols, u[e], wu ? wu[e] : T(0),
                                             skip_at<Kind>(skip, e, e - o), p);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
rank_ratio_kernel(const T* __restrict__ sr, const T* __restrict__ cr, T* __restrict__ gs, T* __restrict__ gc,
                  double* __restrict__ partials, int64_t cols, T scale) {  // one block per row
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  double acc = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    acc += ratio_element(sr[o + j], cr[o + j], scale, gs + o + j, gc ? gc + o + j : nullptr);
  const double row_sum = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = row_sum;
}

unsigned grid_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (1 << 30) ? blocks : (1 << 30));  // the kernel strides past it
}

template <WindowKind Kind, typename T>
void launch_window(const void* v, const void* w, const void* u, const void* wu, const int64_t* uperm,
                   const int64_t* skip, void* out, int64_t rows, int64_t cols, double tau, bool descending,
                   cudaStream_t st) {
  window_kernel<Kind, T><<<grid_for(rows * cols), kThreads, 0, st>>>(
      static_cast<const T*>(v), static_cast<const T*>(w), static_cast<const T*>(u), static_cast<const T*>(wu), uperm,
      skip, static_cast<T*>(out), rows, cols, window_params<T>(tau, descending));
  cuda::check(cudaGetLastError(), "window_kernel launch");
}

template <typename T>
void window_sums_t(int kind, const void* v, const void* w, const void* u, const void* wu, const int64_t* uperm,
                   const int64_t* skip, void* out, int64_t rows, int64_t cols, double tau, bool descending,
                   cudaStream_t st) {
  switch (static_cast<WindowKind>(kind)) {
    case WindowKind::rank:
      return launch_window<WindowKind::rank, T>(v, w, u, wu, uperm, skip, out, rows, cols, tau, descending, st);
    case WindowKind::grad_self:
      return launch_window<WindowKind::grad_self, T>(v, w, u, wu, uperm, skip, out, rows, cols, tau, descending, st);
    case WindowKind::grad_centre:
      return launch_window<WindowKind::grad_centre, T>(v, w, u, wu, uperm, skip, out, rows, cols, tau, descending,
                                                       st);
    case WindowKind::grad_weighted:
      return launch_window<WindowKind::grad_weighted, T>(v, w, u, wu, uperm, skip, out, rows, cols, tau, descending,
                                                         st);
  }
  throw std::invalid_argument("window kind must be 0..3");
}

}  // namespace

void window_sums_cuda(DType dt, int kind, const void* v, const void* w, const void* u, const void* wu,
                      const int64_t* uperm, const int64_t* skip, void* out, int64_t rows, int64_t cols, double tau,
                      bool descending, int device, uintptr_t stream) {
  if (rows <= 0 || cols <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  if (dt == DType::f32) window_sums_t<float>(kind, v, w, u, wu, uperm, skip, out, rows, cols, tau, descending, st);
  else window_sums_t<double>(kind, v, w, u, wu, uperm, skip, out, rows, cols, tau, descending, st);
}

void rank_ratio_rows_cuda(DType dt, const void* sr, const void* cr, void* gs, void* gc, double* partials,
                          int64_t rows, int64_t cols, double grad_scale, int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  if (dt == DType::f32)
    rank_ratio_kernel<float><<<static_cast<unsigned>(rows), kThreads, 0, st>>>(
        static_cast<const float*>(sr), static_cast<const float*>(cr), static_cast<float*>(gs), static_cast<float*>(gc),
        partials, cols, static_cast<float>(-grad_scale));
  else
    rank_ratio_kernel<double><<<static_cast<unsigned>(rows), kThreads, 0, st>>>(
        static_cast<const double*>(sr), static_cast<const double*>(cr), static_cast<double*>(gs),
        static_cast<double*>(gc), partials, cols, -grad_scale);
  cuda::check(cudaGetLastError(), "rank_ratio_kernel launch");
}

}  // namespace vsl
