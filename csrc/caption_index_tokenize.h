// Whitespace tokenisation of the caption index: Python's str.split() (split on runs of str.isspace()
// characters) over UTF-8 bytes.
#pragma once
#include <cstdint>

namespace vsl {
namespace caption_index {

inline bool is_py_space(uint32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  switch (c) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

// Byte classes: 0 ASCII non-space, 1 ASCII space, 2 starts (or continues) a multi-byte sequence.
struct ByteClass {
  uint8_t c[256];
  ByteClass() {
    for (int b = 0; b < 256; ++b) c[b] = b >= 0x80 ? 2 : (is_py_space(static_cast<uint32_t>(b)) ? 1 : 0);
  }
};
inline const ByteClass kByteClass;

// Byte length of the sequence at s[i] if it encodes a Python whitespace character, else 0.
// Bytes that do not start a well-formed sequence count as non-space (str.encode never makes them).
inline int multibyte_space(const uint8_t* s, int64_t n, int64_t i) {
  const uint8_t b = s[i];
  int need;
  uint32_t c;
  if ((b & 0xE0) == 0xC0) { need = 1; c = b & 0x1F; }
  else if ((b & 0xF0) == 0xE0) { need = 2; c = b & 0x0F; }
  else return 0;  // 4-byte sequences encode no whitespace
  if (i + need >= n) return 0;
  for (int k = 1; k <= need; ++k) {
    const uint8_t cb = s[i + k];
    if ((cb & 0xC0) != 0x80) return 0;
    c = (c << 6) | (cb & 0x3F);
  }
  return is_py_space(c) ? need + 1 : 0;
}

// Calls emit(start, length) for every whitespace-separated token of s[0, n).
template <typename F> void split_ws(const uint8_t* s, int64_t n, F&& emit) {
  const uint8_t* cls = kByteClass.c;
  int64_t i = 0;
  while (i < n) {
    while (i < n) {  // skip whitespace
      const uint8_t c = cls[s[i]];
      if (c == 1) { ++i; continue; }
      if (c == 0) break;
      const int len = multibyte_space(s, n, i);
      if (!len) break;
      i += len;
    }
    if (i >= n) break;
    const int64_t start = i;
    while (i < n) {  // token
      const uint8_t c = cls[s[i]];
      if (c == 0) { ++i; continue; }
      if (c == 1 || multibyte_space(s, n, i)) break;
      ++i;
    }
    emit(start, i - start);
  }
}

}  // namespace caption_index
}  // namespace vsl
