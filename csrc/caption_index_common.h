// Helpers shared by the caption index's CPU sources: OpenMP loops, the sort of short key runs and
// the check of offset arrays.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#if VSL_WITH_OPENMP
#include <omp.h>
#endif

#include "caption_index.h"

namespace vsl {
namespace caption_index {

template <typename F> void parallel_for(int64_t n, int threads, F&& body) {
#if VSL_WITH_OPENMP
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  if (nt > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#else
  (void)threads;
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
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
  if (n > 24) { std::sort(a, a + n); return; }
  for (int64_t i = 1; i < n; ++i) {
    const T x = a[i];
    int64_t j = i;
    while (j > 0 && a[j - 1] > x) { a[j] = a[j - 1]; --j; }
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
