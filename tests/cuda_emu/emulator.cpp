// The fiber scheduler behind tests/cuda_emu/cuda_runtime.h, and its schedule control for
// tests/cuda_emu/__init__.py.
#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace vsl_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxShared = 48 * 1024;  // a block's static + dynamic; more needs cudaFuncSetAttribute
constexpr size_t kGuardBytes = 64;        // after every shared array; a write there fails the launch

enum class State { ready, at_barrier, done };

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<unsigned char[]> stack;  // not zeroed: most of it is never touched
  State state = State::ready;
  void* barrier_site = nullptr;
  void* fake_stack = nullptr;  // AddressSanitizer's, while the fiber is switched out
};

struct Block {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  // For AddressSanitizer: the scheduler's stack bounds and fake stack while a fiber runs.
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
  unsigned current = 0;
  void (*body)(void*) = nullptr;
  void* body_ctx = nullptr;
  // The block's shared arrays: [0] the dynamic one, then one per `__shared__` declaration reached.
  struct SharedArray {
    const void* site;
    std::string name;
    size_t bytes;
    std::unique_ptr<std::max_align_t[]> storage;  // bytes + kGuardBytes
    unsigned char* data() { return reinterpret_cast<unsigned char*>(storage.get()); }
    void poison() { std::memset(data(), 0xff, bytes + kGuardBytes); }
    bool guard_intact() {
      for (size_t i = 0; i < kGuardBytes; ++i)
        if (data()[bytes + i] != 0xff) return false;
      return true;
    }
  };
  std::vector<SharedArray> shared;
  size_t shared_bytes = 0;
};

thread_local Block* g_block = nullptr;
cudaError_t g_last_error = cudaSuccess;
bool g_launch_failed = false;
std::string g_fault;
int g_schedule = 0;  // 0 forward, 1 reverse, 2 shuffled per phase
uint64_t g_seed = 0;

void fault(cudaError_t err, const std::string& what) {
  g_launch_failed = true;
  if (g_last_error == cudaSuccess) {
    g_last_error = err;
    g_fault = what;
  }
}

// Stack switches are announced to AddressSanitizer (when built with it), so that it follows the
// fibers: `save` keeps the leaving context's fake stack (null: the context ends), `restore` is the
// arriving one's.
void before_switch(void** save, const void* stack, size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(save, stack, size);
#else
  (void)save, (void)stack, (void)size;
#endif
}

void after_switch(void* restore, const void** from_stack = nullptr, size_t* from_size = nullptr) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(restore, from_stack, from_size);
#else
  (void)restore, (void)from_stack, (void)from_size;
#endif
}

void to_scheduler(Block* b, bool done) {
  Fiber& f = b->fibers[b->current];
  before_switch(done ? nullptr : &f.fake_stack, b->scheduler_stack, b->scheduler_stack_size);
  swapcontext(&f.ctx, &b->scheduler);
  after_switch(f.fake_stack, &b->scheduler_stack, &b->scheduler_stack_size);
}

void fiber_main() {
  Block* b = g_block;
  after_switch(nullptr, &b->scheduler_stack, &b->scheduler_stack_size);
  b->body(b->body_ctx);
  b->fibers[b->current].state = State::done;
  to_scheduler(b, true);
}

// Runs one block to completion; false if the launch failed (a fault says why).
bool run_block(Block& b, unsigned nthreads, std::mt19937_64& rng) {
  for (unsigned t = 0; t < nthreads; ++t) {
    Fiber& f = b.fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
    f.state = State::ready;
  }
  for (Block::SharedArray& a : b.shared) a.poison();
  std::vector<unsigned> order(nthreads);
  for (unsigned phase = 0;; ++phase) {
    for (unsigned t = 0; t < nthreads; ++t) order[t] = g_schedule == 1 ? nthreads - 1 - t : t;
    if (g_schedule == 2) std::shuffle(order.begin(), order.end(), rng);
    for (unsigned t : order) {
      if (b.fibers[t].state != State::ready) continue;
      b.current = t;
      threadIdx = dim3(t);
      before_switch(&b.scheduler_fake_stack, b.fibers[t].stack.get(), kStackBytes);
      swapcontext(&b.scheduler, &b.fibers[t].ctx);
      after_switch(b.scheduler_fake_stack);
    }
    unsigned done = 0, waiting = 0;
    void* site = nullptr;
    for (unsigned t = 0; t < nthreads; ++t) {
      const Fiber& f = b.fibers[t];
      if (f.state == State::done) ++done;
      if (f.state != State::at_barrier) continue;
      if (waiting++ == 0) site = f.barrier_site;
      else if (f.barrier_site != site) {
        fault(cudaErrorLaunchFailure, "block " + std::to_string(blockIdx.x) +
                                          ": threads wait at different "
                                          "__syncthreads() calls in barrier phase " +
                                          std::to_string(phase));
        return false;
      }
    }
    if (done == nthreads) {
      for (Block::SharedArray& a : b.shared)
        if (!a.guard_intact())
          fault(cudaErrorLaunchFailure, "block " + std::to_string(blockIdx.x) + " wrote past the end of " + a.name +
                                            " (" + std::to_string(a.bytes) + " bytes)");
      return !g_launch_failed;
    }
    if (done > 0) {
      fault(cudaErrorLaunchFailure, "block " + std::to_string(blockIdx.x) + ": " + std::to_string(done) +
                                        " threads returned while " + std::to_string(waiting) +
                                        " wait at __syncthreads() in barrier phase " + std::to_string(phase));
      return false;
    }
    for (unsigned t = 0; t < nthreads; ++t) b.fibers[t].state = State::ready;
  }
}

}  // namespace

namespace {

Block::SharedArray& add_shared(Block& b, const void* site, std::string name, size_t bytes) {
  const size_t words = (bytes + kGuardBytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
  b.shared.push_back({site, std::move(name), bytes, std::unique_ptr<std::max_align_t[]>(new std::max_align_t[words])});
  b.shared.back().poison();
  b.shared_bytes += bytes;
  if (b.shared_bytes > kMaxShared)
    fault(cudaErrorInvalidValue, "a block uses " + std::to_string(b.shared_bytes) +
                                     " bytes of shared memory "
                                     "(48 KiB at most without cudaFuncSetAttribute)");
  return b.shared.back();
}

}  // namespace

unsigned char* dynamic_shared_memory() { return g_block->shared[0].data(); }

void* block_shared_bytes(const void* site, const char* name, size_t bytes) {
  for (Block::SharedArray& a : g_block->shared)
    if (a.site == site) return a.data();
  return add_shared(*g_block, site, std::string("__shared__ ") + name, bytes).data();
}

void run_grid(dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*), void* ctx) {
  if (grid.x == 0 || grid.y != 1 || grid.z != 1 || grid.x > 0x7fffffffu || block.x == 0 || block.y != 1 ||
      block.z != 1 || block.x > kMaxThreadsPerBlock) {
    fault(cudaErrorInvalidConfiguration, "launch of " + std::to_string(grid.x) + " blocks of " +
                                             std::to_string(block.x) +
                                             " threads (the emulator takes 1-D grids of 1-D blocks)");
    return;
  }
  g_launch_failed = false;
  Block b;
  add_shared(b, nullptr, "the dynamic shared memory", dynamic_shared_bytes);
  if (g_launch_failed) return;
  b.fibers.resize(block.x);
  for (Fiber& f : b.fibers) f.stack.reset(new unsigned char[kStackBytes]);
  b.body = body;
  b.body_ctx = ctx;
  Block* outer = g_block;
  g_block = &b;
  gridDim = grid;
  blockDim = block;
  std::mt19937_64 rng(g_seed);
  for (unsigned x = 0; x < grid.x; ++x) {
    blockIdx = dim3(x);
    if (!run_block(b, block.x, rng)) break;
  }
  g_block = outer;
}

}  // namespace vsl_emu

void __attribute__((noinline)) __syncthreads() {
  vsl_emu::Block* b = vsl_emu::g_block;
  vsl_emu::Fiber& f = b->fibers[b->current];
  f.state = vsl_emu::State::at_barrier;
  f.barrier_site = __builtin_return_address(0);
  vsl_emu::to_scheduler(b, false);
}

cudaError_t cudaGetLastError() {
  const cudaError_t err = vsl_emu::g_last_error;
  vsl_emu::g_last_error = cudaSuccess;
  return err;
}

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t err) {
  // The fault text stays readable until the next launch fails.
  return err == cudaSuccess ? "no error" : vsl_emu::g_fault.c_str();
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}

extern "C" {

// schedule: 0 runs a block's threads in index order between barriers, 1 in reverse order,
// 2 shuffled afresh in every barrier phase from `seed`.
void vsl_emu_set_schedule(int schedule, uint64_t seed) {
  vsl_emu::g_schedule = schedule;
  vsl_emu::g_seed = seed;
}

}  // extern "C"
