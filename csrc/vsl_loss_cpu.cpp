// CPU entry point of the fused VSL kernel (vsl_loss.h): the copy for this CPU's instruction set
// (cpu_isa.h) of vsl_loss_cpu_impl.h.
#include "cpu_isa.h"
#include "vsl_loss.h"

namespace vsl {

void vsl_loss_ratio_sum_cpu(DType dt, const void* sims, const void* sims_compared, const void* semantic,
                            const void* semantic_compared, const VslLossGrads& grads, double* row_sums, int64_t rows,
                            int64_t cols, const RankArgs& args) {
  VSL_CPU_DISPATCH(vsl_loss_ratio_sum, dt, sims, sims_compared, semantic, semantic_compared, grads, row_sums, rows,
                   cols, args);
}

}  // namespace vsl
