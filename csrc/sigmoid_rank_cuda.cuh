// The dense CUDA algorithm's shared parts (sigmoid_rank_cuda.cu, vsl_loss_cuda.cu): one thread
// block of kThreads per row, the compared row streamed through shared memory in tiles of kTile
// columns, so any row length works and extra memory stays O(rows * cols). Sums run in float over
// kChunk terms and in double across chunks, so results match the CPU kernels to rounding.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sigmoid_math.h"
#include "sigmoid_rank.h"

namespace vsl {
namespace dense_cuda {

constexpr int kThreads = 256;
constexpr int kTile = 1024;
constexpr int kChunk = 64;  // float partial sums of this many terms are added into a double

template <typename T> struct Params {
  T k;         // sgn / tau
  T clamp_at;  // +inf: no clamp
};

template <typename T> Params<T> params(const RankArgs& a) {
  Params<T> p;
  p.k = static_cast<T>((a.descending ? 1.0 : -1.0) / a.tau);
  p.clamp_at = a.public_code_clamp ? static_cast<T>(kPublicCodeClamp) : static_cast<T>(INFINITY);
  return p;
}

template <typename T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t t0, int len) {
  for (int i = threadIdx.x; i < len; i += blockDim.x) dst[i] = src[t0 + i];
}

}  // namespace dense_cuda
}  // namespace vsl
