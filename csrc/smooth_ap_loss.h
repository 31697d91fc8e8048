// Entry points of the fused Smooth-AP kernels (CPU: smooth_ap_loss_cpu.cpp, CUDA: smooth_ap_loss_cuda.cu),
// called through bindings.cpp by vsl_ext/kernels/{cpu,cuda}.py.
//
// Smooth-AP (Brown et al., ECCV 2020) for any relevance. For a row q of sims x (cols entries) and its
// relevance P (bytes 0 / 1), with d_jk = (x_k - x_j) / tau (descending ranks) and for every relevant j:
//   B_j = sum_{k in P, k != j} sigma(d_jk),  N_j = sum_{k not in P} sigma(d_jk)
//   R_P(j) = 1 + B_j (the rank among P),      R_all(j) = 1 + B_j + N_j (the row rank)
//   AP_q = (1 / |P_q|) sum_{j in P} R_P(j) / R_all(j),   row_sums[q] = weights[q] * AP_q
// and loss = 1 - sum_q row_sums[q] (weights[q] = 1 / (queries with a relevant reference), 0 for a query
// without one: vsl_ext/ops/smooth_ap_loss.py). grad_sims, where given, is d loss / d sims, with
// w = weights[q] / |P_q|:
// a pair (j in P, k) carries c_jk sigma'(d_jk) / tau to x_k and its negative to x_j, with
//   c_jk = -w N_j / R_all(j)^2 for k in P,   c_jk = w R_P(j) / R_all(j)^2 for k not in P
// (d loss / dR_all + [k in P] d loss / dR_P, taken as one term so that an all-relevant query, whose AP
// is 1, gets a gradient of exactly 0 instead of the difference of two large terms).
//
// Only the pairs with a relevant j are evaluated: O(|P_q| cols) per row, where a rank of every entry
// would take O(cols^2). Memory: O(cols) per CPU thread; on CUDA two rows x cols coefficient buffers.
// Infinities follow sigmoid_math.h (a -inf reference adds 0 to every finite entry's ranks and takes no
// gradient); NaN in a row makes its sum and gradient NaN; a row of weight 0 gets sum 0 and gradient 0.
// Nothing here checks its arguments (see sigmoid_rank.h).
#pragma once
#include <cstdint>

#include "vsl_constants.h"

namespace vsl {

void smooth_ap_loss_cpu(DType dt, const void* sims, const uint8_t* relevant, const double* weights, double* row_sums,
                        void* grad_sims, int64_t rows, int64_t cols, double tau, int threads);

#if VSL_WITH_CUDA
// coef_pos / coef_neg: rows x cols scratch of the element type (the c_jk of each relevant j), needed
// only with grad_sims (null otherwise).
void smooth_ap_loss_cuda(DType dt, const void* sims, const uint8_t* relevant, const double* weights, double* row_sums,
                         void* coef_pos, void* coef_neg, void* grad_sims, int64_t rows, int64_t cols, double tau,
                         int device, uintptr_t stream);
#endif

}  // namespace vsl
