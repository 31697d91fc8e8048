// The CPU kernels exist once per instruction set; sigmoid_rank_cpu.cpp picks one at run time.
#pragma once
#include "kernels.h"

#define VSL_DECLARE_CPU_KERNELS(ISA)                                                                       \
  namespace vsl {                                                                                          \
  namespace ISA {                                                                                          \
  void rank_forward(DType, const void*, const void*, void*, int64_t, int64_t, const RankArgs&);           \
  void rank_backward(DType, const void*, const void*, const void*, void*, void*, int64_t, int64_t,        \
                     const RankArgs&);                                                                     \
  void vsl_forward(DType, const void*, const void*, const void*, const void*, void*, void*, double*,       \
                   int64_t, int64_t, double, const RankArgs&);                                             \
  }                                                                                                        \
  }

VSL_DECLARE_CPU_KERNELS(baseline)
#if defined(__x86_64__)
VSL_DECLARE_CPU_KERNELS(avx2)
#endif
