// Sigmoid and its derivative, written to be both accurate in the tails and vectorisable.
//
// sigma(d) = 1 / (1 + exp(-d)) is evaluated through e = exp(-|d|) <= 1, so nothing overflows:
//   sigma(d)  = d >= 0 ? 1 / (1 + e) : e / (1 + e)
//   sigma'(d) = e / (1 + e)^2              (symmetric in d)
// The public-code variant clamps the argument to [-kPublicCodeClamp, kPublicCodeClamp] as the
// published VSL code does: sigmoid_clamped / sigmoid_grad_clamped with `clamp_at` (sigma is evaluated
// at the clamped argument, sigma' is 0 outside); clamp_at = +inf is no clamp.
//
// Infinite entries (a -inf mask, a float16 overflow to +inf): a pair's difference is taken with
// rank_diff / grad_diff below, never as a plain v - x, because inf - inf is NaN. Equal infinities tie
// (sigma = 1/2, as equal finite values do); an infinity against any other value is saturated (sigma
// is 0 or 1, sigma' is 0); no gradient flows through a pair that holds an infinity. NaN propagates.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "vsl_constants.h"

#if defined(__CUDACC__)
#define VSL_HD __host__ __device__ __forceinline__
#else
#define VSL_HD inline
#endif

namespace vsl {

// exp(n ln 2 + r) = 2^n e^r for a reduced argument |r| <= ln(2)/2 and -126 <= n <= 127: a degree-7
// polynomial times 2^n built from its exponent bits. The second half of exp_bounded and of the CPU
// sorted algorithm's separated exponentials (sigmoid_rank_cpu_impl.h).
inline float exp_reduced(float r, int32_t n) {
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = static_cast<int32_t>(static_cast<uint32_t>(n + 127) << 23);
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// exp(x), branch-free so that GCC vectorises the loops calling it (no libmvec, which needs
// -ffast-math and with it the loss of NaN propagation). Max error about 1 ulp on [-87, 88];
// below -87 it returns 0 (exp(-87) ~ 1.6e-38 only ever ends up rounded away in a sum, and
// exp(-inf) must be exactly 0: sigma'(+-inf) = 0), above 88 exp(88). NaN in gives NaN out.
VSL_HD float exp_bounded(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const bool underflow = x < -87.0f;
  x = underflow ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  float r = x - n * 0.693145751953125f;              // Cody-Waite split of ln 2
  r = r - n * 1.428606765330187e-06f;
  return underflow ? 0.0f : exp_reduced(r, static_cast<int32_t>(n));
#endif
}

VSL_HD double exp_bounded(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

template <typename T> VSL_HD T abs_(T x) { return x < T(0) ? -x : x; }

template <typename T> VSL_HD bool is_infinite(T x) { return abs_(x) == static_cast<T>(INFINITY); }

// A length in units of the input (a window's half width, a block's span: a multiple of tau) in T,
// held to T's largest finite value for a tau near it (a double beyond float's range has no float).
template <typename T> VSL_HD T length_in(double x) {
  const double largest = sizeof(T) == sizeof(float) ? static_cast<double>(FLT_MAX) : DBL_MAX;
  return static_cast<T>(x < largest ? x : largest);
}

// v - x for sigma's argument: 0 for equal entries, equal infinities included (v - x is NaN there),
// so they tie at sigma(0) = 1/2. Bitwise v - x for everything else; NaN propagates.
template <typename T> VSL_HD T rank_diff(T v, T x) { return v == x ? T(0) : v - x; }

// v - x for the argument of sigma': as rank_diff, except that a pair of equal infinities is saturated
// (+inf, sigma' = 0): no gradient flows through an infinite entry. x is the loop's fixed centre,
// so the compiler hoists its test out of a vectorised loop.
template <typename T> VSL_HD T grad_diff(T v, T x) {
  return v == x ? (is_infinite(x) ? static_cast<T>(INFINITY) : T(0)) : v - x;
}

template <typename T> VSL_HD T sigmoid(T d) {
  const T e = exp_bounded(-abs_(d));
  const T inv = T(1) / (T(1) + e);
  return d >= T(0) ? inv : e * inv;
}

template <typename T> VSL_HD T sigmoid_grad(T d) {
  const T e = exp_bounded(-abs_(d));
  const T inv = T(1) / (T(1) + e);
  return e * inv * inv;
}

// The public-code variant's sigmoid: 1 / (1 + exp(clamp(-d, -L, L))).
template <typename T> VSL_HD T sigmoid_clamped(T d, T clamp_at) {
  const T c = d > clamp_at ? clamp_at : (d < -clamp_at ? -clamp_at : d);
  return sigmoid(c);
}

template <typename T> VSL_HD T sigmoid_grad_clamped(T d, T clamp_at) {
  return abs_(d) > clamp_at ? T(0) : sigmoid_grad(d);
}

}  // namespace vsl
