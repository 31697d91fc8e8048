// The CPU kernels exist once per instruction set (cpu_kernels_baseline.cpp, cpu_kernels_avx2.cpp);
// the entry points of sigmoid_rank_cpu.cpp, vsl_loss_cpu.cpp and smooth_ap_loss_cpu.cpp pick one at run time.
#pragma once
#include "sigmoid_rank.h"
#include "smooth_ap_loss.h"
#include "vsl_loss.h"

#define VSL_DECLARE_CPU_KERNELS(ISA)                                                                               \
  namespace vsl {                                                                                                  \
  namespace ISA {                                                                                                  \
  void sigmoid_rank_forward(DType, const void*, const void*, void*, int64_t, int64_t, const RankArgs&);            \
  void sigmoid_rank_backward(DType, const void*, const void*, const void*, void*, void*, int64_t, int64_t,         \
                             const RankArgs&);                                                                     \
  void vsl_loss_ratio_sum(DType, const void*, const void*, const void*, const void*, const VslLossGrads&, double*, \
                          int64_t, int64_t, const RankArgs&);                                                      \
  void smooth_ap_loss(DType, const void*, const uint8_t*, const double*, double*, void*, int64_t, int64_t, double, \
                      int);                                                                                        \
  }                                                                                                                \
  }

VSL_DECLARE_CPU_KERNELS(baseline)
#if defined(__x86_64__)
VSL_DECLARE_CPU_KERNELS(avx2)
#endif

namespace vsl {
bool cpu_has_avx2();  // AVX2 and FMA (cpu_isa.cpp)
}

#if defined(__x86_64__)
#define VSL_CPU_DISPATCH(fn, ...) \
  (::vsl::cpu_has_avx2() ? ::vsl::avx2::fn(__VA_ARGS__) : ::vsl::baseline::fn(__VA_ARGS__))
#else
#define VSL_CPU_DISPATCH(fn, ...) ::vsl::baseline::fn(__VA_ARGS__)
#endif
