// The fused CPU VSL kernel, compiled once per instruction set beside the sigmoid-rank kernels whose
// row code it uses (sigmoid_rank_cpu_impl.h): for every row i of S and C (in parallel), SR_i and CR_i
// by rank_row into per-thread scratch, then the row's ratio sum and the gradients with respect to
// SR_i and CR_i (vsl_loss.h). Memory: O(cols) per thread besides the outputs.
#pragma once
#include "sigmoid_rank_cpu_impl.h"
#include "vsl_loss.h"

namespace vsl {
namespace VSL_CPU_ISA {
namespace {

template <typename T>
void ratio_sum_rows(const T* sims, const T* sims_compared, const T* semantic, const T* semantic_compared, T* grad_sr,
                    T* grad_cr, double* row_sums, int64_t rows, int64_t n, const RankArgs& args) {
  const RowParams<T> p = row_params<T>(args);
  const bool sorted = use_sorted(args, n);
  parallel_rows(rows, args.threads, [&](int64_t i) {
    const int64_t o = i * n;
    Scratch<T>& s = thread_scratch<T>(n);
    const T* s_row = sims + o;
    const T* c_row = semantic + o;
    const T* s_compared = sims_compared ? sims_compared + o : s_row;
    const T* c_compared = semantic_compared ? semantic_compared + o : c_row;
    T* sr = s.r1.data();
    T* cr = s.r2.data();
    rank_row(s_row, s_compared, sr, n, p, sorted && no_nan(s_row, n) && no_nan(s_compared, n), s);
    rank_row(c_row, c_compared, cr, n, p, sorted && no_nan(c_row, n) && no_nan(c_compared, n), s);
    double acc = 0;
    for (int64_t j = 0; j < n; ++j) {
      const RankRatio<T> r = rank_ratio(sr[j], cr[j]);
      acc += static_cast<double>(r.ratio);
      grad_sr[o + j] = r.da;
      if (grad_cr) grad_cr[o + j] = r.db;
    }
    row_sums[i] = acc;
  });
}

}  // namespace

void vsl_loss_ratio_sum(DType dt, const void* sims, const void* sims_compared, const void* semantic,
                        const void* semantic_compared, void* grad_sr, void* grad_cr, double* row_sums, int64_t rows,
                        int64_t cols, const RankArgs& args) {
  if (dt == DType::f32)
    ratio_sum_rows(as<float>(sims), as<float>(sims_compared), as<float>(semantic), as<float>(semantic_compared),
                   as<float>(grad_sr), as<float>(grad_cr), row_sums, rows, cols, args);
  else
    ratio_sum_rows(as<double>(sims), as<double>(sims_compared), as<double>(semantic), as<double>(semantic_compared),
                   as<double>(grad_sr), as<double>(grad_cr), row_sums, rows, cols, args);
}

}  // namespace VSL_CPU_ISA
}  // namespace vsl
