// Fixed-width SIMD vectors for the CPU kernels' pair loops, written with the GCC/Clang vector
// extensions so that one source compiles to AVX2 in cpu_kernels_avx2.cpp and to pairs of SSE2
// registers in cpu_kernels_baseline.cpp. 32 bytes: 8 floats or 4 doubles.
//
// The loops use them where the compiler's auto-vectorisation did not do well: a horizontal sum per
// centre (GCC's `omp simd reduction` spilled the lanes and added them one by one) and the
// remainder of a window (a masked last vector instead of a scalar loop).
#pragma once
#include <cstdint>
#include <cstring>

namespace vsl {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef int64_t i64x4 __attribute__((vector_size(32)));

template <typename T> struct Simd;
template <> struct Simd<float> {
  using vec = f32x8;
  using mask = i32x8;
  static constexpr int width = 8;
  static mask lanes_below(int64_t count) {  // lane l set where l < count
    const mask iota = {0, 1, 2, 3, 4, 5, 6, 7};
    return iota < static_cast<int32_t>(count);
  }
  static float sum(vec v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
  static int64_t count(mask m) { return -(((m[0] + m[4]) + (m[1] + m[5])) + ((m[2] + m[6]) + (m[3] + m[7]))); }
};
template <> struct Simd<double> {
  using vec = f64x4;
  using mask = i64x4;
  static constexpr int width = 4;
  static mask lanes_below(int64_t count) {
    const mask iota = {0, 1, 2, 3};
    return iota < count;
  }
  static double sum(vec v) { return (v[0] + v[2]) + (v[1] + v[3]); }
  static int64_t count(mask m) { return -((m[0] + m[2]) + (m[1] + m[3])); }
};

#if defined(__GNUC__)
#define VSL_INLINE inline __attribute__((always_inline))
#else
#define VSL_INLINE inline
#endif

template <typename V> V load(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V> void store(void* p, V v) { std::memcpy(p, &v, sizeof(V)); }

// The first index in [from, end) whose value exceeds t (end if none), in the sorted v: counts the
// values <= t a vector at a time (they form a prefix of each vector; lanes at or past `end` are
// masked). Without a data-dependent branch per element, which mispredicted once per centre. v must
// hold a vector's worth of readable elements past `end`; what they hold does not matter.
template <typename T> VSL_INLINE int64_t advance_to_above(const T* v, int64_t from, int64_t end, T t) {
  using S = Simd<T>;
  int64_t i = from;
  while (i < end) {
    const int64_t c = S::count((load<typename S::vec>(v + i) <= t) & S::lanes_below(end - i));
    i += c;
    if (c < S::width) break;
  }
  return i;
}

// m ? v : 0, lane by lane (m from a vector comparison or lanes_below: all bits set or clear).
template <typename V, typename M> V keep(M m, V v) { return (V)(m & (M)v); }

}  // namespace vsl
