// The baseline copy of the CPU kernels (x86-64 SSE2, or any other architecture).
#define VSL_CPU_ISA baseline
#include "sigmoid_rank_cpu_impl.h"
#include "smooth_ap_loss_cpu_impl.h"
#include "vsl_loss_cpu_impl.h"
