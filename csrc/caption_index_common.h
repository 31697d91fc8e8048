// Helpers shared by the caption index's CPU sources: parallel loops on the package's pool
// (cpu_parallel.h), the sort of short key runs and the check of offset arrays.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "caption_index.h"
#include "cpu_parallel.h"

namespace vsl {
namespace caption_index {

// Runs `worker` on up to `threads` threads of the package's pool (cpu_parallel.h: no OpenMP, so a
// forked child that calls the index does not wait for its parent's threads). Each worker calls
// take(i) to claim the next item (false: none left), so the items go one at a time to whichever
// thread asks first and a worker that starts late finds none and leaves. An exception in a worker
// (std::bad_alloc) is rethrown on the calling thread once every worker is done.
class Items {
 public:
  explicit Items(int64_t n) : n_(n) {}
  bool take(int64_t& i) {
    if (failed_.load(std::memory_order_relaxed)) return false;
    i = next_.fetch_add(1);
    return i < n_;
  }
  template <typename W> void run(int threads, W& worker) {
    const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_)));
    using Worker = typename std::remove_reference<W>::type;
    struct Context {
      Items* items;
      Worker* worker;
    } context{this, &worker};
    parallel_rows(
        nt, nt,
        [](void* c, int64_t) {
          Context& ctx = *static_cast<Context*>(c);
          try {
            (*ctx.worker)(*ctx.items);
          } catch (...) {
            std::lock_guard<std::mutex> lock(ctx.items->error_mutex_);
            if (!ctx.items->error_) ctx.items->error_ = std::current_exception();
            ctx.items->failed_.store(true);
          }
        },
        &context);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  int64_t n_;
  std::atomic<int64_t> next_{0};
  std::atomic<bool> failed_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

// body(i) for every i in [0, n), on at most `threads` threads.
template <typename F> void parallel_for(int64_t n, int threads, F&& body) {
  if (threads <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  Items items(n);
  auto worker = [&](Items& q) {
    for (int64_t i; q.take(i);) body(i);
  };
  items.run(threads, worker);
}

// Runs body(begin, end) over [0, n) in contiguous chunks, at most `threads` at a time.
template <typename F> void parallel_chunks(int64_t n, int threads, int64_t min_chunk, F&& body) {
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads * 4, n / std::max<int64_t>(1, min_chunk)));
  if (threads <= 1) chunks = 1;
  parallel_for(chunks, threads, [&](int64_t c) { body(n * c / chunks, n * (c + 1) / chunks); });
}

// Threads for a kernel of about `work` inner-loop steps: one per ~4M steps (a few ms), because a batch
// query is short and extra threads mostly wait (or spin against torch's own pool) on a busy machine.
inline int threads_for(int64_t work, int threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, work / 4000000)));
}

// Ascending sort, by insertion for the short runs that dominate (n-grams of one prefix, one caption).
template <typename T> void small_sort(T* a, int64_t n) {
  if (n > 24) {
    std::sort(a, a + n);
    return;
  }
  for (int64_t i = 1; i < n; ++i) {
    const T x = a[i];
    int64_t j = i;
    while (j > 0 && a[j - 1] > x) {
      a[j] = a[j - 1];
      --j;
    }
    a[j] = x;
  }
}

// Throws unless off is a non-decreasing offset array from 0 to total.
inline void check_offsets(const Span<int64_t>& off, int64_t total, const char* what) {
  if (off.n < 1 || off[0] != 0 || off[off.n - 1] != total)
    throw std::invalid_argument(std::string("caption index: bad offsets in ") + what);
  for (int64_t i = 1; i < off.n; ++i)
    if (off[i] < off[i - 1]) throw std::invalid_argument(std::string("caption index: decreasing offsets in ") + what);
}

}  // namespace caption_index
}  // namespace vsl
