// The fused CPU Smooth-AP kernel (smooth_ap_loss.h), compiled once per instruction set beside the
// sigmoid-rank kernels whose row machinery it uses (sigmoid_rank_cpu_impl.h): rows in parallel; in a
// row, for each relevant entry j, one pass over the row gives both of j's sums (and keeps each pair's
// sigma' in per-thread scratch), and a second pass over the kept sigma' adds j's pairs to the gradient.
// One exp per evaluated pair, O(|P| cols) pairs per row, O(cols) scratch per thread.
#pragma once
#include <algorithm>
#include <limits>

#include "sigmoid_rank_cpu_impl.h"
#include "smooth_ap_loss.h"

namespace vsl {
namespace VSL_CPU_ISA {
namespace {

// Positives whose gradient parts are summed in T before they are added into the double totals (the
// chunking of dense_sum, over the other index).
constexpr int64_t kPositivesPerFlush = 256;

template <typename T> void flush(T* part, double* total, int64_t n) {
  for (int64_t a = 0; a < n; ++a) {
    total[a] += static_cast<double>(part[a]);
    part[a] = T(0);
  }
}

// One row: returns weight * AP and, with grad, writes d loss / d x.
template <typename T>
double smooth_ap_row(const T* x, const uint8_t* rel, double weight, T* grad, int64_t n, const RowParams<T>& p,
                     Scratch<T>& s) {
  int64_t* positives = s.tmp.data();
  int64_t np = 0;
  for (int64_t a = 0; a < n; ++a)
    if (rel[a]) positives[np++] = a;
  if (grad) std::fill(grad, grad + n, T(0));
  if (np == 0 || weight == 0) return 0;
  const double w = weight / static_cast<double>(np);
  T* sig_grad = s.E.data();        // sigma'(d_ja) of the current j
  T* part = s.part.data();         // gradient parts of up to kPositivesPerFlush positives, in T
  double* total = s.partd.data();  // the gradient, in double (times tau)
  if (grad) {
    std::fill(part, part + n, T(0));
    std::fill(total, total + n, 0.0);
  }
  double ap = 0;
  for (int64_t i = 0; i < np; ++i) {
    const int64_t j = positives[i];
    const T xj = x[j];
    double pos = 0, neg = 0;
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t c1 = std::min(n, c0 + kChunk);
      T sp = 0, sn = 0;
#pragma omp simd reduction(+ : sp, sn)
      for (int64_t a = c0; a < c1; ++a) {
        const T d = rank_diff(x[a], xj) * p.k;
        const T e = exp_bounded(-abs_(d));
        const T inv = T(1) / (T(1) + e);
        const T sig = d >= T(0) ? inv : e * inv;
        const T m = static_cast<T>(rel[a]);
        sp += sig * m;
        sn += sig - sig * m;  // exact for m in {0, 1}
        sig_grad[a] = e * inv * inv;
      }
      pos += static_cast<double>(sp);
      neg += static_cast<double>(sn);
    }
    // The a = j term is sigma(0) = 1/2 (equal entries tie, infinities included), not a pair.
    const double r_pos = 1.0 + (pos - 0.5);
    const double r_all = r_pos + neg;
    ap += r_pos / r_all;
    // An infinite x_j has no gradient through any of its pairs (sigmoid_math.h).
    if (!grad || is_infinite(xj)) continue;
    sig_grad[j] = T(0);  // not a pair (and a term as large as the gradient's other terms are small)
    const T c_pos = static_cast<T>(-w * neg / (r_all * r_all));
    const T c_neg = static_cast<T>(w * r_pos / (r_all * r_all));
    double out = 0;
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t c1 = std::min(n, c0 + kChunk);
      T so = 0;
#pragma omp simd reduction(+ : so)
      for (int64_t a = c0; a < c1; ++a) {
        const T t = sig_grad[a] * (rel[a] ? c_pos : c_neg);
        part[a] += t;
        so += t;
      }
      out += static_cast<double>(so);
    }
    total[j] -= out;
    if ((i + 1) % kPositivesPerFlush == 0) flush(part, total, n);
  }
  if (grad) {
    flush(part, total, n);
    for (int64_t a = 0; a < n; ++a) grad[a] = static_cast<T>(total[a] * p.k64);
  }
  return w * ap;
}

template <typename T>
void smooth_ap_rows(const T* sims, const uint8_t* rel, const double* weights, double* row_sums, T* grad, int64_t rows,
                    int64_t n, double tau, int threads) {
  RankArgs args;
  args.tau = tau;
  const RowParams<T> p = row_params<T>(args);
  int64_t positives = 0;
  for (int64_t i = 0; i < rows * n; ++i) positives += rel[i];
  for_each_row(rows, threads, positives * n * (grad ? 2 : 1), [&](int64_t r) {
    const int64_t o = r * n;
    row_sums[r] = smooth_ap_row(sims + o, rel + o, weights[r], grad ? grad + o : nullptr, n, p, thread_scratch<T>(n));
  });
}

}  // namespace

void smooth_ap_loss(DType dt, const void* sims, const uint8_t* relevant, const double* weights, double* row_sums,
                    void* grad_sims, int64_t rows, int64_t cols, double tau, int threads) {
  if (dt == DType::f32)
    smooth_ap_rows(as<float>(sims), relevant, weights, row_sums, as<float>(grad_sims), rows, cols, tau, threads);
  else smooth_ap_rows(as<double>(sims), relevant, weights, row_sums, as<double>(grad_sims), rows, cols, tau, threads);
}

}  // namespace VSL_CPU_ISA
}  // namespace vsl
