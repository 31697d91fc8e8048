// CUDA VSL kernels (vsl_loss.h): the fused dense kernel, one thread block per row ranking the row
// of S and of C through shared-memory tiles (sigmoid_rank_cuda.cuh) and reducing the row's ratio sum;
// and the ratio sums from ranks already computed, for batches whose S or C took the sorted algorithm.
#include <cuda_runtime.h>

#include "cuda_common.cuh"
#include "sigmoid_math.h"
#include "sigmoid_rank_cuda.cuh"
#include "vsl_loss.h"

namespace vsl {
namespace {

using cuda::check;
using dense_cuda::kChunk;
using dense_cuda::kThreads;
using dense_cuda::kTile;
using dense_cuda::load_tile;
using dense_cuda::Params;

// One row i: SR_i and CR_i (against the compared rows, or the rows themselves), then the ratio,
// d ratio / dSR, d ratio / dCR of every entry and the row's ratio sum. n: columns.
template <typename T>
__global__ void __launch_bounds__(kThreads)
ratio_sum_kernel(const T* __restrict__ sims, const T* __restrict__ sims_compared, const T* __restrict__ semantic,
                 const T* __restrict__ semantic_compared, T* __restrict__ grad_sr, T* __restrict__ grad_cr,
                 double* __restrict__ row_sums, int64_t n, Params<T> p) {
  __shared__ T ts[kTile];
  __shared__ T tc[kTile];
  const int64_t o = static_cast<int64_t>(blockIdx.x) * n;
  const T* s_compared = (sims_compared ? sims_compared : sims) + o;
  const T* c_compared = (semantic_compared ? semantic_compared : semantic) + o;
  double ratio_sum = 0;
  for (int64_t j0 = 0; j0 < n; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    const bool active = j < n;
    const T xs = active ? sims[o + j] : T(0);
    const T xc = active ? semantic[o + j] : T(0);
    double rs = 0, rc = 0;
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const int len = static_cast<int>(min(static_cast<int64_t>(kTile), n - t0));
      __syncthreads();
      load_tile(ts, s_compared, t0, len);
      load_tile(tc, c_compared, t0, len);
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
      const T own_s = sigmoid_clamped(rank_diff(s_compared[j], xs) * p.k, p.clamp_at);
      const T own_c = sigmoid_clamped(rank_diff(c_compared[j], xc) * p.k, p.clamp_at);
      const T a = static_cast<T>(1.0 + (rs - static_cast<double>(own_s)));
      const T b = static_cast<T>(1.0 + (rc - static_cast<double>(own_c)));
      const RankRatio<T> r = rank_ratio(a, b);
      grad_sr[o + j] = r.da;
      if (grad_cr) grad_cr[o + j] = r.db;
      ratio_sum += static_cast<double>(r.ratio);
    }
  }
  const double row_sum = cuda::block_sum<kThreads>(ratio_sum);
  if (threadIdx.x == 0) row_sums[blockIdx.x] = row_sum;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
ratio_sum_from_ranks_kernel(const T* __restrict__ sr, const T* __restrict__ cr, T* __restrict__ grad_sr,
                            T* __restrict__ grad_cr, double* __restrict__ row_sums, int64_t cols) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * cols;
  double acc = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const RankRatio<T> r = rank_ratio(sr[o + j], cr[o + j]);
    grad_sr[o + j] = r.da;
    if (grad_cr) grad_cr[o + j] = r.db;
    acc += static_cast<double>(r.ratio);
  }
  const double row_sum = cuda::block_sum<kThreads>(acc);
  if (threadIdx.x == 0) row_sums[blockIdx.x] = row_sum;
}

template <typename T>
void ratio_sum(const void* sims, const void* sims_compared, const void* semantic, const void* semantic_compared,
               void* grad_sr, void* grad_cr, double* row_sums, int64_t rows, int64_t cols, const RankArgs& args,
               int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  ratio_sum_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(sims), static_cast<const T*>(sims_compared), static_cast<const T*>(semantic),
      static_cast<const T*>(semantic_compared), static_cast<T*>(grad_sr), static_cast<T*>(grad_cr), row_sums, cols,
      dense_cuda::params<T>(args));
  check(cudaGetLastError(), "vsl_loss ratio_sum_kernel launch");
}

template <typename T>
void ratio_sum_from_ranks(const void* sr, const void* cr, void* grad_sr, void* grad_cr, double* row_sums, int64_t rows,
                          int64_t cols, int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  ratio_sum_from_ranks_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(sr), static_cast<const T*>(cr), static_cast<T*>(grad_sr), static_cast<T*>(grad_cr),
      row_sums, cols);
  check(cudaGetLastError(), "vsl_loss ratio_sum_from_ranks_kernel launch");
}

}  // namespace

void vsl_loss_ratio_sum_cuda(DType dt, const void* sims, const void* sims_compared, const void* semantic,
                             const void* semantic_compared, void* grad_sr, void* grad_cr, double* row_sums,
                             int64_t rows, int64_t cols, const RankArgs& args, int device, uintptr_t stream) {
  if (dt == DType::f32)
    ratio_sum<float>(sims, sims_compared, semantic, semantic_compared, grad_sr, grad_cr, row_sums, rows, cols, args,
                     device, stream);
  else
    ratio_sum<double>(sims, sims_compared, semantic, semantic_compared, grad_sr, grad_cr, row_sums, rows, cols, args,
                      device, stream);
}

void vsl_loss_ratio_sum_from_ranks_cuda(DType dt, const void* sr, const void* cr, void* grad_sr, void* grad_cr,
                                        double* row_sums, int64_t rows, int64_t cols, int device, uintptr_t stream) {
  if (dt == DType::f32) ratio_sum_from_ranks<float>(sr, cr, grad_sr, grad_cr, row_sums, rows, cols, device, stream);
  else ratio_sum_from_ranks<double>(sr, cr, grad_sr, grad_cr, row_sums, rows, cols, device, stream);
}

}  // namespace vsl
