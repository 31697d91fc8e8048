// CPU entry points of the sigmoid_rank kernels (sigmoid_rank.h): the copy for this CPU's
// instruction set (cpu_isa.h) of sigmoid_rank_cpu_impl.h.
#include "cpu_isa.h"
#include "sigmoid_rank.h"

namespace vsl {

void sigmoid_rank_forward_cpu(DType dt, const void* ranked, const void* compared, void* ranks, int64_t rows,
                              int64_t cols, const RankArgs& args) {
  VSL_CPU_DISPATCH(sigmoid_rank_forward, dt, ranked, compared, ranks, rows, cols, args);
}

void sigmoid_rank_backward_cpu(DType dt, const void* ranked, const void* compared, const void* grad_ranks,
                               void* grad_ranked, void* grad_compared, int64_t rows, int64_t cols,
                               const RankArgs& args) {
  VSL_CPU_DISPATCH(sigmoid_rank_backward, dt, ranked, compared, grad_ranks, grad_ranked, grad_compared, rows, cols,
                   args);
}

}  // namespace vsl
