// Sorting one row of the CPU kernels (compiled per instruction set with them): an LSD radix sort of
// the values' bit patterns carrying the column index, O(n) and free of data-dependent branches. The
// comparison sort it replaced (std::sort of an index permutation by value) spent ~45 ns per element
// at n = 512, mostly in mispredicted branches, which was a third of the whole sorted forward.
//
// Rows are NaN-free here (rows with NaN take the dense algorithm). The key of a value orders as the
// value does; -0.0 sorts just before +0.0, which only permutes equal values among themselves.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

namespace vsl {
namespace VSL_CPU_ISA {
namespace {

template <typename T> struct SortItem {
  using Key = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  Key key;
  uint32_t index;
};

template <typename T> typename SortItem<T>::Key order_key(T x) {
  using Key = typename SortItem<T>::Key;
  constexpr Key sign = Key(1) << (8 * sizeof(Key) - 1);
  Key bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits & sign) ? ~bits : (bits | sign);
}

constexpr int kRadixBits = 11;
constexpr int64_t kRadixFromCols = 256;  // below, std::sort of the keys is as fast

// items[0..n) sorted by key (a stable LSD radix sort; `spare` is a buffer of n items). Returns the
// buffer holding the result (items or spare).
template <typename T> SortItem<T>* radix_sort(SortItem<T>* items, SortItem<T>* spare, int64_t n) {
  constexpr int key_bits = 8 * static_cast<int>(sizeof(typename SortItem<T>::Key));
  constexpr int passes = (key_bits + kRadixBits - 1) / kRadixBits;
  constexpr uint32_t mask = (1u << kRadixBits) - 1;
  thread_local std::vector<uint32_t> counts;
  counts.assign(static_cast<size_t>(passes) << kRadixBits, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int pass = 0; pass < passes; ++pass)
      ++counts[(static_cast<size_t>(pass) << kRadixBits) + ((items[i].key >> (pass * kRadixBits)) & mask)];
  for (int pass = 0; pass < passes; ++pass) {
    uint32_t* c = counts.data() + (static_cast<size_t>(pass) << kRadixBits);
    const int shift = pass * kRadixBits;
    if (c[(items[0].key >> shift) & mask] == static_cast<uint32_t>(n)) continue;  // one digit for all: in order
    uint32_t sum = 0;
    for (uint32_t d = 0; d <= mask; ++d) {
      const uint32_t count = c[d];
      c[d] = sum;
      sum += count;
    }
    for (int64_t i = 0; i < n; ++i) spare[c[(items[i].key >> shift) & mask]++] = items[i];
    std::swap(items, spare);
  }
  return items;
}

// Sorts row x (carrying g along if given): sorted values xs, weights ws and the permutation perm
// (sorted position -> column). items and spare: n items each.
template <typename T>
void sort_row(const T* x, const T* g, int64_t n, T* xs, T* ws, int64_t* perm, SortItem<T>* items, SortItem<T>* spare) {
  if (n > int64_t(UINT32_MAX)) {  // beyond the items' 32-bit index: sort a permutation
    std::iota(perm, perm + n, int64_t(0));
    std::sort(perm, perm + n, [x](int64_t a, int64_t b) { return x[a] < x[b]; });
  } else {
    for (int64_t i = 0; i < n; ++i) items[i] = {order_key(x[i]), static_cast<uint32_t>(i)};
    const SortItem<T>* sorted = items;
    if (n < kRadixFromCols)
      std::sort(items, items + n, [](const SortItem<T>& a, const SortItem<T>& b) { return a.key < b.key; });
    else sorted = radix_sort(items, spare, n);
    for (int64_t i = 0; i < n; ++i) perm[i] = sorted[i].index;
  }
  for (int64_t i = 0; i < n; ++i) xs[i] = x[perm[i]];
  if (g)
    for (int64_t i = 0; i < n; ++i) ws[i] = g[perm[i]];
}

}  // namespace
}  // namespace VSL_CPU_ISA
}  // namespace vsl
