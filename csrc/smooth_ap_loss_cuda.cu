// CUDA Smooth-AP kernels (smooth_ap_loss.h), dense: one thread block per row, the row streamed through
// shared-memory tiles (sigmoid_rank_cuda.cuh), every thread owning columns of the row.
//   sums_kernel:     each relevant column j sums sigma(d_jk) over the row's relevant and other columns,
//                    and writes its two gradient coefficients; the block reduces the row's AP sum.
//   gradient_kernel: each column k gathers its gradient from the pairs it belongs to, as partner k of
//                    every relevant j and, when relevant itself, as the j of its own pairs; no atomics,
//                    so results do not depend on the order in which threads run.
#include <cuda_runtime.h>

#include "cuda_common.cuh"
#include "sigmoid_math.h"
#include "sigmoid_rank_cuda.cuh"
#include "smooth_ap_loss.h"

namespace vsl {
namespace {

using cuda::check;
using dense_cuda::kChunk;
using dense_cuda::kThreads;
using dense_cuda::kTile;
using dense_cuda::load_tile;

template <typename T>
__global__ void __launch_bounds__(kThreads)
sums_kernel(const T* __restrict__ sims, const uint8_t* __restrict__ relevant, const double* __restrict__ weights,
            double* __restrict__ row_sums, T* __restrict__ coef_pos, T* __restrict__ coef_neg, int64_t n, T k) {
  __shared__ T tx[kTile];
  __shared__ uint8_t tr[kTile];
  const int64_t o = static_cast<int64_t>(blockIdx.x) * n;
  double mine = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mine += relevant[o + j] != 0 ? 1.0 : 0.0;
  const double positives = cuda::block_sum<kThreads>(mine);
  __syncthreads();  // every thread has read the sum before the block's next block_sum reuses its memory
  const double w = positives > 0 ? weights[blockIdx.x] / positives : 0.0;  // the same for the whole block
  double ap = 0;
  for (int64_t j0 = 0; j0 < n; j0 += blockDim.x) {
    const int64_t j = j0 + threadIdx.x;
    const bool active = w != 0 && j < n && relevant[o + j] != 0;
    const T xj = j < n ? sims[o + j] : T(0);
    double pos = 0, neg = 0;
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const int len = static_cast<int>(min(static_cast<int64_t>(kTile), n - t0));
      __syncthreads();
      load_tile(tx, sims + o, t0, len);
      load_tile(tr, relevant + o, t0, len);
      __syncthreads();
      if (!active) continue;
      for (int i0 = 0; i0 < len; i0 += kChunk) {
        const int i1 = min(len, i0 + kChunk);
        T sp = 0, sn = 0;
        for (int i = i0; i < i1; ++i) {
          const T sig = sigmoid(rank_diff(tx[i], xj) * k);
          const T m = static_cast<T>(tr[i]);
          sp += sig * m;
          sn += sig - sig * m;
        }
        pos += static_cast<double>(sp);
        neg += static_cast<double>(sn);
      }
    }
    if (j >= n) continue;
    T c_pos = 0, c_neg = 0;
    if (active) {
      const double r_pos = 1.0 + (pos - 0.5);  // the j = k term is sigma(0) = 1/2, not a pair
      const double r_all = r_pos + neg;
      ap += r_pos / r_all;
      if (!is_infinite(xj)) {  // no gradient through an infinite entry's pairs
        c_pos = static_cast<T>(-w * neg / (r_all * r_all));
        c_neg = static_cast<T>(w * r_pos / (r_all * r_all));
      }
    }
    if (coef_pos) {
      coef_pos[o + j] = c_pos;
      coef_neg[o + j] = c_neg;
    }
  }
  const double row_sum = cuda::block_sum<kThreads>(ap);
  if (threadIdx.x == 0) row_sums[blockIdx.x] = w * row_sum;  // weight * AP
}

// grad[k] = (1 / tau) (sum_{j in P, j != k} c_jk sigma'(d_jk) - [k in P] sum_{m != k} c_km sigma'(d_km)).
template <typename T>
__global__ void __launch_bounds__(kThreads)
gradient_kernel(const T* __restrict__ sims, const uint8_t* __restrict__ relevant, const double* __restrict__ weights,
                const T* __restrict__ coef_pos, const T* __restrict__ coef_neg, T* __restrict__ grad, int64_t n, T k,
                double k64) {
  __shared__ T tx[kTile];
  __shared__ T tp[kTile];
  __shared__ T tn[kTile];
  __shared__ uint8_t tr[kTile];
  const int64_t o = static_cast<int64_t>(blockIdx.x) * n;
  const bool skipped = weights[blockIdx.x] == 0;  // the same for the whole block
  for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
    const int64_t c = c0 + threadIdx.x;
    const bool valid = c < n;
    const T xc = valid ? sims[o + c] : T(0);
    const bool c_relevant = valid && relevant[o + c] != 0;
    double as_partner = 0, relevant_sum = 0, other_sum = 0;
    for (int64_t t0 = 0; t0 < n && !skipped; t0 += kTile) {
      const int len = static_cast<int>(min(static_cast<int64_t>(kTile), n - t0));
      __syncthreads();
      load_tile(tx, sims + o, t0, len);
      load_tile(tp, coef_pos + o, t0, len);
      load_tile(tn, coef_neg + o, t0, len);
      load_tile(tr, relevant + o, t0, len);
      __syncthreads();
      if (!valid) continue;
      for (int i0 = 0; i0 < len; i0 += kChunk) {
        const int i1 = min(len, i0 + kChunk);
        T a = 0, b = 0, e = 0;
        for (int i = i0; i < i1; ++i) {
          if (t0 + i == c) continue;
          const T g = sigmoid_grad(grad_diff(tx[i], xc) * k);
          if (tr[i]) {
            a += g * (c_relevant ? tp[i] : tn[i]);
            b += g;
          } else {
            e += g;
          }
        }
        as_partner += static_cast<double>(a);
        relevant_sum += static_cast<double>(b);
        other_sum += static_cast<double>(e);
      }
    }
    if (!valid) continue;
    double own = 0;
    if (c_relevant && !skipped)
      own = static_cast<double>(coef_pos[o + c]) * relevant_sum + static_cast<double>(coef_neg[o + c]) * other_sum;
    grad[o + c] = static_cast<T>((as_partner - own) * k64);
  }
}

template <typename T>
void smooth_ap(const void* sims, const uint8_t* relevant, const double* weights, double* row_sums, void* coef_pos,
               void* coef_neg, void* grad, int64_t rows, int64_t cols, double tau, int device, uintptr_t stream) {
  if (rows <= 0) return;  // a grid of 0 blocks is a launch error
  cuda::DeviceGuard guard(device);
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const T k = static_cast<T>(1.0 / tau);
  const auto blocks = static_cast<unsigned>(rows);
  const T* x = static_cast<const T*>(sims);
  T* cp = grad ? static_cast<T*>(coef_pos) : nullptr;
  T* cn = grad ? static_cast<T*>(coef_neg) : nullptr;
  sums_kernel<T><<<blocks, kThreads, 0, st>>>(x, relevant, weights, row_sums, cp, cn, cols, k);
  check(cudaGetLastError(), "smooth_ap_loss sums_kernel launch");
  if (!grad) return;
  gradient_kernel<T>
      <<<blocks, kThreads, 0, st>>>(x, relevant, weights, cp, cn, static_cast<T*>(grad), cols, k, 1.0 / tau);
  check(cudaGetLastError(), "smooth_ap_loss gradient_kernel launch");
}

}  // namespace

void smooth_ap_loss_cuda(DType dt, const void* sims, const uint8_t* relevant, const double* weights, double* row_sums,
                         void* coef_pos, void* coef_neg, void* grad_sims, int64_t rows, int64_t cols, double tau,
                         int device, uintptr_t stream) {
  if (dt == DType::f32)
    smooth_ap<float>(sims, relevant, weights, row_sums, coef_pos, coef_neg, grad_sims, rows, cols, tau, device, stream);
  else
    smooth_ap<double>(sims, relevant, weights, row_sums, coef_pos, coef_neg, grad_sims, rows, cols, tau, device,
                      stream);
}

}  // namespace vsl
