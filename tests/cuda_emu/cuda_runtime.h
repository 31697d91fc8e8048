// The CUDA runtime as the kernels in csrc/*.cu use it, emulated on the CPU for the tests
// (tests/cuda_emu/__init__.py compiles those files with g++ against this header).
//
// A launch runs its blocks one after another on the calling thread; the threads of a block are
// fibers that run until they reach __syncthreads() or return, so barriers and shared memory behave
// as on a GPU. The kernels' sources get two rewrites first (__init__.py):
//   kernel<<<grid, block, shared, stream>>>(args)  ->  kernel >> vsl_emu::LaunchConfig(grid, ...)(args)
//   __shared__ T name[N];                          ->  auto& name = vsl_emu::block_shared<T[N]>(site, "name");
//   extern __shared__ T name[];                    ->  T* const name = (T*)vsl_emu::dynamic_shared_memory();
// Shared memory is filled with 0xff bytes when each block starts (as undefined as on a GPU, and a
// read before the write shows up as NaN or -1); 64 guard bytes follow every shared array. Launches
// are synchronous; a fault in a kernel (threads of a block at different barriers, a thread that
// returns while others wait at one, a write past a shared array, more than 48 KiB of shared memory,
// a launch configuration a GPU refuses) is reported by the next cudaGetLastError(), as a launch
// failure is on a GPU.
//
// The block's threads run between two barriers in an order set by vsl_emu_set_schedule (forward,
// reverse or shuffled per phase): a kernel whose output depends on that order has a race. Built
// with -fsanitize=address, the emulator announces its stack switches to AddressSanitizer.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

void __syncthreads();

template <typename T> inline T min(T a, T b) { return b < a ? b : a; }
template <typename T> inline T max(T a, T b) { return a < b ? b : a; }

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
typedef struct CUstream_st* cudaStream_t;

cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaDriverGetVersion(int* version);

namespace vsl_emu {

// Runs `body` as every thread of every block of the grid (1-D grids and blocks).
void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*), void* ctx);

// The current block's dynamic shared memory (`extern __shared__` arrays).
unsigned char* dynamic_shared_memory();

// The current block's copy of the static shared variable `name` declared at `site` (one per
// declaration and template instantiation), `bytes` long.
void* block_shared_bytes(const void* site, const char* name, size_t bytes);

template <typename T> T& block_shared(const void* site, const char* name) {
  return *static_cast<T*>(block_shared_bytes(site, name, sizeof(T)));
}

// kernel<<<grid, block, shared, stream>>>(args...) is rewritten to
// kernel >> vsl_emu::LaunchConfig(grid, block, shared, stream)(args...).
template <typename... Args> struct PendingLaunch {
  dim3 grid, block;
  size_t shared;
  std::tuple<Args...> args;
};

struct LaunchConfig {
  dim3 grid, block;
  size_t shared;
  LaunchConfig(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), shared(s) {}
  template <typename... Args> PendingLaunch<std::decay_t<Args>...> operator()(Args&&... args) const {
    return {grid, block, shared, std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)};
  }
};

template <typename... Params, typename... Args>
void operator>>(void (*kernel)(Params...), PendingLaunch<Args...>&& launch) {
  struct Ctx {
    void (*kernel)(Params...);
    std::tuple<Args...>* args;
  } ctx{kernel, &launch.args};
  run_grid(
      launch.grid, launch.block, launch.shared,
      [](void* p) {
        Ctx* c = static_cast<Ctx*>(p);
        std::apply([c](const auto&... a) { c->kernel(a...); }, *c->args);
      },
      &ctx);
}

}  // namespace vsl_emu
