// Entry points of the sigmoid_rank kernels (CPU: sigmoid_rank_cpu.cpp, CUDA: sigmoid_rank_cuda.cu
// and sigmoid_rank_sorted_cuda.cu), called through bindings.cpp by vsl_ext/kernels/{cpu,cuda}.py.
//
// Every matrix is rows x cols, dense, row-major and contiguous, of the element type `dt`, on the one
// device of the call. Nothing here checks its arguments: the registered ops (vsl_ext/ops/) check
// dtypes, shapes, devices, layouts and scalar ranges before any pointer gets here.
//
// The rank of `ranked` against `compared` generalises the row rank:
//
//   ranks[r, c] = 1 + sum_{a != c} sigma(sgn * (compared[r, a] - ranked[r, c]) / tau)   sgn = +1 descending
//
// With compared == nullptr, compared is ranked itself and this is the row rank R(ranked) of
// vsl_ext.sigmoid_rank. The public-code variant of the VSL ranks S against S^T (compared = S^T, made
// contiguous by the caller) with the published code's clamp (RankArgs::public_code_clamp).
#pragma once
#include <cstdint>

#include "vsl_constants.h"

namespace vsl {

struct RankArgs {
  double tau = 1e-3;               // > 0, with 1 / tau finite in the element type
  bool descending = true;
  bool public_code_clamp = false;  // clamp sigma's argument to [-kPublicCodeClamp, kPublicCodeClamp]
  Algorithm algorithm = Algorithm::automatic;
  int threads = 1;                 // CPU only
};

void sigmoid_rank_forward_cpu(DType dt, const void* ranked, const void* compared, void* ranks, int64_t rows,
                              int64_t cols, const RankArgs& args);

// Given grad_ranks = dL/dranks: grad_ranked = dL/dranked and, if compared != nullptr,
// grad_compared = dL/dcompared (in compared's layout). For the row rank (compared == nullptr)
// grad_ranked is the whole gradient and grad_compared is not touched.
void sigmoid_rank_backward_cpu(DType dt, const void* ranked, const void* compared, const void* grad_ranks,
                               void* grad_ranked, void* grad_compared, int64_t rows, int64_t cols,
                               const RankArgs& args);

#if VSL_WITH_CUDA
// The dense algorithm on CUDA (args.algorithm is not read: vsl_ext/kernels/cuda.py takes the sorted
// algorithm through sigmoid_rank_sorted_sums_cuda). `stream` is a cudaStream_t of `device`.
void sigmoid_rank_forward_cuda(DType dt, const void* ranked, const void* compared, void* ranks, int64_t rows,
                               int64_t cols, const RankArgs& args, int device, uintptr_t stream);
void sigmoid_rank_backward_cuda(DType dt, const void* ranked, const void* compared, const void* grad_ranks,
                                void* grad_ranked, void* grad_compared, int64_t rows, int64_t cols,
                                const RankArgs& args, int device, uintptr_t stream);

// The sorted algorithm on CUDA, one element per thread, over rows that arrive sorted ascending
// (vsl_ext/kernels/cuda.py sorts them with torch.sort). For every row r and sorted position i:
//   out[r, centre_columns[r, i]] = the SortedSum `kind` of centre sorted_centres[r, i] (weight
//   centre_weights[r, i]) against the sorted row sorted_values[r, :] (weights value_weights[r, :]),
//   leaving out position skip_positions[r, i] of sorted_values (-1: none).
// value_weights / centre_weights may be null where the kind does not read them; skip_positions null
// leaves out the centre's own position for SortedSum::rank (the centres are the values: a row rank)
// and nothing for the gradient kinds.
void sigmoid_rank_sorted_sums_cuda(DType dt, SortedSum kind, const void* sorted_values, const void* value_weights,
                                   const void* sorted_centres, const void* centre_weights,
                                   const int64_t* centre_columns, const int64_t* skip_positions, void* out,
                                   int64_t rows, int64_t cols, double tau, bool descending, int device,
                                   uintptr_t stream);
#endif

}  // namespace vsl
