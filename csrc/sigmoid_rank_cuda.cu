// CUDA sigmoid-rank kernels: one thread block per row, the comparison row streamed through shared
// memory in tiles, so any row length works and extra memory stays O(rows * cols). Every pair gets
// its sigmoid (dense algorithm); sums run in float over kChunk terms and in double across chunks,
// so results match the CPU kernels to rounding. Pair differences go through rank_diff / grad_diff
// (sigmoid_math.h): equal infinities tie, no gradient flows through an infinite entry.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_common.cuh"
#include "kernels.h"
#include "sigmoid_math.h"

namespace vsl {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 1024;
constexpr int kChunk = 64;  // float partial sums of this many terms are added into a double

using cuda::check;

template <typename T> struct DevParams {
  T k;         // sgn / tau
  T clamp_at;  // +inf: no clamp
};

template <typename T> DevParams<T> dev_params(const RankArgs& a) {
  DevParams<T> p;
  p.k = static_cast<T>((a.descending ? 1.0 : -1.0) / a.tau);
  p.clamp_at = a.clamp_at > 0 ? static_cast<T>(a.clamp_at) : static_cast<T>(INFINITY);
  return p;
}

template <typename T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t t0, int len) {
  for (int i = threadIdx.x; i < len; i += blockDim.x) dst[i] = src[t0 + i];
}

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

// out[c] = 1 + sum_{a != c} sigma((y_a - x_c) k)
template <typename T> struct RankForwardOp {
  using State = T;
  const T *x, *y;
  T* out;
  DevParams<T> p;
  __device__ T state(int64_t c) const { return x[c]; }
  __device__ T term(T xc, T ya, T) const { return sigmoid_clamped(rank_diff(ya, xc) * p.k, p.clamp_at); }
  __device__ void finish(int64_t c, T xc, double total) const {
    // 1 + (sum - own term): the own term cancels exactly, so a lone column ranks exactly 1.
    const T own = sigmoid_clamped(rank_diff(y[c], xc) * p.k, p.clamp_at);
    out[c] = static_cast<T>(1.0 + (total - static_cast<double>(own)));
  }
};

// Row form: gx[l] = k * sum_j sigma'((x_j - x_l) k) (g_j - g_l)   (the j = l term is 0)
template <typename T> struct BackwardSelfOp {
  using State = Pair<T>;
  const T *x, *g;
  T* gx;
  DevParams<T> p;
  __device__ State state(int64_t l) const { return {x[l], g[l]}; }
  __device__ T term(const State& s, T xj, T gj) const {
    return sigmoid_grad_clamped(grad_diff(xj, s.v) * p.k, p.clamp_at) * (gj - s.w);
  }
  __device__ void finish(int64_t l, const State&, double total) const {
    gx[l] = static_cast<T>(static_cast<double>(p.k) * total);
  }
};

// Cross form, x side: gx[c] = -k g_c sum_{a != c} sigma'((y_a - x_c) k)
template <typename T> struct BackwardCrossXOp {
  using State = T;
  const T *x, *y, *g;
  T* gx;
  DevParams<T> p;
  __device__ T state(int64_t c) const { return x[c]; }
  __device__ T term(T xc, T ya, T) const { return sigmoid_grad_clamped(grad_diff(ya, xc) * p.k, p.clamp_at); }
  __device__ void finish(int64_t c, T xc, double total) const {
    total -= static_cast<double>(sigmoid_grad_clamped(grad_diff(y[c], xc) * p.k, p.clamp_at));
    gx[c] = static_cast<T>(-static_cast<double>(p.k) * static_cast<double>(g[c]) * total);
  }
};

// Cross form, y side: gy[a] = k sum_{c != a} sigma'((y_a - x_c) k) g_c
template <typename T> struct BackwardCrossYOp {
  using State = T;
  const T *x, *y, *g;
  T* gy;
  DevParams<T> p;
  __device__ T state(int64_t a) const { return y[a]; }
  __device__ T term(T ya, T xc, T gc) const { return sigmoid_grad_clamped(grad_diff(xc, ya) * p.k, p.clamp_at) * gc; }
  __device__ void finish(int64_t a, T ya, double total) const {
    total -= static_cast<double>(sigmoid_grad_clamped(grad_diff(x[a], ya) * p.k, p.clamp_at) * g[a]);
    gy[a] = static_cast<T>(static_cast<double>(p.k) * total);
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
rank_forward_kernel(const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ out, int64_t cols,
                    DevParams<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  const T* yr = (y ? y : x) + o;
  row_sweep<T, false>(yr, yr, cols, RankForwardOp<T>{x + o, yr, out + o, p});
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
rank_backward_self_kernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ gx, int64_t cols,
                          DevParams<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  row_sweep<T, true>(x + o, g + o, cols, BackwardSelfOp<T>{x + o, g + o, gx + o, p});
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
rank_backward_cross_x_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ g,
                             T* __restrict__ gx, int64_t cols, DevParams<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  row_sweep<T, false>(y + o, y + o, cols, BackwardCrossXOp<T>{x + o, y + o, g + o, gx + o, p});
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
rank_backward_cross_y_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ g,
                             T* __restrict__ gy, int64_t cols, DevParams<T> p) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  row_sweep<T, true>(x + o, g + o, cols, BackwardCrossYOp<T>{x + o, y + o, g + o, gy + o, p});
}

// Fused VSL row: SR and CR of row i, then ratio, dL/dSR, dL/dCR and the row's ratio sum.
template <typename T>
__global__ void __launch_bounds__(kThreads)
vsl_forward_kernel(const T* __restrict__ sx, const T* __restrict__ sy, const T* __restrict__ cx,
                   const T* __restrict__ cy, T* __restrict__ gs, T* __restrict__ gc, double* __restrict__ partials,
                   int64_t n, DevParams<T> p, T scale) {  // n: columns; one block per row
  __shared__ T ts[kTile];
  __shared__ T tc[kTile];
  const int64_t o = static_cast<int64_t>(blockIdx.x) * n;
  const T* syr = (sy ? sy : sx) + o;
  const T* cyr = (cy ? cy : cx) + o;
  double ratio_sum = 0;
  for (int64_t j0 = 0; j0 < n; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    const bool active = j < n;
    const T xs = active ? sx[o + j] : T(0);
    const T xc = active ? cx[o + j] : T(0);
    double rs = 0, rc = 0;
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const int len = static_cast<int>(min(static_cast<int64_t>(kTile), n - t0));
      __syncthreads();
      load_tile(ts, syr, t0, len);
      load_tile(tc, cyr, t0, len);
      __syncthreads();
      if (active) {
        for (int i0 = 0; i0 < len; i0 += kChunk) {
          const int i1 = min(len, i0 + kChunk);
          T s1 = 0, s2 = 0;
          for (int i = i0; i < i1; ++i) {
            s1 += sigmoid_clamped(rank_diff(ts[i], xs) * p.k, p.clamp_at);
            s2 += sigmoid_clamped(rank_diff(tc[i], xc) * p.k, p.clamp_at);
          }
          rs += static_cast<double>(s1);
          rc += static_cast<double>(s2);
        }
      }
    }
    if (active) {
      const T own_s = sigmoid_clamped(rank_diff(syr[j], xs) * p.k, p.clamp_at);
      const T own_c = sigmoid_clamped(rank_diff(cyr[j], xc) * p.k, p.clamp_at);
      const T a = static_cast<T>(1.0 + (rs - static_cast<double>(own_s)));
      const T b = static_cast<T>(1.0 + (rc - static_cast<double>(own_c)));
      const RankRatio<T> r = rank_ratio(a, b);
      gs[o + j] = scale * r.da;
      if (gc) gc[o + j] = scale * r.db;
      ratio_sum += static_cast<double>(r.ratio);
    }
  }
  const double row_sum = cuda::block_sum<kThreads>(ratio_sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = row_sum;
}

template <typename T>
void rank_forward_t(const void* x, const void* y, void* out, int64_t rows, int64_t cols, const RankArgs& args,
                    int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  rank_forward_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, st>>>(
      static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(out), cols, dev_params<T>(args));
  check(cudaGetLastError(), "rank_forward_kernel launch");
}

template <typename T>
void rank_backward_t(const void* x, const void* y, const void* g, void* gx, void* gy, int64_t rows, int64_t cols,
                     const RankArgs& args, int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  const DevParams<T> p = dev_params<T>(args);
  const unsigned blocks = static_cast<unsigned>(rows);
  if (!y) {
    rank_backward_self_kernel<T><<<blocks, kThreads, 0, st>>>(
        static_cast<const T*>(x), static_cast<const T*>(g), static_cast<T*>(gx), cols, p);
    check(cudaGetLastError(), "rank_backward_self_kernel launch");
    return;
  }
  rank_backward_cross_x_kernel<T><<<blocks, kThreads, 0, st>>>(
      static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(g), static_cast<T*>(gx), cols, p);
  check(cudaGetLastError(), "rank_backward_cross_x_kernel launch");
  rank_backward_cross_y_kernel<T><<<blocks, kThreads, 0, st>>>(
      static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(g), static_cast<T*>(gy), cols, p);
  check(cudaGetLastError(), "rank_backward_cross_y_kernel launch");
}

template <typename T>
void vsl_forward_t(const void* sx, const void* sy, const void* cx, const void* cy, void* gs, void* gc,
                   double* partials, int64_t rows, int64_t cols, double grad_scale, const RankArgs& args, int device,
                   uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  vsl_forward_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, st>>>(
      static_cast<const T*>(sx), static_cast<const T*>(sy), static_cast<const T*>(cx), static_cast<const T*>(cy),
      static_cast<T*>(gs), static_cast<T*>(gc), partials, cols, dev_params<T>(args), static_cast<T>(-grad_scale));
  check(cudaGetLastError(), "vsl_forward_kernel launch");
}

}  // namespace

void rank_forward_cuda(DType dt, const void* x, const void* y, void* out, int64_t rows, int64_t cols,
                       const RankArgs& args, int device, uintptr_t stream) {
  if (dt == DType::f32) rank_forward_t<float>(x, y, out, rows, cols, args, device, stream);
  else rank_forward_t<double>(x, y, out, rows, cols, args, device, stream);
}

void rank_backward_cuda(DType dt, const void* x, const void* y, const void* g, void* gx, void* gy, int64_t rows,
                        int64_t cols, const RankArgs& args, int device, uintptr_t stream) {
  if (dt == DType::f32) rank_backward_t<float>(x, y, g, gx, gy, rows, cols, args, device, stream);
  else rank_backward_t<double>(x, y, g, gx, gy, rows, cols, args, device, stream);
}

void vsl_forward_cuda(DType dt, const void* sx, const void* sy, const void* cx, const void* cy, void* gs, void* gc,
                      double* partials, int64_t rows, int64_t cols, double grad_scale, const RankArgs& args,
                      int device, uintptr_t stream) {
  if (dt == DType::f32) vsl_forward_t<float>(sx, sy, cx, cy, gs, gc, partials, rows, cols, grad_scale, args, device, stream);
  else vsl_forward_t<double>(sx, sy, cx, cy, gs, gc, partials, rows, cols, grad_scale, args, device, stream);
}

CudaStatus cuda_status() {
  CudaStatus st;
  cudaRuntimeGetVersion(&st.runtime_version);
  cudaDriverGetVersion(&st.driver_version);  // 0 when no driver is installed
  const cudaError_t err = cudaGetDeviceCount(&st.devices);
  if (err != cudaSuccess) {
    st.devices = 0;
    st.error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
  }
  return st;
}

}  // namespace vsl
