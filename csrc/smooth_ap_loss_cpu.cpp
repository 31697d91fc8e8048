// CPU entry point of the fused Smooth-AP kernel (smooth_ap_loss.h): the copy for this CPU's instruction
// set (cpu_isa.h) of smooth_ap_loss_cpu_impl.h.
#include "cpu_isa.h"
#include "smooth_ap_loss.h"

namespace vsl {

void smooth_ap_loss_cpu(DType dt, const void* sims, const uint8_t* relevant, const double* weights, double* row_sums,
                        void* grad_sims, int64_t rows, int64_t cols, double tau, int threads) {
  VSL_CPU_DISPATCH(smooth_ap_loss, dt, sims, relevant, weights, row_sums, grad_sims, rows, cols, tau, threads);
}

}  // namespace vsl
