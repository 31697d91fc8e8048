// CUDA kernels of the sparse caption index (vsl_ext.CaptionIndex): per-batch TF-IDF Gram matrices and
// CIDEr-D group means. The index's CSR arrays live on the device (moved there once by Python); a batch
// is a list of row ids. One thread block per row: the row is staged in shared memory (when it fits)
// and every thread binary-searches the entries of its column rows in it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "caption_index.h"
#include "caption_index_cuda.h"
#include "cuda_common.cuh"

namespace vsl {
namespace caption_index {
namespace {

constexpr int kThreads = 128;

using cuda::check;
using cuda::DeviceGuard;

struct Bounds {
  int64_t b[kMaxOrder + 1];  // feature id where each n-gram order starts (b[nn] = number of features)
  int nn;
};

__device__ __forceinline__ int find_sorted(const int32_t* a, int n, int32_t key) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (a[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return (lo < n && a[lo] == key) ? lo : -1;
}

// Stages row [e0, e0 + n) in shared memory when n <= cap; returns the pointers to search in.
__device__ __forceinline__ void stage_row(const int32_t* indices, const float* data, int64_t e0, int n, int cap,
                                          const int32_t** idx, const float** val) {
  extern __shared__ unsigned char smem[];
  *idx = indices + e0;
  *val = data + e0;
  if (n <= cap) {
    int32_t* si = reinterpret_cast<int32_t*>(smem);
    float* sv = reinterpret_cast<float*>(si + cap);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      si[i] = indices[e0 + i];
      sv[i] = data[e0 + i];
    }
    *idx = si;
    *val = sv;
  }
  __syncthreads();
}

// out (B x B) = Gram matrix of rows[0..B); block a computes columns b >= a and mirrors them.
__global__ void __launch_bounds__(kThreads)
gram_kernel(const int64_t* __restrict__ indptr, const int32_t* __restrict__ indices, const float* __restrict__ data,
            const int64_t* __restrict__ rows, int64_t B, int smem_cap, float* __restrict__ out) {
  const int64_t a = blockIdx.x;
  const int64_t ra = rows[a];
  const int64_t a0 = indptr[ra];
  const int na = static_cast<int>(indptr[ra + 1] - a0);
  const int32_t* ia;
  const float* va;
  stage_row(indices, data, a0, na, smem_cap, &ia, &va);
  for (int64_t b = a + threadIdx.x; b < B; b += blockDim.x) {
    const int64_t rb = rows[b];
    double s = 0;
    for (int64_t e = indptr[rb]; e < indptr[rb + 1]; ++e) {
      const int k = find_sorted(ia, na, indices[e]);
      if (k >= 0) s += static_cast<double>(va[k]) * static_cast<double>(data[e]);
    }
    out[a * B + b] = static_cast<float>(s);
    out[b * B + a] = static_cast<float>(s);
  }
}

// S[p][q] = CIDEr-D of caption caps[p] against the single reference caps[q].
__global__ void __launch_bounds__(kThreads)
cider_pair_kernel(const int64_t* __restrict__ indptr, const int32_t* __restrict__ indices,
                  const float* __restrict__ data, const float* __restrict__ inv_norm, const int32_t* __restrict__ lens,
                  Bounds bd, const int64_t* __restrict__ caps, int64_t Pb, double sigma, int smem_cap,
                  float* __restrict__ S) {
  const int64_t p = blockIdx.x;
  const int64_t cp = caps[p];
  const int64_t p0 = indptr[cp];
  const int np = static_cast<int>(indptr[cp + 1] - p0);
  const int32_t* ip;
  const float* vp;
  stage_row(indices, data, p0, np, smem_cap, &ip, &vp);
  const int nn = bd.nn;
  const float* invp = inv_norm + cp * nn;
  const int32_t lp = lens[cp];
  const double scale = 10.0 / nn, two_s2 = 2.0 * sigma * sigma;
  for (int64_t q = threadIdx.x; q < Pb; q += blockDim.x) {
    const int64_t cq = caps[q];
    const float* invq = inv_norm + cq * nn;
    float s = 0.f, sim = 0.f;
    int o = 0;
    for (int64_t e = indptr[cq]; e < indptr[cq + 1]; ++e) {
      const int32_t f = indices[e];
      while (f >= bd.b[o + 1]) {
        sim += s * invp[o] * invq[o];
        s = 0.f;
        ++o;
      }
      const int k = find_sorted(ip, np, f);
      if (k >= 0) {
        const float r = data[e];
        s += fminf(vp[k], r) * r;
      }
    }
    if (o < nn) sim += s * invp[o] * invq[o];
    const double d = static_cast<double>(lp - lens[cq]);
    const float pen = static_cast<float>(exp(-d * d / two_s2));
    S[p * Pb + q] = static_cast<float>(static_cast<double>(sim * pen) * scale);
  }
}

// out[a][b] = mean of S over the captions of group a (rows) and group b (columns).
__global__ void pool_kernel(const float* __restrict__ S, int64_t Pb, const int64_t* __restrict__ gptr, int64_t G,
                            float* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= G * G) return;
  const int64_t a = idx / G, b = idx % G;
  double s = 0;
  for (int64_t p = gptr[a]; p < gptr[a + 1]; ++p)
    for (int64_t q = gptr[b]; q < gptr[b + 1]; ++q) s += S[p * Pb + q];
  out[idx] = static_cast<float>(s / static_cast<double>((gptr[a + 1] - gptr[a]) * (gptr[b + 1] - gptr[b])));
}

size_t smem_bytes(int smem_cap) { return smem_cap > 0 ? static_cast<size_t>(smem_cap) * 8 : 0; }

}  // namespace

void gram_cuda(const int64_t* indptr, const int32_t* indices, const float* data, const int64_t* rows, int64_t B,
               int smem_cap, float* out, int device, uintptr_t stream) {
  if (B <= 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  gram_kernel<<<static_cast<unsigned>(B), kThreads, smem_bytes(smem_cap), s>>>(indptr, indices, data, rows, B,
                                                                                std::max(smem_cap, 0), out);
  check(cudaGetLastError(), "caption gram_kernel launch");
}

void cider_matrix_cuda(const int64_t* indptr, const int32_t* indices, const float* data, const float* inv_norm,
                       const int32_t* lens, const std::vector<int64_t>& bounds, const int64_t* caps, int64_t Pb,
                       const int64_t* gptr, int64_t G, bool singleton, double sigma, int smem_cap, float* scratch,
                       float* out, int device, uintptr_t stream) {
  if (bounds.size() < 2 || bounds.size() > kMaxOrder + 1)
    throw std::invalid_argument("caption cider: 1 to " + std::to_string(kMaxOrder) + " n-gram orders expected");
  if (Pb <= 0 || G <= 0) return;
  Bounds bd{};
  bd.nn = static_cast<int>(bounds.size()) - 1;
  for (size_t i = 0; i < bounds.size(); ++i) bd.b[i] = bounds[i];
  for (size_t i = bounds.size(); i <= kMaxOrder; ++i) bd.b[i] = bounds.back();
  DeviceGuard guard(device);
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  float* S = singleton ? out : scratch;
  cider_pair_kernel<<<static_cast<unsigned>(Pb), kThreads, smem_bytes(smem_cap), s>>>(
      indptr, indices, data, inv_norm, lens, bd, caps, Pb, sigma, std::max(smem_cap, 0), S);
  check(cudaGetLastError(), "caption cider_pair_kernel launch");
  if (!singleton) {
    const int64_t n = G * G;
    pool_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, s>>>(S, Pb, gptr, G, out);
    check(cudaGetLastError(), "caption pool_kernel launch");
  }
}

}  // namespace caption_index
}  // namespace vsl
