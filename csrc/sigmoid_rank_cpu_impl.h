// CPU sigmoid-rank kernels, compiled once per instruction set (cpu_kernels_baseline.cpp,
// cpu_kernels_avx2.cpp; sigmoid_rank_cpu.cpp picks one at run time): rows in parallel
// (cpu_parallel.h), each row by one of the two algorithms of vsl_constants.h, both exact to rounding.
//
// dense : every pair (a, c) of the row gets a sigmoid; O(cols^2) exps per row.
// sorted (the CPU implementation: separated exponentials): values and centres are sorted
//         (cpu_row_sort.h); pairs with |d| > Saturation<T> contribute exactly 0 or 1 (sigma) and 0
//         (sigma') and are counted by position; inside the window the exponential separates,
//         exp(-(v_a - u_c) k) = E_a * X_c with E_a = exp(-(v_a - m) k) and X_c = exp((u_c - m) k)
//         around a reference m shared by a block of nearby centres, so a pair costs a multiply, an
//         add and a divide instead of an exp. The row rank (a row against itself: vsl_ext.sigmoid_rank,
//         the row VSL) evaluates each pair inside the window once for both of its entries
//         (row_pair_sums: sigma(-d) = 1 - sigma(d), sigma' is even); the rank against compared rows
//         (the public-code variant) evaluates every centre's window (windowed_sums). Infinite values
//         sort to the ends, outside every finite centre's window; an infinite centre's window is the
//         run of values equal to it (ties: sigma = 1/2, sigma' = 0), the rest is counted by position.
// Rows holding NaN take the dense path, which propagates NaN like the reference. Infinities follow
// the rule of sigmoid_math.h on both paths. The fused VSL kernel (vsl_loss_cpu_impl.h) ranks its
// rows with the row functions below.
//
// VSL_CPU_ISA names the namespace of this copy (baseline, avx2).
#pragma once
#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_parallel.h"
#include "cpu_row_sort.h"
#include "cpu_simd.h"
#include "sigmoid_math.h"
#include "sigmoid_rank.h"

namespace vsl {
namespace VSL_CPU_ISA {
namespace {

// Centres sharing one reference m lie within this many units of d = (u - m) k of it, which keeps
// every E_a and X_c of the block inside exp(+-(Saturation + kBlockSpan)), e^+-70 for float: normal
// floats (e^-87 .. e^88), so t = E_a X_c keeps float's relative precision. A longer span shares
// each block's exponentials among more centres.
constexpr double kBlockSpan = 40.0;

template <typename T> struct RowParams {
  T k;         // sgn / tau: d = (compared - ranked) * k
  double k64;  // the same in double, for separated_exp
  T clamp_at;  // +inf when not clamping
  T half_window;
  T block_span;  // kBlockSpan in units of the input
  bool descending;
};

template <typename T> RowParams<T> row_params(const RankArgs& a) {
  RowParams<T> p;
  p.descending = a.descending;
  p.k64 = (a.descending ? 1.0 : -1.0) / a.tau;
  p.k = static_cast<T>(p.k64);
  p.clamp_at = a.public_code_clamp ? static_cast<T>(kPublicCodeClamp) : static_cast<T>(INFINITY);
  p.half_window = length_in<T>(Saturation<T>::value * a.tau);
  p.block_span = length_in<T>(kBlockSpan * a.tau);
  return p;
}

template <typename T> bool no_nan(const T* v, int64_t n) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= v[i] == v[i];
  return ok;
}

enum PairKind { kSigmoid, kGrad, kGradWeighted, kGradDiff };

// exp((v - m) k) for the sorted algorithm's separated exponentials E_a = exp(-(v_a - m) k) and
// X_c = exp((u_c - m) k), whose product stands for exp(-(v_a - u_c) k). For float input the exponent is
// formed and reduced in double and only the polynomial runs in float, so each factor is within about
// one float ulp however far v lies from the reference m: a float exponent (v - m) * k would carry an
// absolute error of about |(v - m) k| 2^-23, i.e. a relative error that grows with the block's span
// (46 * 2^-23 = 5.5e-6 at 30 + 16 tau). Arguments below -87 give 0, above 88 exp(88), like exp_bounded.
VSL_INLINE float separated_exp(float v, float m, double k) {
  double z = (static_cast<double>(v) - static_cast<double>(m)) * k;  // the difference is exact in double
  const bool underflow = z < -87.0;
  z = underflow ? -87.0 : (z > 88.0 ? 88.0 : z);
  const double n = (z * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;  // round (1.5 * 2^52)
  const float r = static_cast<float>((z - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10);
  return underflow ? 0.0f : exp_reduced(r, static_cast<int32_t>(n));
}

VSL_INLINE double separated_exp(double v, double m, double k) { return exp_bounded((v - m) * k); }

// Long sums: SIMD float partial sums over chunks of kChunk terms, chunks added in double, so a
// rank over thousands of equal terms (ties) keeps float32 rounding.
constexpr int64_t kChunk = 256;

// ---------------------------------------------------------------------------------------------
// Dense algorithm: one exp per pair. sum over a of f(d_a), d_a = (v_a - x) k:
//   kSigmoid: sigma(d);  kGrad: sigma'(d);  kGradDiff: sigma'(d) (w_a - wx)
// (v_a - x taken by rank_diff for sigma and grad_diff for sigma', see sigmoid_math.h)

template <int Kind, typename T>
T dense_sum(const T* v, const T* w, int64_t n, T x, T wx, const RowParams<T>& p) {
  double total = 0;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t c1 = std::min(n, c0 + kChunk);
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t a = c0; a < c1; ++a) {
      if constexpr (Kind == kSigmoid) {
        s += sigmoid_clamped(rank_diff(v[a], x) * p.k, p.clamp_at);
      } else if constexpr (Kind == kGrad) {
        s += sigmoid_grad_clamped(grad_diff(v[a], x) * p.k, p.clamp_at);
      } else {
        s += sigmoid_grad_clamped(grad_diff(v[a], x) * p.k, p.clamp_at) * (w[a] - wx);
      }
    }
    total += static_cast<double>(s);
  }
  return static_cast<T>(total);
}

// ---------------------------------------------------------------------------------------------
// Sorted algorithm.

// sum over a in [lo, hi) of f(t_a), t_a = E_a X = exp(-d_a):
//   kSigmoid: sigma(d) = 1/(1+t);  kGrad: sigma'(d) = t/(1+t)^2;  kGradWeighted: sigma' w_a;
//   kGradDiff: sigma' (w_a - wc)
template <int Kind, typename T> T pair_sum(const T* E, const T* w, int64_t lo, int64_t hi, T X, T wc) {
  double total = 0;
  for (int64_t c0 = lo; c0 < hi; c0 += kChunk) {
    const int64_t c1 = std::min(hi, c0 + kChunk);
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t a = c0; a < c1; ++a) {
      const T t = E[a] * X;
      const T inv = T(1) / (T(1) + t);
      if constexpr (Kind == kSigmoid) {
        s += inv;
      } else if constexpr (Kind == kGrad) {
        s += t * inv * inv;
      } else if constexpr (Kind == kGradWeighted) {
        s += t * inv * inv * w[a];
      } else {
        s += t * inv * inv * (w[a] - wc);
      }
    }
    total += static_cast<double>(s);
  }
  return static_cast<T>(total);
}

// [first index with v > -inf, first index with v == +inf) of sorted, NaN-free v[0..n): its finite part.
template <typename T> std::pair<int64_t, int64_t> finite_range(const T* v, int64_t n) {
  const T inf = static_cast<T>(INFINITY);
  return {std::upper_bound(v, v + n, -inf) - v, std::lower_bound(v, v + n, inf) - v};
}

// For sorted centres u[0..nu) against sorted values v[0..nv) (weights w, may be null; both
// NaN-free), calls emit(i, sum, lo, hi) with [lo, hi) the window of v within [u_i - hw, u_i + hw]
// and sum the pair sum of Kind over that window, leaving out position skip[i] (skip may be null;
// -1 = none). A finite centre's window holds finite values only (infinities lie beyond any hw and
// are counted by position); an infinite centre's window is the run of values equal to it, every
// pair a tie: 1/2 each for sigma, 0 for sigma' (sigmoid_math.h).
template <int Kind, typename T, typename Emit>
void windowed_sums(const T* v, const T* w, int64_t nv, const T* u, const T* wu, int64_t nu, const int64_t* skip,
                   const RowParams<T>& p, T* E, Emit&& emit) {
  const auto [v_begin, v_end] = finite_range(v, nv);
  const auto [u_begin, u_end] = finite_range(u, nu);
  const auto infinite_centre = [&](int64_t i, int64_t lo, int64_t hi) {
    T sum = 0;
    if constexpr (Kind == kSigmoid) {
      const int64_t s = skip ? skip[i] : -1;
      sum = T(0.5) * static_cast<T>(hi - lo - (s >= lo && s < hi ? 1 : 0));
    }
    emit(i, sum, lo, hi);
  };
  for (int64_t i = 0; i < u_begin; ++i) infinite_centre(i, 0, v_begin);
  const T hw = p.half_window;
  int64_t lo = v_begin, hi = v_begin;
  for (int64_t b0 = u_begin; b0 < u_end;) {
    const T m = u[b0];
    int64_t b1 = b0 + 1;
    while (b1 < u_end && u[b1] - m <= p.block_span) ++b1;
    // Exponentials of the block's whole window [lo(u[b0]), hi(u[b1 - 1])).
    while (lo < v_end && v[lo] < m - hw) ++lo;
    int64_t block_hi = std::max(hi, lo);
    while (block_hi < v_end && v[block_hi] <= u[b1 - 1] + hw) ++block_hi;
#pragma omp simd
    for (int64_t a = lo; a < block_hi; ++a) E[a] = separated_exp(v[a], m, -p.k64);
    for (int64_t i = b0; i < b1; ++i) {
      const T ui = u[i];
      while (lo < v_end && v[lo] < ui - hw) ++lo;
      if (hi < lo) hi = lo;
      while (hi < v_end && v[hi] <= ui + hw) ++hi;
      const T X = separated_exp(ui, m, p.k64);
      const T wc = wu ? wu[i] : T(0);
      const int64_t s = skip ? skip[i] : -1;
      T sum;
      if (s >= lo && s < hi) sum = pair_sum<Kind>(E, w, lo, s, X, wc) + pair_sum<Kind>(E, w, s + 1, hi, X, wc);
      else sum = pair_sum<Kind>(E, w, lo, hi, X, wc);
      emit(i, sum, lo, hi);
    }
    b0 = b1;
  }
  for (int64_t i = u_end; i < nu; ++i) infinite_centre(i, v_end, nv);
}

// Per-thread scratch for one row.
// The arrays a pair loop reads by whole vectors (E, part, weights) have Simd<T>::width spare elements.
template <typename T> struct Scratch {
  std::vector<T> xs, xw, ys, yw, E, X, r1, r2, g1, g2, part, out;
  std::vector<double> partd;
  std::vector<int64_t> xperm, yperm, xskip, yskip, tmp, hi_of;
  std::vector<SortItem<T>> items, spare;
  int64_t capacity = 0;  // columns the arrays hold
  void reserve(int64_t n) {
    capacity = n;
    for (auto* v : {&xs, &xw, &ys, &yw, &E, &X, &r1, &r2, &g1, &g2, &part, &out}) v->resize(n + Simd<T>::width);
    partd.resize(n);
    for (auto* v : {&xperm, &yperm, &xskip, &yskip, &tmp, &hi_of}) v->resize(n);
    items.resize(n);
    spare.resize(n);
  }
};

template <typename T> Scratch<T>& thread_scratch(int64_t n) {
  thread_local Scratch<T> s;
  if (s.capacity < n) s.reserve(n);
  return s;
}

// Sorts x (carrying g along if given) into sorted values xs, weights ws and the permutation perm
// (sorted -> original), with s's sort buffers.
template <typename T>
void sort_row(const T* x, const T* g, int64_t n, T* xs, T* ws, int64_t* perm, Scratch<T>& s) {
  sort_row(x, g, n, xs, ws, perm, s.items.data(), s.spare.data());
}

// skip[i] = position in the other sort of the element whose original index is perm_centres[i].
inline void skip_positions(const int64_t* perm_centres, const int64_t* perm_values, int64_t n, int64_t* inv_tmp,
                           int64_t* skip) {
  for (int64_t i = 0; i < n; ++i) inv_tmp[perm_values[i]] = i;
  for (int64_t i = 0; i < n; ++i) skip[i] = inv_tmp[perm_centres[i]];
}

// What the sorted algorithm counts for a value outside the window: sigma is 1 above (descending)
// or below (ascending) the window, 0 on the other side.
template <typename T> T saturated_count(int64_t lo, int64_t hi, int64_t n, const RowParams<T>& p) {
  return p.descending ? T(n - hi) : T(lo);
}

template <typename T> T saturated_value_at(int64_t pos, int64_t lo, int64_t hi, const RowParams<T>& p) {
  if (pos >= hi) return p.descending ? T(1) : T(0);
  if (pos < lo) return p.descending ? T(0) : T(1);
  return T(0);  // inside the window: already left out of the pair sum
}

// The row rank's sums over a sorted, NaN-free row v[0..n) (sorted ranks, or sorted gradients with
// sorted weights w), evaluating each pair (i, a), i < a, with v_a - v_i <= half_window once for
// both of its entries:
//   w == nullptr: out[i] = 1 + sum_{a != i} sigma((v_a - v_i) k)               (the rank)
//   else:         out[i] = k sum_{a != i} sigma'((v_i - v_a) k) (w_a - w_i)   (its gradient)
// The partner's term follows from the pair's: sigma((v_i - v_a) k) = 1 - sigma((v_a - v_i) k), and
// sigma' is even, so the partner's gradient term is the pair's with the sign flipped. A pair beyond
// the window counts 0 or 1 (sigma) and 0 (sigma') by position. Centres are taken in blocks of
// kBlockSpan around a reference m (the block's first centre): the values a pair of the block can
// reach, [b0, hi(b1 - 1)), get E_a = exp(-(v_a - m) k) once, a centre X_i = exp((v_i - m) k), and
// sigma = 1 / (1 + E_a X_i), sigma' = t / (1 + t)^2 with t = E_a X_i.
// Sums: a centre's own pairs in float chunks of kChunk added in double; the partners' terms in
// `part`, flushed to double (`partd`) every kChunk centres, so no float partial sum holds more than
// kChunk terms (as dense_sum and pair_sum).
// The pairs of centre i with the values (i, hi): sigma (w == nullptr) or sigma' (w_a - w_i), with
// t = E_a X. Adds each partner's term to part[a] and returns the centre's own sum, in float vectors
// over chunks of kChunk values added in double. The last vector of the window is masked (E, part
// and w have a vector's worth of spare elements; the masked lanes add 0 to part).
template <bool kGradient, typename T>
VSL_INLINE double centre_pairs(const T* E, const T* w, T* part, int64_t i, int64_t hi, T X) {
  using S = Simd<T>;
  using V = typename S::vec;
  constexpr int W = S::width;
  const V one = V{} + T(1);
  const T wi = kGradient ? w[i] : T(0);
  double own = 0;
  for (int64_t c0 = i + 1; c0 < hi; c0 += kChunk) {
    const int64_t c1 = std::min(hi, c0 + kChunk);
    V acc = V{};
    int64_t a = c0;
    auto step = [&](int64_t at, auto lanes) {
      const V t = load<V>(E + at) * X;
      const V inv = one / (one + t);
      V own_term, partner_term;
      if constexpr (kGradient) {
        own_term = t * inv * inv * (load<V>(w + at) - wi);
        partner_term = -own_term;
      } else {
        own_term = inv;
        partner_term = t * inv;  // = 1 - inv, without the cancellation of 1 - inv when t is small
      }
      own_term = lanes(own_term);
      acc += own_term;
      store(part + at, load<V>(part + at) + lanes(partner_term));
    };
    for (; a + W <= c1; a += W) step(a, [](V v) { return v; });
    if (a < c1) {
      const auto mask = S::lanes_below(c1 - a);
      step(a, [mask](V v) { return keep(mask, v); });
    }
    own += static_cast<double>(S::sum(acc));
  }
  return own;
}

// The row rank's sums over a sorted, NaN-free row v[0..n) (sorted ranks, or sorted gradients with
// sorted weights w), evaluating each pair (i, a), i < a, with v_a - v_i <= half_window once for
// both of its entries:
//   w == nullptr: out[i] = 1 + sum_{a != i} sigma((v_a - v_i) k)               (the rank)
//   else:         out[i] = k sum_{a != i} sigma'((v_i - v_a) k) (w_a - w_i)   (its gradient)
// The partner's term follows from the pair's: sigma((v_i - v_a) k) = 1 - sigma((v_a - v_i) k), and
// sigma' is even, so the partner's gradient term is the pair's with the sign flipped. A pair beyond
// the window counts 0 or 1 (sigma) and 0 (sigma') by position. Centres are taken in blocks of
// kBlockSpan around a reference m (the block's first centre): the values a pair of the block can
// reach, [b0, hi(b1 - 1)), get E_a = exp(-(v_a - m) k) once, a centre X_i = exp((v_i - m) k), and
// sigma = 1 / (1 + E_a X_i), sigma' = t / (1 + t)^2 with t = E_a X_i.
// Sums: a centre's own pairs as in centre_pairs; the partners' terms in `part`, flushed to double
// (`partd`) every kChunk centres, so no float partial sum holds more than kChunk terms (as
// dense_sum and pair_sum).
template <typename T>
void row_pair_sums(const T* v, const T* w, int64_t n, const RowParams<T>& p, Scratch<T>& s, T* out) {
  constexpr bool kFloat = std::is_same<T, float>::value;
  const bool grad = w != nullptr;
  const auto [fb, fe] = finite_range(v, n);
  // Infinite entries: ties among equal infinities (1/2, sigma' = 0), the rest saturated by position.
  for (int64_t i = 0; i < fb; ++i)
    out[i] = grad ? T(0) : static_cast<T>(1 + 0.5 * static_cast<double>(fb - 1) + (p.descending ? n - fb : 0));
  for (int64_t i = fe; i < n; ++i)
    out[i] = grad ? T(0) : static_cast<T>(1 + 0.5 * static_cast<double>(n - fe - 1) + (p.descending ? 0 : fe));
  if (fb >= fe) return;
  // A finite centre against the infinite values: +inf counts 1 descending, -inf 1 ascending.
  const double infinite_count = p.descending ? static_cast<double>(n - fe) : static_cast<double>(fb);

  T* E = s.E.data();
  T* X = s.X.data();
  T* part = s.part.data();
  double* partd = s.partd.data();
  int64_t* hi_of = s.hi_of.data();
  std::fill(part + fb, part + fe, T(0));
  if (kFloat) std::fill(partd + fb, partd + fe, 0.0);
  const T hw = p.half_window;
  int64_t hi = fb;       // the current centre's window end: first value beyond v_i + hw
  int64_t below = fb;    // first value whose window reaches the current centre (ascending count)
  int64_t touched = fb;  // part[] holds terms in [.., touched)
  int64_t unflushed = 0;
  for (int64_t b0 = fb; b0 < fe;) {
    const T m = v[b0];
    const int64_t b1 = advance_to_above(v, b0 + 1, fe, m + p.block_span);
    const int64_t block_hi = advance_to_above(v, std::max(hi, b1), fe, v[b1 - 1] + hw);
#pragma omp simd
    for (int64_t a = b0; a < block_hi; ++a) E[a] = separated_exp(v[a], m, -p.k64);
#pragma omp simd
    for (int64_t i = b0; i < b1; ++i) X[i] = separated_exp(v[i], m, p.k64);
    for (int64_t i = b0; i < b1; ++i) {
      hi = advance_to_above(v, hi, fe, v[i] + hw);  // hi > i: v_i is within its own window
      hi_of[i] = hi;
      touched = std::max(touched, hi);
      const double own = grad ? centre_pairs<true>(E, w, part, i, hi, X[i])
                              : centre_pairs<false>(E, w, part, i, hi, X[i]);
      // part[i] is complete: every centre below i has been taken.
      const double partners = static_cast<double>(part[i]) + (kFloat ? partd[i] : 0.0);
      if (!grad) {
        if (!p.descending)
          while (below < i && hi_of[below] <= i) ++below;
        const double saturated = p.descending ? static_cast<double>(fe - hi) : static_cast<double>(below - fb);
        out[i] = static_cast<T>(1 + infinite_count + saturated + own + partners);
      } else {
        out[i] = static_cast<T>(p.k64 * (own + partners));
      }
      if (kFloat && ++unflushed == kChunk) {
        for (int64_t a = i + 1; a < touched; ++a) {
          partd[a] += static_cast<double>(part[a]);
          part[a] = T(0);
        }
        unflushed = 0;
      }
    }
    b0 = b1;
  }
}

// Row rank of a row, by the sorted algorithm: the row sorted into vals / perm, ranks[perm[i]].
template <typename T>
void sorted_row_rank(const T* row, T* ranks, int64_t n, const RowParams<T>& p, Scratch<T>& s, T* vals, int64_t* perm) {
  sort_row<T>(row, nullptr, n, vals, nullptr, perm, s);
  row_pair_sums<T>(vals, nullptr, n, p, s, s.out.data());
  for (int64_t i = 0; i < n; ++i) ranks[perm[i]] = s.out[i];
}

// Its gradient, from the row already sorted into vals / perm: grad_row = k sum sigma' (g_j - g_l).
template <typename T>
void sorted_row_rank_backward(const T* vals, const int64_t* perm, const T* grad_ranks, T* grad_row, int64_t n,
                              const RowParams<T>& p, Scratch<T>& s, T* weights) {
  for (int64_t i = 0; i < n; ++i) weights[i] = grad_ranks[perm[i]];
  row_pair_sums<T>(vals, weights, n, p, s, s.out.data());
  for (int64_t i = 0; i < n; ++i) grad_row[perm[i]] = s.out[i];
}

// ranks[c] = 1 + sum_{a != c} sigma((compared[a] - ranked[c]) k); compared == ranked for the row rank.
template <typename T>
void rank_row(const T* ranked, const T* compared, T* ranks, int64_t n, const RowParams<T>& p, bool sorted,
              Scratch<T>& s) {
  if (!sorted) {
    for (int64_t c = 0; c < n; ++c) {
      const T xc = ranked[c];
      // 1 + (sum - own term): the own term cancels exactly, so a lone column ranks exactly 1.
      ranks[c] = T(1) + (dense_sum<kSigmoid>(compared, compared, n, xc, T(0), p) -
                         sigmoid_clamped(rank_diff(compared[c], xc) * p.k, p.clamp_at));
    }
    return;
  }
  if (compared == ranked) return sorted_row_rank(ranked, ranks, n, p, s, s.xs.data(), s.xperm.data());
  sort_row<T>(ranked, nullptr, n, s.xs.data(), nullptr, s.xperm.data(), s);
  sort_row<T>(compared, nullptr, n, s.ys.data(), nullptr, s.yperm.data(), s);
  skip_positions(s.xperm.data(), s.yperm.data(), n, s.tmp.data(), s.xskip.data());
  const int64_t* skip = s.xskip.data();
  const int64_t* perm = s.xperm.data();
  windowed_sums<kSigmoid>(s.ys.data(), static_cast<const T*>(nullptr), n, s.xs.data(), static_cast<const T*>(nullptr),
                          n, skip, p, s.E.data(), [&](int64_t i, T sum, int64_t lo, int64_t hi) {
                            ranks[perm[i]] = T(1) + saturated_count(lo, hi, n, p) + sum -
                                             saturated_value_at(skip[i], lo, hi, p);
                          });
}

// Row rank: grad_ranked[l] = k * sum_{j != l} sigma'((x_l - x_j) k) (g_j - g_l) with x = ranked,
// g = grad_ranks; the j = l term is 0.
template <typename T>
void row_rank_backward(const T* ranked, const T* grad_ranks, T* grad_ranked, int64_t n, const RowParams<T>& p,
                       bool sorted, Scratch<T>& s) {
  if (!sorted) {
    for (int64_t l = 0; l < n; ++l)
      grad_ranked[l] = p.k * dense_sum<kGradDiff>(ranked, grad_ranks, n, ranked[l], grad_ranks[l], p);
    return;
  }
  sort_row<T>(ranked, nullptr, n, s.xs.data(), nullptr, s.xperm.data(), s);
  sorted_row_rank_backward(s.xs.data(), s.xperm.data(), grad_ranks, grad_ranked, n, p, s, s.xw.data());
}

// Rank against compared rows, with x = ranked, y = compared, g = grad_ranks, d_ca = (y_a - x_c) k:
//   grad_ranked[c] = -k g_c sum_{a != c} sigma'(d_ca),  grad_compared[a] = k sum_{c != a} sigma'(d_ca) g_c.
template <typename T>
void compared_rank_backward(const T* ranked, const T* compared, const T* grad_ranks, T* grad_ranked, T* grad_compared,
                            int64_t n, const RowParams<T>& p, bool sorted, Scratch<T>& s) {
  const T *x = ranked, *y = compared, *g = grad_ranks;
  if (!sorted) {
    for (int64_t c = 0; c < n; ++c) {
      const T sum = dense_sum<kGrad>(y, y, n, x[c], T(0), p) -
                    sigmoid_grad_clamped(grad_diff(y[c], x[c]) * p.k, p.clamp_at);
      grad_ranked[c] = -p.k * g[c] * sum;
    }
    for (int64_t a = 0; a < n; ++a) {
      // sum_c sigma'((y_a - x_c) k) g_c; sigma' is even, so evaluate as (x_c - y_a) k.
      const T sum = dense_sum<kGradDiff>(x, g, n, y[a], T(0), p) -
                    sigmoid_grad_clamped(grad_diff(x[a], y[a]) * p.k, p.clamp_at) * g[a];
      grad_compared[a] = p.k * sum;
    }
    return;
  }
  sort_row(x, g, n, s.xs.data(), s.xw.data(), s.xperm.data(), s);
  sort_row<T>(y, nullptr, n, s.ys.data(), nullptr, s.yperm.data(), s);
  skip_positions(s.xperm.data(), s.yperm.data(), n, s.tmp.data(), s.xskip.data());  // for centres x
  skip_positions(s.yperm.data(), s.xperm.data(), n, s.tmp.data(), s.yskip.data());  // for centres y
  const int64_t* xperm = s.xperm.data();
  const int64_t* yperm = s.yperm.data();
  // ranked side: centres x_c (sorted), values y.
  windowed_sums<kGrad>(s.ys.data(), static_cast<const T*>(nullptr), n, s.xs.data(), static_cast<const T*>(nullptr), n,
                       s.xskip.data(), p, s.E.data(),
                       [&](int64_t i, T sum, int64_t, int64_t) { grad_ranked[xperm[i]] = -p.k * s.xw[i] * sum; });
  // compared side: centres y_a (sorted), values x weighted by g. sigma' is even, so the centre/value
  // swap only flips the sign of d.
  windowed_sums<kGradWeighted>(s.xs.data(), s.xw.data(), n, s.ys.data(), static_cast<const T*>(nullptr), n,
                               s.yskip.data(), p, s.E.data(),
                               [&](int64_t i, T sum, int64_t, int64_t) { grad_compared[yperm[i]] = p.k * sum; });
}

// Inside the window the sorted path ignores the public-code clamp, which lies beyond the window
// (static_assert in vsl_constants.h).
inline bool use_sorted(const RankArgs& args, int64_t cols) {
  if (args.algorithm == Algorithm::dense) return false;
  if (args.algorithm == Algorithm::sorted) return true;
  return cols >= kCpuSortedFromCols;
}

// body(r) for every row, on kernel_threads(...) threads (cpu_parallel.h); `work` estimates the call's
// pair evaluations.
template <typename F> void for_each_row(int64_t rows, int threads, int64_t work, F&& body) {
  const int nt = kernel_threads(threads, rows, work);
  if (nt <= 1) {
    for (int64_t r = 0; r < rows; ++r) body(r);
    return;
  }
  using Body = typename std::remove_reference<F>::type;
  parallel_rows(rows, nt, [](void* context, int64_t r) { (*static_cast<Body*>(context))(r); }, &body);
}

template <typename T>
void forward_rows(const T* ranked, const T* compared, T* ranks, int64_t rows, int64_t cols, const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args, cols);
  for_each_row(rows, args.threads, rows * cols * cols, [&](int64_t r) {
    const T* xr = ranked + r * cols;
    const T* yr = compared ? compared + r * cols : xr;
    const bool no_nans = no_nan(xr, cols) && (!compared || no_nan(yr, cols));
    rank_row(xr, yr, ranks + r * cols, cols, p, sorted && no_nans, thread_scratch<T>(cols));
  });
}

template <typename T>
void backward_rows(const T* ranked, const T* compared, const T* grad_ranks, T* grad_ranked, T* grad_compared,
                   int64_t rows, int64_t cols, const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args, cols);
  for_each_row(rows, args.threads, rows * cols * cols, [&](int64_t r) {
    const int64_t o = r * cols;
    const bool no_nans = no_nan(ranked + o, cols) && (!compared || no_nan(compared + o, cols));
    Scratch<T>& s = thread_scratch<T>(cols);
    if (compared)
      compared_rank_backward(ranked + o, compared + o, grad_ranks + o, grad_ranked + o, grad_compared + o, cols, p,
                             sorted && no_nans, s);
    else row_rank_backward(ranked + o, grad_ranks + o, grad_ranked + o, cols, p, sorted && no_nans, s);
  });
}

template <typename T> const T* as(const void* p) { return static_cast<const T*>(p); }
template <typename T> T* as(void* p) { return static_cast<T*>(p); }

}  // namespace

void sigmoid_rank_forward(DType dt, const void* ranked, const void* compared, void* ranks, int64_t rows, int64_t cols,
                          const RankArgs& args) {
  if (dt == DType::f32) forward_rows(as<float>(ranked), as<float>(compared), as<float>(ranks), rows, cols, args);
  else forward_rows(as<double>(ranked), as<double>(compared), as<double>(ranks), rows, cols, args);
}

void sigmoid_rank_backward(DType dt, const void* ranked, const void* compared, const void* grad_ranks,
                           void* grad_ranked, void* grad_compared, int64_t rows, int64_t cols, const RankArgs& args) {
  if (dt == DType::f32)
    backward_rows(as<float>(ranked), as<float>(compared), as<float>(grad_ranks), as<float>(grad_ranked),
                  as<float>(grad_compared), rows, cols, args);
  else
    backward_rows(as<double>(ranked), as<double>(compared), as<double>(grad_ranks), as<double>(grad_ranked),
                  as<double>(grad_compared), rows, cols, args);
}

}  // namespace VSL_CPU_ISA
}  // namespace vsl
