// The fused CPU VSL kernel, compiled once per instruction set beside the sigmoid-rank kernels whose
// row code it uses (sigmoid_rank_cpu_impl.h). For every row i of S and C (rows in parallel): SR_i and
// CR_i into per-thread scratch, the row's ratio sum and its gradients with respect to SR_i and CR_i
// (vsl_loss.h), and then, where asked for, the gradients with respect to S_i and C_i through the
// ranks, while the row is still at hand: the row variant keeps each row sorted from its rank to its
// gradient (no second sort, no second pass over memory). Memory: O(cols) per thread besides the
// outputs.
#pragma once
#include "sigmoid_rank_cpu_impl.h"
#include "vsl_loss.h"

namespace vsl {
namespace VSL_CPU_ISA {
namespace {

template <typename T> struct LossRows {
  const T *sims, *sims_compared, *semantic, *semantic_compared;
  T *grad_sr, *grad_cr, *grad_sims, *grad_sims_compared, *grad_semantic, *grad_semantic_compared;
};

// One matrix's row: its ranks into `ranks`; for the row rank by the sorted algorithm the row stays
// sorted in vals / perm for its backward (returns true then).
template <typename T>
bool rank_one(const T* row, const T* compared_row, T* ranks, int64_t n, const RowParams<T>& p, bool sorted,
              Scratch<T>& s, T* vals, int64_t* perm) {
  const bool row_rank = compared_row == row;
  sorted = sorted && no_nan(row, n) && (row_rank || no_nan(compared_row, n));
  if (sorted && row_rank) {
    sorted_row_rank(row, ranks, n, p, s, vals, perm);
    return true;
  }
  rank_row(row, compared_row, ranks, n, p, sorted, s);
  return false;
}

// grad_row = d sum / d row through the ranks, given g = d sum / dranks; for compared rows
// (grad_compared_row given) the part with respect to compared_row goes to grad_compared_row (the
// compared row may share the row's memory: a 1 x 1 matrix is its own transpose).
template <typename T>
void backward_one(const T* row, const T* compared_row, const T* g, T* grad_row, T* grad_compared_row, int64_t n,
                  const RowParams<T>& p, bool sorted, bool kept_sorted, Scratch<T>& s, const T* vals,
                  const int64_t* perm, T* weights) {
  if (kept_sorted) return sorted_row_rank_backward(vals, perm, g, grad_row, n, p, s, weights);
  sorted = sorted && no_nan(row, n) && no_nan(compared_row, n);
  if (!grad_compared_row) return row_rank_backward(row, g, grad_row, n, p, sorted, s);
  compared_rank_backward(row, compared_row, g, grad_row, grad_compared_row, n, p, sorted, s);
}

template <typename T>
void ratio_sum_rows(const LossRows<T>& m, double* row_sums, int64_t rows, int64_t n, const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args, n);
  const int64_t passes = 2 + (m.grad_sims ? 1 : 0) + (m.grad_semantic ? 1 : 0);
  for_each_row(rows, args.threads, passes * rows * n * n, [&](int64_t i) {
    const int64_t o = i * n;
    Scratch<T>& s = thread_scratch<T>(n);
    const T* s_row = m.sims + o;
    const T* c_row = m.semantic + o;
    const T* s_compared = m.sims_compared ? m.sims_compared + o : s_row;
    const T* c_compared = m.semantic_compared ? m.semantic_compared + o : c_row;
    T* sr = s.r1.data();
    T* cr = s.r2.data();
    const bool s_kept = rank_one(s_row, s_compared, sr, n, p, sorted, s, s.xs.data(), s.xperm.data()) &&
                        !m.sims_compared;
    // C's row rank sorts into ys / yperm, so S's sorted row in xs / xperm stays for its backward, and
    // S's backward then leaves C's. (Only a rank against compared rows, the public-code variant's,
    // sorts into both, and then neither matrix keeps its row.)
    const bool c_kept = rank_one(c_row, c_compared, cr, n, p, sorted, s, s.ys.data(), s.yperm.data()) &&
                        !m.semantic_compared;
    T* g_sr = m.grad_sr ? m.grad_sr + o : s.g1.data();
    T* g_cr = m.grad_cr ? m.grad_cr + o : s.g2.data();
    double acc = 0;
    for (int64_t j = 0; j < n; ++j) {
      const RankRatio<T> r = rank_ratio(sr[j], cr[j]);
      acc += static_cast<double>(r.ratio);
      g_sr[j] = r.da;
      g_cr[j] = r.db;
    }
    row_sums[i] = acc;
    if (m.grad_sims)
      backward_one(s_row, s_compared, g_sr, m.grad_sims + o, m.grad_sims_compared ? m.grad_sims_compared + o : nullptr,
                   n, p, sorted, s_kept, s, s.xs.data(), s.xperm.data(), s.xw.data());
    if (m.grad_semantic)
      backward_one(c_row, c_compared, g_cr, m.grad_semantic + o,
                   m.grad_semantic_compared ? m.grad_semantic_compared + o : nullptr, n, p, sorted, c_kept, s,
                   s.ys.data(), s.yperm.data(), s.yw.data());
  });
}

template <typename T> LossRows<T> loss_rows(const void* sims, const void* sims_compared, const void* semantic,
                                            const void* semantic_compared, const VslLossGrads& g) {
  return {as<T>(sims),
          as<T>(sims_compared),
          as<T>(semantic),
          as<T>(semantic_compared),
          as<T>(g.grad_sr),
          as<T>(g.grad_cr),
          as<T>(g.grad_sims),
          as<T>(g.grad_sims_compared),
          as<T>(g.grad_semantic),
          as<T>(g.grad_semantic_compared)};
}

}  // namespace

void vsl_loss_ratio_sum(DType dt, const void* sims, const void* sims_compared, const void* semantic,
                        const void* semantic_compared, const VslLossGrads& grads, double* row_sums, int64_t rows,
                        int64_t cols, const RankArgs& args) {
  if (dt == DType::f32)
    ratio_sum_rows(loss_rows<float>(sims, sims_compared, semantic, semantic_compared, grads), row_sums, rows, cols,
                   args);
  else
    ratio_sum_rows(loss_rows<double>(sims, sims_compared, semantic, semantic_compared, grads), row_sums, rows, cols,
                   args);
}

}  // namespace VSL_CPU_ISA
}  // namespace vsl
