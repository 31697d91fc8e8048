// CPU entry point of the fused VSL kernel (vsl_loss.h): the copy for this CPU's instruction set
// (cpu_isa.h) of vsl_loss_cpu_impl.h.
#include <algorithm>

#include "cpu_isa.h"
#include "cpu_parallel.h"
#include "vsl_loss.h"

namespace vsl {

void vsl_loss_ratio_sum_cpu(DType dt, const void* sims, const void* sims_compared, const void* semantic,
                            const void* semantic_compared, const VslLossGrads& grads, double* row_sums, int64_t rows,
                            int64_t cols, const RankArgs& args) {
  VSL_CPU_DISPATCH(vsl_loss_ratio_sum, dt, sims, sims_compared, semantic, semantic_compared, grads, row_sums, rows,
                   cols, args);
}

namespace {

constexpr int64_t kScaleBlock = int64_t(1) << 16;  // elements per task of scale_cpu (256 KB of float32)

template <typename T> struct Scale {
  const T* data;
  T* out;
  int64_t count;
  T factor;
  static void block(void* context, int64_t b) {
    const Scale& s = *static_cast<const Scale*>(context);
    const int64_t end = std::min(s.count, (b + 1) * kScaleBlock);
    for (int64_t i = b * kScaleBlock; i < end; ++i) s.out[i] = s.data[i] * s.factor;
  }
};

template <typename T> void scale(const T* data, T* out, int64_t count, T factor, int threads) {
  Scale<T> s{data, out, count, factor};
  const int64_t blocks = (count + kScaleBlock - 1) / kScaleBlock;
  // a helper is worth waking for 2^19 elements or more (about 0.1 ms of memory traffic)
  parallel_rows(blocks, kernel_threads(threads, blocks, count), &Scale<T>::block, &s);
}

}  // namespace

void scale_cpu(DType dt, const void* data, void* out, int64_t count, double factor, int threads) {
  if (dt == DType::f32)
    scale(static_cast<const float*>(data), static_cast<float*>(out), count, static_cast<float>(factor), threads);
  else scale(static_cast<const double*>(data), static_cast<double*>(out), count, factor, threads);
}

}  // namespace vsl
