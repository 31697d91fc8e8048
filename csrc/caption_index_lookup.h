// The caption index's lookups: the token hash table (token bytes -> token id) and the n-gram trie
// ((prefix id, last token) -> n-gram id).
#pragma once
#include <climits>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace vsl {
namespace caption_index {

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(const uint8_t* s, int64_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(n);
  for (; n >= 8; s += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, s, 8);
    h = mix64(h ^ w) * 0x9E3779B97F4A7C15ULL;
  }
  uint64_t w = 0;
  for (int64_t k = 0; k < n; ++k) w |= static_cast<uint64_t>(s[k]) << (8 * k);
  return mix64(h ^ w);
}

// Slots of an open-addressing table for `count` keys: a power of two, at most half full.
inline size_t table_size(int64_t count) {
  size_t s = 16;
  while (s < static_cast<size_t>(count) * 2 + 2) s <<= 1;
  return s;
}

// Token strings -> ids (growable while building).
struct TokenTable {
  std::vector<int32_t> slots;
  std::vector<uint64_t> hashes;
  std::vector<int64_t> off{0};
  std::vector<uint8_t> blob;

  explicit TokenTable(int64_t expect) : slots(table_size(expect), -1) {}

  int32_t count() const { return static_cast<int32_t>(hashes.size()); }

  int32_t intern(const uint8_t* s, int64_t n) {
    const uint64_t h = hash_bytes(s, n);
    size_t mask = slots.size() - 1, i = h & mask;
    while (true) {
      const int32_t id = slots[i];
      if (id < 0) break;
      if (hashes[id] == h && off[id + 1] - off[id] == n && std::memcmp(blob.data() + off[id], s, n) == 0) return id;
      i = (i + 1) & mask;
    }
    const int32_t id = count();
    if (id == INT32_MAX) throw std::length_error("caption index: more than 2^31 - 1 distinct tokens");
    hashes.push_back(h);
    blob.insert(blob.end(), s, s + n);
    off.push_back(static_cast<int64_t>(blob.size()));
    slots[i] = id;
    if (static_cast<size_t>(count()) * 2 + 2 > slots.size()) rehash(slots.size() * 2);
    return id;
  }

  void rehash(size_t size) {
    slots.assign(size, -1);
    const size_t mask = size - 1;
    for (int32_t id = 0; id < count(); ++id) {
      size_t i = hashes[id] & mask;
      while (slots[i] >= 0) i = (i + 1) & mask;
      slots[i] = id;
    }
  }
};

// Read-only token lookup over the persistent arrays: the id of token s[0, n), or -1.
inline int32_t tok_find(const int32_t* slots, size_t mask, const int64_t* off, const uint8_t* blob, const uint8_t* s,
                        int64_t n) {
  size_t i = hash_bytes(s, n) & mask;
  while (true) {
    const int32_t id = slots[i];
    if (id < 0) return -1;
    if (off[id + 1] - off[id] == n && std::memcmp(blob + off[id], s, n) == 0) return id;
    i = (i + 1) & mask;
  }
}

// N-grams of order n >= 2 are numbered in (prefix id, last token) order, so the children of every
// (n-1)-gram are a contiguous, sorted id range: child[id] .. child[id + 1] (a trie with sorted edges).
// child[id] = first id of the next order whose prefix is >= id (order_ptr[nmax] for the last order).

// Id of the n-gram (prefix id, last token), or -1.
inline int32_t trie_find(const int64_t* child, const int32_t* last, int64_t prefix, int32_t tok) {
  int64_t lo = child[prefix], hi = child[prefix + 1];
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (last[mid] < tok) lo = mid + 1;
    else hi = mid;
  }
  return (lo < child[prefix + 1] && last[lo] == tok) ? static_cast<int32_t>(lo) : -1;
}

}  // namespace caption_index
}  // namespace vsl
