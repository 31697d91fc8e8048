// The sorted-window algorithm on rows that arrive sorted, one output element at a time. The same
// element functions run in the CPU loop (sorted_window_cpu.cpp) and in one CUDA thread per element
// (sorted_window_cuda.cu); the Python layer (vsl_ext/sorted_window.py) sorts the rows and maps
// every element back to its column.
//
// For a centre u and sorted values v_0 <= ... <= v_{n-1}, a term with |v_a - u| > hw, where
// hw = Saturation<T> * tau, is exactly what rounding makes of it in a sum: sigma is 1 or 0 and
// sigma' is 0 (see sigmoid_math.h). So a row sum is a count of saturated ones, found by position,
// plus the terms of the window [lo, hi) = { a : |v_a - u| <= hw }, found by binary search.
//
// Rows are NaN-free (NaN rows take the dense path). Infinities sort to the ends of a row, beyond
// every finite centre's window, and are counted by position (an infinity against a finite value is
// saturated); an infinite centre's window is the run of values equal to it, ties (sigma = 1/2,
// sigma' = 0; see rank_diff / grad_diff in sigmoid_math.h).
#pragma once
#include <cstdint>

#include "sigmoid_math.h"

namespace vsl {

// What one element sums, with d_a = (v_a - u) k and k = +-1 / tau (descending: +):
enum class WindowKind : int {
  rank = 0,           // 1 + sum_{a != skip} sigma(d_a)
  grad_self = 1,      // k sum_a sigma'(d_a) (w_a - wu)           (the a = centre term is 0)
  grad_centre = 2,    // -k wu sum_{a != skip} sigma'(d_a)
  grad_weighted = 3,  // k sum_{a != skip} sigma'(d_a) w_a
};

template <typename T> struct WindowParams {
  T k;
  T half_window;  // hw, in units of the input
  bool descending;
};

template <typename T> VSL_HD WindowParams<T> window_params(double tau, bool descending) {
  WindowParams<T> p;
  p.k = static_cast<T>((descending ? 1.0 : -1.0) / tau);
  p.half_window = length_in<T>(Saturation<T>::value * tau);
  p.descending = descending;
  return p;
}

// First index with v[index] >= x (lower) or v[index] > x (upper), in sorted v[0, n).
template <typename T> VSL_HD int64_t first_at_least(const T* v, int64_t n, T x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (v[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

template <typename T> VSL_HD int64_t first_above(const T* v, int64_t n, T x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (v[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The position to leave out for element e (position i of its row): skip[e] where given; without
// skip the rank kind leaves out the centre's own position (u is the sorted row v itself) and the
// gradient kinds leave out nothing.
template <WindowKind Kind> VSL_HD int64_t skip_at(const int64_t* skip, int64_t e, int64_t i) {
  return skip ? skip[e] : (Kind == WindowKind::rank ? i : -1);
}

// Float partial sums of this many terms are added in double (as in the dense kernels).
constexpr int64_t kWindowChunk = 64;

// One element: v, w the sorted row and its weights (w may be null unless the kind reads it), u and
// wu the centre and its weight, skip the position in v of the centre's own column (-1: none).
template <WindowKind Kind, typename T>
VSL_HD T window_element(const T* v, const T* w, int64_t n, T u, T wu, int64_t skip, const WindowParams<T>& p) {
  // [u - hw, u + hw]; an infinite centre's window is the run of values equal to it.
  const T reach = is_infinite(u) ? T(0) : p.half_window;
  const int64_t lo = first_at_least(v, n, u - reach);
  const int64_t hi = first_above(v, n, u + reach);
  double total = 0;
  for (int64_t c0 = lo; c0 < hi; c0 += kWindowChunk) {
    const int64_t c1 = c0 + kWindowChunk < hi ? c0 + kWindowChunk : hi;
    T s = 0;
    for (int64_t a = c0; a < c1; ++a) {
      if (a == skip) continue;
      if constexpr (Kind == WindowKind::rank) {
        s += sigmoid(rank_diff(v[a], u) * p.k);
      } else {
        const T g = sigmoid_grad(grad_diff(v[a], u) * p.k);
        if constexpr (Kind == WindowKind::grad_self) {
          s += g * (w[a] - wu);
        } else if constexpr (Kind == WindowKind::grad_centre) {
          s += g;
        } else {
          s += g * w[a];
        }
      }
    }
    total += static_cast<double>(s);
  }
  if constexpr (Kind == WindowKind::rank) {
    // sigma = 1 above the window when descending, below it when ascending; the centre's own
    // column does not count.
    int64_t ones = p.descending ? n - hi : lo;
    if (skip >= 0 && (p.descending ? skip >= hi : skip < lo)) --ones;
    return static_cast<T>(1.0 + static_cast<double>(ones) + total);
  } else if constexpr (Kind == WindowKind::grad_centre) {
    return static_cast<T>(-static_cast<double>(p.k) * static_cast<double>(wu) * total);
  } else {
    return static_cast<T>(static_cast<double>(p.k) * total);
  }
}

// The VSL entries of one row from its ranks: partial = sum_j min(SR, CR) / max(SR, CR), and with
// scale = -grad_scale, gs = scale * d ratio / dSR, gc = scale * d ratio / dCR (gc may be null).
template <typename T>
VSL_HD double ratio_element(T sr, T cr, T scale, T* gs, T* gc) {
  const RankRatio<T> r = rank_ratio(sr, cr);
  *gs = scale * r.da;
  if (gc) *gc = scale * r.db;
  return static_cast<double>(r.ratio);
}

}  // namespace vsl
