// Error checks, the current-device guard and a block reduction, shared by the CUDA kernel families.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace vsl {
namespace cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("vsl_ext CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the scope of a launch and restores the caller's device after it.
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev && prev >= 0) cudaSetDevice(prev);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

// Sum of every thread's x over a block of kThreads (a power of two) threads; every thread of the
// block must call it, and every thread gets the sum.
template <int kThreads> __device__ __forceinline__ double block_sum(double x) {
  __shared__ double red[kThreads];
  const int t = threadIdx.x;
  red[t] = x;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    __syncthreads();
  }
  return red[0];
}

}  // namespace cuda
}  // namespace vsl
