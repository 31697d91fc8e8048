// Rows of the CPU rank and VSL kernels in parallel, on the calling thread and a small pool of helper
// threads that the calling thread never waits for unless they took a row.
//
// Why not an OpenMP parallel region: its closing barrier waits for every thread of the team, and on
// a machine whose cores are busy with other processes a helper that was asleep may start only a
// scheduler time slice later (milliseconds: a 20 us call took 8 ms with two threads). Here the
// calling thread takes rows itself from the start; a helper that wakes up joins in while rows are
// left, and one that wakes up after the last row has been taken leaves without touching the job. So a
// call is never slower than on one thread by more than the wake-up (a futex call), and the kernels
// still decide by the amount of work whether to wake helpers at all (kernel_threads).
//
// Safe to call from several Python threads at once (a second concurrent caller runs its rows alone)
// and after fork() (the child starts a fresh pool; the parent's helpers do not exist there).
#pragma once
#include <cstdint>

namespace vsl {

using RowBody = void (*)(void* context, int64_t row);

// body(context, r) for every r in [0, rows), on at most `threads` threads (the caller included).
// Returns when every row is done. body must not throw.
void parallel_rows(int64_t rows, int threads, RowBody body, void* context);

// Threads for a kernel call over rows x cols with about `work` pair evaluations in all: 1 below
// kMinPairsPerThread per thread (waking a helper costs more than such a call), else up to `threads`.
constexpr int64_t kMinPairsPerThread = int64_t(1) << 19;
inline int kernel_threads(int threads, int64_t rows, int64_t work) {
  int64_t by_work = work / kMinPairsPerThread;
  int64_t t = threads < by_work ? threads : by_work;
  t = t < rows ? t : rows;
  return t < 1 ? 1 : static_cast<int>(t);
}

}  // namespace vsl
