// The AVX2+FMA copy of the CPU kernels (CMakeLists.txt compiles this file with -mavx2 -mfma).
#if defined(__x86_64__)
#define VSL_CPU_ISA avx2
#include "sigmoid_rank_cpu_impl.h"
#include "smooth_ap_loss_cpu_impl.h"
#include "vsl_loss_cpu_impl.h"
#endif
