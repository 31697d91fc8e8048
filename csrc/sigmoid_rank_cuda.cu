// CUDA sigmoid-rank kernels, dense algorithm (sigmoid_rank.h; the sorted algorithm is
// sigmoid_rank_sorted_cuda.cu): one thread block per row, the compared row streamed through shared
// memory in tiles (sigmoid_rank_cuda.cuh). Every pair gets its sigmoid. Pair differences go through
// rank_diff / grad_diff (sigmoid_math.h): equal infinities tie, no gradient flows through an
// infinite entry.
#include <cuda_runtime.h>

#include "cuda_common.cuh"
#include "sigmoid_math.h"
#include "sigmoid_rank.h"
#include "sigmoid_rank_cuda.cuh"

namespace vsl {
namespace {

using cuda::check;
using dense_cuda::kChunk;
using dense_cuda::kThreads;
using dense_cuda::kTile;
using dense_cuda::load_tile;
using dense_cuda::Params;

// The sweep shared by the rank kernels. For every column c of this block's row:
//   total_c = sum_i op.term(state_c, a[i], b[i])   over the whole row a (and b, if kPair)
// streamed through shared memory, then op.finish(c, state_c, total_c). Every thread of the block
// runs the same number of iterations, so the barriers are uniform.
template <typename T, bool kPair, typename Op>
__device__ __forceinline__ void row_sweep(const T* __restrict__ a, const T* __restrict__ b, int64_t cols,
                                          const Op& op) {
  __shared__ T ta[kTile];
  __shared__ T tb[kPair ? kTile : 1];
  for (int64_t c0 = 0; c0 < cols; c0 += blockDim.x) {
    const int64_t c = c0 + threadIdx.x;
    const bool active = c < cols;
    const typename Op::State st = op.state(active ? c : 0);
    double total = 0;
    for (int64_t t0 = 0; t0 < cols; t0 += kTile) {
      const int len = static_cast<int>(min(static_cast<int64_t>(kTile), cols - t0));
      __syncthreads();
      load_tile(ta, a, t0, len);
      if (kPair) load_tile(tb, b, t0, len);
      __syncthreads();
      if (active) {
        for (int i0 = 0; i0 < len; i0 += kChunk) {
          const int i1 = min(len, i0 + kChunk);
          T s = 0;
          for (int i = i0; i < i1; ++i) s += op.term(st, ta[i], kPair ? tb[i] : T(0));
          total += static_cast<double>(s);
        }
      }
    }
    if (active) op.finish(c, st, total);
  }
}

template <typename T> struct Pair {
  T v, w;
};

// ranks[c] = 1 + sum_{a != c} sigma((compared_a - ranked_c) k)
template <typename T> struct ForwardOp {
  using State = T;
  const T *ranked, *compared;
  T* ranks;
  Params<T> p;
  __device__ T state(int64_t c) const { return ranked[c]; }
  __device__ T term(T xc, T ya, T) const { return sigmoid_clamped(rank_diff(ya, xc) * p.k, p.clamp_at); }
  __device__ void finish(int64_t c, T xc, double total) const {
    // 1 + (sum - own term): the own term cancels exactly, so a lone column ranks exactly 1.
    const T own = sigmoid_clamped(rank_diff(compared[c], xc) * p.k, p.clamp_at);
    ranks[c] = static_cast<T>(1.0 + (total - static_cast<double>(own)));
  }
};

// Row rank: grad_ranked[l] = k * sum_j sigma'((x_j - x_l) k) (g_j - g_l)   (the j = l term is 0)
template <typename T> struct RowBackwardOp {
  using State = Pair<T>;
  const T *ranked, *grad_ranks;
  T* grad_ranked;
  Params<T> p;
  __device__ State state(int64_t l) const { return {ranked[l], grad_ranks[l]}; }
  __device__ T term(const State& s, T xj, T gj) const {
    return sigmoid_grad_clamped(grad_diff(xj, s.v) * p.k, p.clamp_at) * (gj - s.w);
  }
  __device__ void finish(int64_t l, const State&, double total) const {
    grad_ranked[l] = static_cast<T>(static_cast<double>(p.k) * total);
  }
};

// Rank against compared rows, ranked side: grad_ranked[c] = -k g_c sum_{a != c} sigma'((y_a - x_c) k)
template <typename T> struct RankedBackwardOp {
  using State = T;
  const T *ranked, *compared, *grad_ranks;
  T* grad_ranked;
  Params<T> p;
  __device__ T state(int64_t c) const { return ranked[c]; }
  __device__ T term(T xc, T ya, T) const { return sigmoid_grad_clamped(grad_diff(ya, xc) * p.k, p.clamp_at); }
  __device__ void finish(int64_t c, T xc, double total) const {
    total -= static_cast<double>(sigmoid_grad_clamped(grad_diff(compared[c], xc) * p.k, p.clamp_at));
    grad_ranked[c] = static_cast<T>(-static_cast<double>(p.k) * static_cast<double>(grad_ranks[c]) * total);
  }
};

// Rank against compared rows, compared side: grad_compared[a] = k sum_{c != a} sigma'((y_a - x_c) k) g_c
template <typename T> struct ComparedBackwardOp {
  using State = T;
  const T *ranked, *compared, *grad_ranks;
  T* grad_compared;
  Params<T> p;
  __device__ T state(int64_t a) const { return compared[a]; }
  __device__ T term(T ya, T xc, T gc) const { return sigmoid_grad_clamped(grad_diff(xc, ya) * p.k, p.clamp_at) * gc; }
  __device__ void finish(int64_t a, T ya, double total) const {
    total -= static_cast<double>(sigmoid_grad_clamped(grad_diff(ranked[a], ya) * p.k, p.clamp_at) * grad_ranks[a]);
    grad_compared[a] = static_cast<T>(static_cast<double>(p.k) * total);
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const T* __restrict__ ranked, const T* __restrict__ compared, T* __restrict__ ranks, int64_t cols,
               Params<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  const T* yr = (compared ? compared : ranked) + o;
  row_sweep<T, false>(yr, yr, cols, ForwardOp<T>{ranked + o, yr, ranks + o, p});
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
row_backward_kernel(const T* __restrict__ ranked, const T* __restrict__ grad_ranks, T* __restrict__ grad_ranked,
                    int64_t cols, Params<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  row_sweep<T, true>(ranked + o, grad_ranks + o, cols,
                     RowBackwardOp<T>{ranked + o, grad_ranks + o, grad_ranked + o, p});
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
ranked_backward_kernel(const T* __restrict__ ranked, const T* __restrict__ compared, const T* __restrict__ grad_ranks,
                       T* __restrict__ grad_ranked, int64_t cols, Params<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  row_sweep<T, false>(compared + o, compared + o, cols,
                      RankedBackwardOp<T>{ranked + o, compared + o, grad_ranks + o, grad_ranked + o, p});
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
compared_backward_kernel(const T* __restrict__ ranked, const T* __restrict__ compared, const T* __restrict__ grad_ranks,
                         T* __restrict__ grad_compared, int64_t cols, Params<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  row_sweep<T, true>(ranked + o, grad_ranks + o, cols,
                     ComparedBackwardOp<T>{ranked + o, compared + o, grad_ranks + o, grad_compared + o, p});
}

template <typename T>
void forward(const void* ranked, const void* compared, void* ranks, int64_t rows, int64_t cols, const RankArgs& args,
             int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  forward_kernel<T>
      <<<static_cast<unsigned>(rows), kThreads, 0, st>>>(static_cast<const T*>(ranked), static_cast<const T*>(compared),
                                                         static_cast<T*>(ranks), cols, dense_cuda::params<T>(args));
  check(cudaGetLastError(), "sigmoid_rank forward_kernel launch");
}

template <typename T>
void backward(const void* ranked, const void* compared, const void* grad_ranks, void* grad_ranked, void* grad_compared,
              int64_t rows, int64_t cols, const RankArgs& args, int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  const Params<T> p = dense_cuda::params<T>(args);
  const unsigned blocks = static_cast<unsigned>(rows);
  const T* x = static_cast<const T*>(ranked);
  const T* y = static_cast<const T*>(compared);
  const T* g = static_cast<const T*>(grad_ranks);
  if (!y) {
    row_backward_kernel<T><<<blocks, kThreads, 0, st>>>(x, g, static_cast<T*>(grad_ranked), cols, p);
    check(cudaGetLastError(), "sigmoid_rank row_backward_kernel launch");
    return;
  }
  ranked_backward_kernel<T><<<blocks, kThreads, 0, st>>>(x, y, g, static_cast<T*>(grad_ranked), cols, p);
  check(cudaGetLastError(), "sigmoid_rank ranked_backward_kernel launch");
  compared_backward_kernel<T><<<blocks, kThreads, 0, st>>>(x, y, g, static_cast<T*>(grad_compared), cols, p);
  check(cudaGetLastError(), "sigmoid_rank compared_backward_kernel launch");
}

}  // namespace

void sigmoid_rank_forward_cuda(DType dt, const void* ranked, const void* compared, void* ranks, int64_t rows,
                               int64_t cols, const RankArgs& args, int device, uintptr_t stream) {
  if (dt == DType::f32) forward<float>(ranked, compared, ranks, rows, cols, args, device, stream);
  else forward<double>(ranked, compared, ranks, rows, cols, args, device, stream);
}

void sigmoid_rank_backward_cuda(DType dt, const void* ranked, const void* compared, const void* grad_ranks,
                                void* grad_ranked, void* grad_compared, int64_t rows, int64_t cols,
                                const RankArgs& args, int device, uintptr_t stream) {
  if (dt == DType::f32)
    backward<float>(ranked, compared, grad_ranks, grad_ranked, grad_compared, rows, cols, args, device, stream);
  else backward<double>(ranked, compared, grad_ranks, grad_ranked, grad_compared, rows, cols, args, device, stream);
}

}  // namespace vsl
