// CPU entry points: the baseline (x86-64 SSE2 / any other architecture) copy of the kernels, and
// the run-time choice between it and the AVX2+FMA copy built from sigmoid_rank_cpu_avx2.cpp.
#define VSL_CPU_ISA baseline
#include "sigmoid_rank_cpu_impl.h"
#undef VSL_CPU_ISA

#include "sigmoid_rank_cpu_isa.h"

namespace vsl {
namespace {
bool has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}
}  // namespace

const char* cpu_isa() { return has_avx2() ? "avx2" : "baseline"; }

#if defined(__x86_64__)
#define VSL_CPU_DISPATCH(fn, ...) (has_avx2() ? avx2::fn(__VA_ARGS__) : baseline::fn(__VA_ARGS__))
#else
#define VSL_CPU_DISPATCH(fn, ...) baseline::fn(__VA_ARGS__)
#endif

void rank_forward_cpu(DType dt, const void* x, const void* y, void* out, int64_t rows, int64_t cols,
                      const RankArgs& args) {
  VSL_CPU_DISPATCH(rank_forward, dt, x, y, out, rows, cols, args);
}

void rank_backward_cpu(DType dt, const void* x, const void* y, const void* g, void* gx, void* gy, int64_t rows,
                       int64_t cols, const RankArgs& args) {
  VSL_CPU_DISPATCH(rank_backward, dt, x, y, g, gx, gy, rows, cols, args);
}

void vsl_forward_cpu(DType dt, const void* sx, const void* sy, const void* cx, const void* cy, void* gs, void* gc,
                     double* partials, int64_t rows, int64_t cols, double grad_scale, const RankArgs& args) {
  VSL_CPU_DISPATCH(vsl_forward, dt, sx, sy, cx, cy, gs, gc, partials, rows, cols, grad_scale, args);
}

}  // namespace vsl
