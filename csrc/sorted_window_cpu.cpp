// CPU loop over the sorted-window elements of csrc/sorted_window.h: the host build of exactly the
// code one CUDA thread runs per element, so the GPU algorithm is tested on machines without one.
// (The CPU's own sorted algorithm, in sigmoid_rank_cpu_impl.h, is faster on a CPU.)
#include <stdexcept>

#if VSL_WITH_OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#include "sorted_window.h"

namespace vsl {
namespace {

template <WindowKind Kind, typename T>
void window_rows(const T* v, const T* w, const T* u, const T* wu, const int64_t* uperm, const int64_t* skip, T* out,
                 int64_t rows, int64_t cols, const WindowParams<T>& p, int threads) {
  (void)threads;
#if VSL_WITH_OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : 1)
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * cols;
    for (int64_t i = 0; i < cols; ++i) {
      out[o + uperm[o + i]] = window_element<Kind>(v + o, w ? w + o : nullptr, cols, u[o + i], wu ? wu[o + i] : T(0),
                                                   skip_at<Kind>(skip, o + i, i), p);
    }
  }
}

template <typename T>
void window_sums_t(int kind, const void* v, const void* w, const void* u, const void* wu, const int64_t* uperm,
                   const int64_t* skip, void* out, int64_t rows, int64_t cols, double tau, bool descending,
                   int threads) {
  const auto p = window_params<T>(tau, descending);
  const T* V = static_cast<const T*>(v);
  const T* W = static_cast<const T*>(w);
  const T* U = static_cast<const T*>(u);
  const T* WU = static_cast<const T*>(wu);
  T* O = static_cast<T*>(out);
  switch (static_cast<WindowKind>(kind)) {
    case WindowKind::rank: return window_rows<WindowKind::rank>(V, W, U, WU, uperm, skip, O, rows, cols, p, threads);
    case WindowKind::grad_self:
      return window_rows<WindowKind::grad_self>(V, W, U, WU, uperm, skip, O, rows, cols, p, threads);
    case WindowKind::grad_centre:
      return window_rows<WindowKind::grad_centre>(V, W, U, WU, uperm, skip, O, rows, cols, p, threads);
    case WindowKind::grad_weighted:
      return window_rows<WindowKind::grad_weighted>(V, W, U, WU, uperm, skip, O, rows, cols, p, threads);
  }
  throw std::invalid_argument("window kind must be 0..3");
}

template <typename T>
void rank_ratio_rows_t(const T* sr, const T* cr, T* gs, T* gc, double* partials, int64_t rows, int64_t cols,
                       double grad_scale) {
  const T scale = static_cast<T>(-grad_scale);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * cols;
    double acc = 0;
    for (int64_t j = 0; j < cols; ++j) acc += ratio_element(sr[o + j], cr[o + j], scale, gs + o + j, gc ? gc + o + j : nullptr);
    partials[r] = acc;
  }
}

}  // namespace

void window_sums_cpu(DType dt, int kind, const void* v, const void* w, const void* u, const void* wu,
                     const int64_t* uperm, const int64_t* skip, void* out, int64_t rows, int64_t cols, double tau,
                     bool descending, int threads) {
  if (dt == DType::f32) window_sums_t<float>(kind, v, w, u, wu, uperm, skip, out, rows, cols, tau, descending, threads);
  else window_sums_t<double>(kind, v, w, u, wu, uperm, skip, out, rows, cols, tau, descending, threads);
}

void rank_ratio_rows_cpu(DType dt, const void* sr, const void* cr, void* gs, void* gc, double* partials, int64_t rows,
                         int64_t cols, double grad_scale) {
  if (dt == DType::f32)
    rank_ratio_rows_t(static_cast<const float*>(sr), static_cast<const float*>(cr), static_cast<float*>(gs),
                      static_cast<float*>(gc), partials, rows, cols, grad_scale);
  else
    rank_ratio_rows_t(static_cast<const double*>(sr), static_cast<const double*>(cr), static_cast<double*>(gs),
                      static_cast<double*>(gc), partials, rows, cols, grad_scale);
}

}  // namespace vsl
