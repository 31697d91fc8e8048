// Entry points of the fused VSL kernels (CPU: vsl_loss_cpu.cpp, CUDA: vsl_loss_cuda.cu), called
// through bindings.cpp by vsl_ext/kernels/{cpu,cuda}.py, and the VSL's per-entry math.
//
// L_vs = 1 - mean_ij min(SR_ij, CR_ij) / max(SR_ij, CR_ij), SR = rank(S), CR = rank(C), descending
// sigmoid ranks (sigmoid_rank.h; the public-code variant ranks S against S^T and C against C^T).
// The fused kernels rank one row of S and C at a time and write, for rows x cols blocks:
//   row_sums[i] = sum_j min(SR_ij, CR_ij) / max(SR_ij, CR_ij)    (float64)
//   grad_sr = d sum(row_sums) / dSR,  grad_cr = d sum(row_sums) / dCR
// and the CPU kernel also, where asked for, the gradients with respect to S and C through the ranks
// (VslLossGrads). The loss is 1 - sum(row_sums) / n^2. Nothing here checks its arguments (see
// sigmoid_rank.h).
#pragma once
#include <cstdint>

#include "sigmoid_math.h"
#include "sigmoid_rank.h"

namespace vsl {

// The CPU kernel's gradient outputs (rows x cols each); a null pointer is not computed.
struct VslLossGrads {
  void* grad_sr = nullptr;  // d sum / dSR
  void* grad_cr = nullptr;  // d sum / dCR
  // d sum / dS through SR; the public-code variant's rank of S against S^T also has a part with
  // respect to S^T (sims_compared), in S^T's layout: d sum / dS = grad_sims + grad_sims_compared^T.
  void* grad_sims = nullptr;
  void* grad_sims_compared = nullptr;  // with grad_sims, when sims_compared is given
  void* grad_semantic = nullptr;       // the same for C
  void* grad_semantic_compared = nullptr;
};

void vsl_loss_ratio_sum_cpu(DType dt, const void* sims, const void* sims_compared, const void* semantic,
                            const void* semantic_compared, const VslLossGrads& grads, double* row_sums, int64_t rows,
                            int64_t cols, const RankArgs& args);

// out[i] = data[i] * factor for i < count (out may be data; float32: the factor rounded to float32
// first, as torch's product of a tensor and a 0-d tensor rounds it), on up to `threads` threads of the package's pool
// (cpu_parallel.h): the backward's scaling of dL/dS by the incoming gradient, run on the pool that
// the kernel's helpers sleep in, so no OpenMP region of torch's starts between two kernel calls
// (its workers would spin on the cores the pool's helpers need next; docs/benchmarks.md).
void scale_cpu(DType dt, const void* data, void* out, int64_t count, double factor, int threads);

#if VSL_WITH_CUDA
// The dense algorithm, fused (args.algorithm is not read).
void vsl_loss_ratio_sum_cuda(DType dt, const void* sims, const void* sims_compared, const void* semantic,
                             const void* semantic_compared, void* grad_sr, void* grad_cr, double* row_sums,
                             int64_t rows, int64_t cols, const RankArgs& args, int device, uintptr_t stream);

// The same sums from ranks already computed (sr, cr: rows x cols), for a batch whose S or C took the
// sorted algorithm on CUDA.
void vsl_loss_ratio_sum_from_ranks_cuda(DType dt, const void* sr, const void* cr, void* grad_sr, void* grad_cr,
                                        double* row_sums, int64_t rows, int64_t cols, int device, uintptr_t stream);
#endif

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
