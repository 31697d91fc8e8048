// CPU sigmoid-rank kernels, compiled once per instruction set (cpu_kernels_baseline.cpp,
// cpu_kernels_avx2.cpp; sigmoid_rank_cpu.cpp picks one at run time): rows in parallel (OpenMP),
// each row by one of the two algorithms of vsl_constants.h, both exact to rounding.
//
// dense : every pair (a, c) of the row gets a sigmoid; O(cols^2) exps per row.
// sorted (the CPU implementation: separated exponentials): values and centres are sorted; pairs
//         with |d| > Saturation<T> contribute exactly 0 or 1 (sigma) and 0 (sigma') and are counted
//         by position; inside the window the exponential separates, exp(-(v_a - u_c) k) = E_a * X_c
//         with E_a = exp(-(v_a - m) k) and X_c = exp((u_c - m) k) around a reference m shared by a
//         block of nearby centres, so a pair costs a multiply, an add and a divide instead of an
//         exp. Infinite values sort to the ends, outside every finite centre's window; an infinite
//         centre's window is the run of values equal to it (ties: sigma = 1/2, sigma' = 0), the
//         rest is counted by position.
// Rows holding NaN take the dense path, which propagates NaN like the reference. Infinities follow
// the rule of sigmoid_math.h on both paths. The fused VSL kernel (vsl_loss_cpu_impl.h) ranks its
// rows with rank_row below.
//
// VSL_CPU_ISA names the namespace of this copy (baseline, avx2).
#pragma once
#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#if VSL_WITH_OPENMP
#include <omp.h>
#endif

#include "sigmoid_math.h"
#include "sigmoid_rank.h"

namespace vsl {
namespace VSL_CPU_ISA {
namespace {

// Centres sharing one reference m lie within this many units of d = (u - m) k of it, which keeps
// every E_a and X_c of the block inside exp(+-(Saturation + kBlockSpan)).
constexpr double kBlockSpan = 16.0;

template <typename T> struct RowParams {
  T k;         // sgn / tau: d = (compared - ranked) * k
  T clamp_at;  // +inf when not clamping
  T half_window;
  T block_span;  // kBlockSpan in units of the input
  bool descending;
};

template <typename T> RowParams<T> row_params(const RankArgs& a) {
  RowParams<T> p;
  p.descending = a.descending;
  p.k = static_cast<T>((a.descending ? 1.0 : -1.0) / a.tau);
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
    const T neg_k = -p.k;
#pragma omp simd
    for (int64_t a = lo; a < block_hi; ++a) E[a] = exp_bounded((v[a] - m) * neg_k);
    for (int64_t i = b0; i < b1; ++i) {
      const T ui = u[i];
      while (lo < v_end && v[lo] < ui - hw) ++lo;
      if (hi < lo) hi = lo;
      while (hi < v_end && v[hi] <= ui + hw) ++hi;
      const T X = exp_bounded((ui - m) * p.k);
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
template <typename T> struct Scratch {
  std::vector<T> xs, xw, ys, yw, E, r1, r2;
  std::vector<int64_t> xperm, yperm, xskip, yskip, tmp;
  void reserve(int64_t n) {
    for (auto* v : {&xs, &xw, &ys, &yw, &E, &r1, &r2}) v->resize(n);
    for (auto* v : {&xperm, &yperm, &xskip, &yskip, &tmp}) v->resize(n);
  }
};

template <typename T> Scratch<T>& thread_scratch(int64_t n) {
  thread_local Scratch<T> s;
  if (static_cast<int64_t>(s.E.size()) < n) s.reserve(n);
  return s;
}

// Sorts x (carrying g along if given): sorted values, weights and the permutation (sorted -> original).
template <typename T> void sort_row(const T* x, const T* g, int64_t n, T* xs, T* ws, int64_t* perm) {
  std::iota(perm, perm + n, int64_t(0));
  std::sort(perm, perm + n, [x](int64_t a, int64_t b) { return x[a] < x[b]; });
  for (int64_t i = 0; i < n; ++i) xs[i] = x[perm[i]];
  if (g)
    for (int64_t i = 0; i < n; ++i) ws[i] = g[perm[i]];
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
  sort_row<T>(ranked, nullptr, n, s.xs.data(), nullptr, s.xperm.data());
  if (compared == ranked) {
    std::iota(s.xskip.begin(), s.xskip.begin() + n, int64_t(0));  // each centre's own sorted slot
    std::copy(s.xs.begin(), s.xs.begin() + n, s.ys.begin());
  } else {
    sort_row<T>(compared, nullptr, n, s.ys.data(), nullptr, s.yperm.data());
    skip_positions(s.xperm.data(), s.yperm.data(), n, s.tmp.data(), s.xskip.data());
  }
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
  sort_row(ranked, grad_ranks, n, s.xs.data(), s.xw.data(), s.xperm.data());
  const int64_t* perm = s.xperm.data();
  windowed_sums<kGradDiff>(s.xs.data(), s.xw.data(), n, s.xs.data(), s.xw.data(), n, nullptr, p, s.E.data(),
                           [&](int64_t i, T sum, int64_t, int64_t) { grad_ranked[perm[i]] = p.k * sum; });
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
  sort_row(x, g, n, s.xs.data(), s.xw.data(), s.xperm.data());
  sort_row<T>(y, nullptr, n, s.ys.data(), nullptr, s.yperm.data());
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

template <typename F> void parallel_rows(int64_t rows, int threads, F&& body) {
#if VSL_WITH_OPENMP
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, rows)));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t r = 0; r < rows; ++r) body(r);
#else
  (void)threads;
  for (int64_t r = 0; r < rows; ++r) body(r);
#endif
}

template <typename T>
void forward_rows(const T* ranked, const T* compared, T* ranks, int64_t rows, int64_t cols, const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args, cols);
  parallel_rows(rows, args.threads, [&](int64_t r) {
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
  parallel_rows(rows, args.threads, [&](int64_t r) {
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
