// Sigmoid and its derivative, written to be both accurate in the tails and vectorisable.
//
// sigma(d) = 1 / (1 + exp(-d)) is evaluated through e = exp(-|d|) <= 1, so nothing overflows:
//   sigma(d)  = d >= 0 ? 1 / (1 + e) : e / (1 + e)
//   sigma'(d) = e / (1 + e)^2              (symmetric in d)
// The published VSL code clamps the exponent to [-50, 50]; `clamp_at` reproduces that
// (sigma is evaluated at the clamped argument, sigma' is 0 outside), +inf disables it.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define VSL_HD __host__ __device__ __forceinline__
#else
#define VSL_HD inline
#endif

namespace vsl {

// |d| beyond which sigma(d) is exactly 0 or 1 after rounding a rank sum (>= 1) in this type:
// sigma(-30) = 9.4e-14 (float eps 6e-8), sigma(-50) = 1.9e-22 (double eps 1.1e-16).
template <typename T> struct Saturation;
template <> struct Saturation<float> { static constexpr float value = 30.0f; };
template <> struct Saturation<double> { static constexpr double value = 50.0; };

// exp(x), branch-free so that GCC vectorises the loops calling it (no libmvec, which needs
// -ffast-math and with it the loss of NaN propagation). Max error about 1 ulp on [-87, 88];
// arguments are clamped to that range (exp(-87) ~ 1.6e-38 only ever ends up rounded away in a
// sum). NaN in gives NaN out.
VSL_HD float exp_bounded(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  float r = x - n * 0.693145751953125f;              // Cody-Waite split of ln 2
  r = r - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = static_cast<int32_t>(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
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

// The published code's sigmoid: 1 / (1 + exp(clamp(-d, -L, L))).
template <typename T> VSL_HD T sigmoid_clamped(T d, T clamp_at) {
  const T c = d > clamp_at ? clamp_at : (d < -clamp_at ? -clamp_at : d);
  return sigmoid(c);
}

template <typename T> VSL_HD T sigmoid_grad_clamped(T d, T clamp_at) {
  return abs_(d) > clamp_at ? T(0) : sigmoid_grad(d);
}

// One entry of the VSL: ratio = min(a, b) / max(a, b) for the ranks a = SR_ij, b = CR_ij, and its
// derivatives da = d ratio / da, db = d ratio / db. At a == b the subgradient is 0 (torch splits
// the gradient of min/max between the tied inputs, and the two halves cancel). NaN propagates.
template <typename T> struct RankRatio {
  T ratio, da, db;
};

template <typename T> VSL_HD RankRatio<T> rank_ratio(T a, T b) {
  if (a != a || b != b) return {a + b, a + b, a + b};
  if (a < b) return {a / b, T(1) / b, -a / (b * b)};
  if (a > b) return {b / a, -b / (a * a), T(1) / a};
  return {T(1), T(0), T(0)};
}

}  // namespace vsl
