// The helper pool of cpu_parallel.h.
//
// A job is published under the mutex with a new generation number and opened (open_generation_).
// The caller takes rows from an atomic counter like any helper. When the rows run out it closes the
// job (open_generation_ = 0) and waits only for the helpers inside it (inside_ > 0; a short spin,
// then sleeping on left_, which the last helper out notifies under the mutex): a helper
// counts itself in, then checks that its generation is still open, and only then takes rows; with
// sequentially consistent atomics, a helper that counted itself in after the close sees the job
// closed and leaves without reading it, and one that counted itself in before is waited for.
#include "cpu_parallel.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace vsl {
namespace {

struct Job {
  RowBody body;
  void* context;
  int64_t rows;
  std::atomic<int64_t> next{0};

  void take_rows() {
    for (int64_t r = next.fetch_add(1); r < rows; r = next.fetch_add(1)) body(context, r);
  }
};

class Pool {
 public:
  // Runs job on the caller and up to `helpers` helper threads; false if another thread is running
  // a job on this pool (the caller then runs it alone).
  bool run(Job& job, int helpers) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    while (started_ < helpers) {
      std::thread(&Pool::helper_loop, this).detach();  // the pool is never destroyed (see pool())
      ++started_;
    }
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation = ++generation_;
      job_ = &job;
      seats_.store(helpers);
      open_generation_.store(generation);
    }
    wake_.notify_all();
    job.take_rows();
    open_generation_.store(0);
    // Wait for the helpers still inside the job (each is finishing a row it took): a short spin,
    // then sleep until the last one leaves, so that a helper preempted mid-row on a busy machine
    // does not have the caller spinning on the core it needs.
    for (int spins = 0; spins < 256 && inside_.load() != 0; ++spins) {
    }
    if (inside_.load() != 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      left_.wait(lock, [&] { return inside_.load() == 0; });
    }
    return true;
  }

 private:
  void helper_loop() {
    uint64_t seen = 0;
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
      }
      if (open_generation_.load() != seen) continue;  // woke too late: the job is done
      inside_.fetch_add(1);
      if (open_generation_.load() == seen && seats_.fetch_sub(1) > 0) job->take_rows();
      if (inside_.fetch_sub(1) == 1) {
        // the last helper out: wake a caller that sleeps in run() (taking the mutex first, so the
        // caller either sees inside_ == 0 before it waits or is already waiting)
        std::lock_guard<std::mutex> lock(mutex_);
        left_.notify_all();
      }
    }
  }

  std::mutex busy_;    // one job at a time
  std::mutex mutex_;   // guards generation_ and job_
  std::condition_variable wake_;
  std::condition_variable left_;  // the last helper left a job (run() waits on it)
  uint64_t generation_ = 0;
  Job* job_ = nullptr;
  std::atomic<uint64_t> open_generation_{0};  // the generation whose rows may be taken, 0: none
  std::atomic<int> inside_{0};                // helpers that may be reading the open job
  std::atomic<int> seats_{0};                 // helpers the open job may still take
  int started_ = 0;                           // helper threads started (under busy_)
};

// One pool per process. A forked child gets a fresh one: the parent's helpers do not exist there,
// and its pool's mutexes may have been held at the fork. Pools are never destroyed (their detached
// helpers wait on them until the process exits). Two threads' first calls may each make a pool;
// each runs its job on its own, which is as correct.
Pool& pool() {
  static std::atomic<Pool*> current{nullptr};
  static std::atomic<pid_t> owner{0};
  const pid_t pid = getpid();
  Pool* p = current.load();
  if (p == nullptr || owner.load() != pid) {
    p = new Pool();
    current.store(p);
    owner.store(pid);
  }
  return *p;
}

}  // namespace

void parallel_rows(int64_t rows, int threads, RowBody body, void* context) {
  Job job;
  job.body = body;
  job.context = context;
  job.rows = rows;
  if (threads <= 1 || rows <= 1 || !pool().run(job, threads - 1)) job.take_rows();
}

}  // namespace vsl
