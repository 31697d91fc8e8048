// Kernels with the faults the emulator is there to find, so that the tests can show it finds them
// (tests/test_cuda_emulated.py). Compiled only into the emulator.
#include <cuda_runtime.h>

#include <cstdint>

namespace {

constexpr int kThreads = 64;

// Missing barrier: out[t] = in[t + 1] through shared memory, read before the neighbour has written.
__global__ void racy_shift_kernel(const float* in, float* out) {
  __shared__ float s[kThreads];
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * kThreads + t];
  out[blockIdx.x * kThreads + t] = s[(t + 1) % kThreads];
}

// The same with the barrier: no race.
__global__ void shift_kernel(const float* in, float* out) {
  __shared__ float s[kThreads];
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * kThreads + t];
  __syncthreads();
  out[blockIdx.x * kThreads + t] = s[(t + 1) % kThreads];
}

// Thread 0 leaves before the barrier the others wait at.
__global__ void early_return_kernel(float* out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Odd and even threads wait at different barriers (the stores keep the two calls apart).
__global__ void split_barrier_kernel(float* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
    out[threadIdx.x] = 1.0f;
  } else {
    out[threadIdx.x] = 2.0f;
    __syncthreads();
  }
}

// The last thread writes one element past its shared array.
__global__ void shared_overflow_kernel(const float* in, float* out) {
  __shared__ float s[kThreads];
  const int t = threadIdx.x;
  s[t + 1] = in[t];
  __syncthreads();
  out[t] = s[t];
}

// 56 KiB of static shared memory: more than a block gets without opting in.
__global__ void shared_too_large_kernel(float* out) {
  __shared__ double s[7168];
  s[threadIdx.x] = 1.0;
  __syncthreads();
  out[threadIdx.x] = static_cast<float>(s[(threadIdx.x + 1) % kThreads]);
}

// Reads one element past the end of its input (a block of 64 elements).
__global__ void read_past_end_kernel(const float* in, float* out) { out[threadIdx.x] = in[threadIdx.x + 1]; }

}  // namespace

extern "C" void vsl_emu_fail(const char* what);  // entry_points.cpp

extern "C" int vsl_emu_faulty(int which, uintptr_t in, uintptr_t out, int blocks) {
  const float* x = reinterpret_cast<const float*>(in);
  float* y = reinterpret_cast<float*>(out);
  switch (which) {
    case 0: racy_shift_kernel<<<blocks, kThreads>>>(x, y); break;
    case 1: shift_kernel<<<blocks, kThreads>>>(x, y); break;
    case 2: early_return_kernel<<<blocks, kThreads>>>(y); break;
    case 3: split_barrier_kernel<<<blocks, kThreads>>>(y); break;
    case 4: shared_overflow_kernel<<<blocks, kThreads>>>(x, y); break;
    case 5: shared_too_large_kernel<<<blocks, kThreads>>>(y); break;
    case 6: read_past_end_kernel<<<blocks, kThreads>>>(x, y); break;
    default: return -2;
  }
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return 0;
  vsl_emu_fail(cudaGetErrorString(err));
  return -1;
}
