// CPU sigmoid-rank kernels: rows in parallel (OpenMP), each row by one of two exact algorithms.
//
// dense : every pair (a, c) of the row gets a sigmoid; O(cols^2) per row.
// sorted: the comparison row is sorted once; pairs with |d| > Saturation<T> contribute exactly 0 or
//         1 (sigma) and 0 (sigma'), so they are counted by binary search and only the window
//         |y - x| <= Saturation * tau gets sigmoids; O(cols log cols + cols * window) per row.
// Rows containing NaN always take the dense path so that NaN propagates like the reference.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#if VSL_WITH_OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#include "sigmoid_math.h"

namespace vsl {
namespace {

// Sorted algorithm is used from this many columns on (benchmarks/bench_rank.py measures it).
constexpr int64_t kSortedFromCols = 64;

template <typename T> struct RowParams {
  T k;         // sgn / tau: d = (y - x) * k
  T clamp_at;  // +inf when not clamping
  T half_window;
  bool descending;
};

template <typename T> RowParams<T> row_params(const RankArgs& a) {
  RowParams<T> p;
  p.descending = a.descending;
  p.k = static_cast<T>((a.descending ? 1.0 : -1.0) / a.tau);
  p.clamp_at = a.clamp_at > 0 ? static_cast<T>(a.clamp_at) : static_cast<T>(INFINITY);
  p.half_window = static_cast<T>(Saturation<T>::value * a.tau);
  return p;
}

template <typename T> bool has_nan(const T* v, int64_t n) {
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) nan |= std::isnan(v[i]);
  return nan;
}

template <typename T> T window_sigmoid_sum(const T* v, int64_t lo, int64_t hi, T x, const RowParams<T>& p) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t a = lo; a < hi; ++a) s += sigmoid_clamped((v[a] - x) * p.k, p.clamp_at);
  return s;
}

template <typename T> T window_grad_sum(const T* v, int64_t lo, int64_t hi, T x, const RowParams<T>& p) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t a = lo; a < hi; ++a) s += sigmoid_grad_clamped((v[a] - x) * p.k, p.clamp_at);
  return s;
}

// sum_a sigma'((v[a] - x) k) * (w[a] - wx)
template <typename T>
T window_weighted_grad_sum(const T* v, const T* w, int64_t lo, int64_t hi, T x, T wx, const RowParams<T>& p) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t a = lo; a < hi; ++a) s += sigmoid_grad_clamped((v[a] - x) * p.k, p.clamp_at) * (w[a] - wx);
  return s;
}

// Index range [lo, hi) of sorted v within [x - hw, x + hw].
template <typename T> void window(const T* v, int64_t n, T x, T hw, int64_t& lo, int64_t& hi) {
  lo = std::lower_bound(v, v + n, x - hw) - v;
  hi = std::upper_bound(v + lo, v + n, x + hw) - v;
}

// What one value y contributes to the rank of the centre x, classified exactly as window() does.
template <typename T> T single_term(T y, T x, const RowParams<T>& p) {
  if (y < x - p.half_window) return p.descending ? T(0) : T(1);
  if (y > x + p.half_window) return p.descending ? T(1) : T(0);
  return sigmoid_clamped((y - x) * p.k, p.clamp_at);
}

// sigma' of one value v around the centre x (sigma' is even), 0 where window() would not reach v.
template <typename T> T single_grad(T v, T x, const RowParams<T>& p) {
  if (v < x - p.half_window || v > x + p.half_window) return T(0);
  return sigmoid_grad_clamped((v - x) * p.k, p.clamp_at);
}

// Per-thread scratch for one row.
template <typename T> struct Scratch {
  std::vector<T> v, w, r1, r2;
  std::vector<int64_t> perm;
  void reserve(int64_t n) {
    v.resize(n);
    w.resize(n);
    r1.resize(n);
    r2.resize(n);
    perm.resize(n);
  }
};

// Sort v (and w along with it, if given) by v.
template <typename T> void sort_by_value(const T* x, const T* g, int64_t n, Scratch<T>& s) {
  if (!g) {
    std::copy(x, x + n, s.v.begin());
    std::sort(s.v.begin(), s.v.begin() + n);
    return;
  }
  std::iota(s.perm.begin(), s.perm.begin() + n, int64_t(0));
  std::sort(s.perm.begin(), s.perm.begin() + n, [x](int64_t a, int64_t b) { return x[a] < x[b]; });
  for (int64_t i = 0; i < n; ++i) {
    s.v[i] = x[s.perm[i]];
    s.w[i] = g[s.perm[i]];
  }
}

// out[c] = 1 + sum_{a != c} sigma((y[a] - x[c]) k)
template <typename T>
void rank_row(const T* x, const T* y, T* out, int64_t n, const RowParams<T>& p, bool sorted, Scratch<T>& s) {
  if (!sorted) {
    for (int64_t c = 0; c < n; ++c) {
      const T xc = x[c];
      const T total = window_sigmoid_sum(y, 0, n, xc, p);
      out[c] = T(1) + total - sigmoid_clamped((y[c] - xc) * p.k, p.clamp_at);
    }
    return;
  }
  sort_by_value<T>(y, nullptr, n, s);
  const T* v = s.v.data();
  for (int64_t c = 0; c < n; ++c) {
    const T xc = x[c];
    int64_t lo, hi;
    window(v, n, xc, p.half_window, lo, hi);
    const T saturated = p.descending ? T(n - hi) : T(lo);
    const T total = saturated + window_sigmoid_sum(v, lo, hi, xc, p);
    out[c] = T(1) + total - single_term(y[c], xc, p);
  }
}

// Row form (y is x): gx[l] = k * sum_{j != l} sigma'((x_l - x_j) k) (g_j - g_l)
template <typename T>
void rank_row_backward_self(const T* x, const T* g, T* gx, int64_t n, const RowParams<T>& p, bool sorted,
                            Scratch<T>& s) {
  if (!sorted) {
    for (int64_t l = 0; l < n; ++l) gx[l] = p.k * window_weighted_grad_sum(x, g, 0, n, x[l], g[l], p);
    return;
  }
  sort_by_value(x, g, n, s);
  const T* v = s.v.data();
  const T* w = s.w.data();
  for (int64_t l = 0; l < n; ++l) {
    int64_t lo, hi;
    window(v, n, x[l], p.half_window, lo, hi);
    gx[l] = p.k * window_weighted_grad_sum(v, w, lo, hi, x[l], g[l], p);
  }
}

// Cross form: gx[c] = -k g[c] sum_{a != c} sigma'(d_ca),  gy[a] = k sum_{c != a} sigma'(d_ca) g[c],
// d_ca = (y_a - x_c) k.
template <typename T>
void rank_row_backward_cross(const T* x, const T* y, const T* g, T* gx, T* gy, int64_t n, const RowParams<T>& p,
                             bool sorted, Scratch<T>& s) {
  if (!sorted) {
    for (int64_t c = 0; c < n; ++c) {
      const T sum = window_grad_sum(y, 0, n, x[c], p) - sigmoid_grad_clamped((y[c] - x[c]) * p.k, p.clamp_at);
      gx[c] = -p.k * g[c] * sum;
    }
    for (int64_t a = 0; a < n; ++a) {
      // sum_c sigma'((y_a - x_c) k) g_c; sigma' is even, so evaluate as (x_c - y_a) k.
      const T sum = window_weighted_grad_sum(x, g, 0, n, y[a], T(0), p) -
                    sigmoid_grad_clamped((y[a] - x[a]) * p.k, p.clamp_at) * g[a];
      gy[a] = p.k * sum;
    }
    return;
  }
  sort_by_value<T>(y, nullptr, n, s);
  for (int64_t c = 0; c < n; ++c) {
    int64_t lo, hi;
    window(s.v.data(), n, x[c], p.half_window, lo, hi);
    const T sum = window_grad_sum(s.v.data(), lo, hi, x[c], p) - single_grad(y[c], x[c], p);
    gx[c] = -p.k * g[c] * sum;
  }
  sort_by_value(x, g, n, s);
  for (int64_t a = 0; a < n; ++a) {
    int64_t lo, hi;
    window(s.v.data(), n, y[a], p.half_window, lo, hi);
    const T sum = window_weighted_grad_sum(s.v.data(), s.w.data(), lo, hi, y[a], T(0), p) -
                  single_grad(x[a], y[a], p) * g[a];
    gy[a] = p.k * sum;
  }
}

bool use_sorted(RankAlgo algo, int64_t cols) {
  if (algo == RankAlgo::dense) return false;
  if (algo == RankAlgo::sorted) return true;
  return cols >= kSortedFromCols;
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

template <typename T> Scratch<T>& thread_scratch(int64_t n) {
  thread_local Scratch<T> s;
  if (static_cast<int64_t>(s.v.size()) < n) s.reserve(n);
  return s;
}

template <typename T>
void rank_forward_impl(const T* x, const T* y, T* out, int64_t rows, int64_t cols, const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args.algo, cols);
  parallel_rows(rows, args.threads, [&](int64_t r) {
    const T* xr = x + r * cols;
    const T* yr = y ? y + r * cols : xr;
    const bool nan = has_nan(xr, cols) || (y && has_nan(yr, cols));
    rank_row(xr, yr, out + r * cols, cols, p, sorted && !nan, thread_scratch<T>(cols));
  });
}

template <typename T>
void rank_backward_impl(const T* x, const T* y, const T* g, T* gx, T* gy, int64_t rows, int64_t cols,
                        const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args.algo, cols);
  parallel_rows(rows, args.threads, [&](int64_t r) {
    const int64_t o = r * cols;
    const bool nan = has_nan(x + o, cols) || (y && has_nan(y + o, cols));
    Scratch<T>& s = thread_scratch<T>(cols);
    if (y)
      rank_row_backward_cross(x + o, y + o, g + o, gx + o, gy + o, cols, p, sorted && !nan, s);
    else
      rank_row_backward_self(x + o, g + o, gx + o, cols, p, sorted && !nan, s);
  });
}

template <typename T>
void vsl_forward_impl(const T* sx, const T* sy, const T* cx, const T* cy, T* gs, T* gc, double* partials,
                      int64_t rows, int64_t n, double grad_scale, const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args.algo, n);
  const T scale = static_cast<T>(-grad_scale);
  parallel_rows(rows, args.threads, [&](int64_t i) {
    const int64_t o = i * n;
    Scratch<T>& s = thread_scratch<T>(n);
    const T* syr = sy ? sy + o : sx + o;
    const T* cyr = cy ? cy + o : cx + o;
    T* sr = s.r1.data();
    T* cr = s.r2.data();
    rank_row(sx + o, syr, sr, n, p, sorted && !has_nan(sx + o, n) && !has_nan(syr, n), s);
    rank_row(cx + o, cyr, cr, n, p, sorted && !has_nan(cx + o, n) && !has_nan(cyr, n), s);
    double acc = 0;
    for (int64_t j = 0; j < n; ++j) {
      const T a = sr[j], b = cr[j];
      T ratio, da, db;
      if (std::isnan(a) || std::isnan(b)) {
        ratio = da = db = a + b;
      } else if (a < b) {
        ratio = a / b;
        da = T(1) / b;
        db = -a / (b * b);
      } else if (a > b) {
        ratio = b / a;
        da = -b / (a * a);
        db = T(1) / a;
      } else {  // min and max tie: torch splits the gradient, and the two halves cancel
        ratio = T(1);
        da = db = T(0);
      }
      acc += static_cast<double>(ratio);
      gs[o + j] = scale * da;
      if (gc) gc[o + j] = scale * db;
    }
    partials[i] = acc;
  });
}

}  // namespace

void rank_forward_cpu(DType dt, const void* x, const void* y, void* out, int64_t rows, int64_t cols,
                      const RankArgs& args) {
  if (dt == DType::f32)
    rank_forward_impl(static_cast<const float*>(x), static_cast<const float*>(y), static_cast<float*>(out), rows,
                      cols, args);
  else
    rank_forward_impl(static_cast<const double*>(x), static_cast<const double*>(y), static_cast<double*>(out),
                      rows, cols, args);
}

void rank_backward_cpu(DType dt, const void* x, const void* y, const void* g, void* gx, void* gy, int64_t rows,
                       int64_t cols, const RankArgs& args) {
  if (dt == DType::f32)
    rank_backward_impl(static_cast<const float*>(x), static_cast<const float*>(y), static_cast<const float*>(g),
                       static_cast<float*>(gx), static_cast<float*>(gy), rows, cols, args);
  else
    rank_backward_impl(static_cast<const double*>(x), static_cast<const double*>(y),
                       static_cast<const double*>(g), static_cast<double*>(gx), static_cast<double*>(gy), rows,
                       cols, args);
}

void vsl_forward_cpu(DType dt, const void* sx, const void* sy, const void* cx, const void* cy, void* gs, void* gc,
                     double* partials, int64_t rows, int64_t cols, double grad_scale, const RankArgs& args) {
  if (dt == DType::f32)
    vsl_forward_impl(static_cast<const float*>(sx), static_cast<const float*>(sy), static_cast<const float*>(cx),
                     static_cast<const float*>(cy), static_cast<float*>(gs), static_cast<float*>(gc), partials, rows,
                     cols, grad_scale, args);
  else
    vsl_forward_impl(static_cast<const double*>(sx), static_cast<const double*>(sy),
                     static_cast<const double*>(cx), static_cast<const double*>(cy), static_cast<double*>(gs),
                     static_cast<double*>(gc), partials, rows, cols, grad_scale, args);
}

}  // namespace vsl
