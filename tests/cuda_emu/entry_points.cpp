// C entry points over the CUDA kernel families of csrc/*.cu as compiled for the emulator, with the
// signatures of their pybind11 bindings in csrc/bindings.cpp (device and stream are accepted and
// ignored: the emulator has one device and runs launches synchronously). Each returns 0, or -1 with
// the error text left for vsl_emu_error().
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "caption_index_cuda.h"
#include "kernels.h"

namespace {

std::string g_error;

template <typename F> int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    g_error = e.what();
    return -1;
  }
}

vsl::DType dtype(int f64) { return f64 ? vsl::DType::f64 : vsl::DType::f32; }

vsl::RankArgs rank_args(double tau, int descending, double clamp_at, int algo) {
  vsl::RankArgs a;
  a.tau = tau;
  a.descending = descending != 0;
  a.clamp_at = clamp_at;
  a.algo = static_cast<vsl::RankAlgo>(algo);
  return a;
}

template <typename T> T* p(uintptr_t v) { return reinterpret_cast<T*>(v); }

}  // namespace

extern "C" {

const char* vsl_emu_error() { return g_error.c_str(); }

void vsl_emu_fail(const char* what) { g_error = what; }

int vsl_emu_rank_forward(int f64, uintptr_t x, uintptr_t y, uintptr_t out, int64_t rows, int64_t cols, double tau,
                         int descending, double clamp_at, int algo) {
  return guarded([&] {
    vsl::rank_forward_cuda(dtype(f64), p<const void>(x), p<const void>(y), p<void>(out), rows, cols,
                           rank_args(tau, descending, clamp_at, algo), 0, 0);
  });
}

int vsl_emu_rank_backward(int f64, uintptr_t x, uintptr_t y, uintptr_t g, uintptr_t gx, uintptr_t gy, int64_t rows,
                          int64_t cols, double tau, int descending, double clamp_at, int algo) {
  return guarded([&] {
    vsl::rank_backward_cuda(dtype(f64), p<const void>(x), p<const void>(y), p<const void>(g), p<void>(gx),
                            p<void>(gy), rows, cols, rank_args(tau, descending, clamp_at, algo), 0, 0);
  });
}

int vsl_emu_vsl_forward(int f64, uintptr_t sx, uintptr_t sy, uintptr_t cx, uintptr_t cy, uintptr_t gs, uintptr_t gc,
                        uintptr_t partials, int64_t rows, int64_t cols, double grad_scale, double tau,
                        double clamp_at, int algo) {
  return guarded([&] {
    vsl::vsl_forward_cuda(dtype(f64), p<const void>(sx), p<const void>(sy), p<const void>(cx), p<const void>(cy),
                          p<void>(gs), p<void>(gc), p<double>(partials), rows, cols, grad_scale,
                          rank_args(tau, 1, clamp_at, algo), 0, 0);
  });
}

int vsl_emu_window_sums(int f64, int kind, uintptr_t v, uintptr_t w, uintptr_t u, uintptr_t wu, uintptr_t uperm,
                        uintptr_t skip, uintptr_t out, int64_t rows, int64_t cols, double tau, int descending) {
  return guarded([&] {
    vsl::window_sums_cuda(dtype(f64), kind, p<const void>(v), p<const void>(w), p<const void>(u), p<const void>(wu),
                          p<const int64_t>(uperm), p<const int64_t>(skip), p<void>(out), rows, cols, tau,
                          descending != 0, 0, 0);
  });
}

int vsl_emu_rank_ratio_rows(int f64, uintptr_t sr, uintptr_t cr, uintptr_t gs, uintptr_t gc, uintptr_t partials,
                            int64_t rows, int64_t cols, double grad_scale) {
  return guarded([&] {
    vsl::rank_ratio_rows_cuda(dtype(f64), p<const void>(sr), p<const void>(cr), p<void>(gs), p<void>(gc),
                              p<double>(partials), rows, cols, grad_scale, 0, 0);
  });
}

int vsl_emu_caption_index_gram_cuda(uintptr_t indptr, uintptr_t indices, uintptr_t data, uintptr_t rows, int64_t B,
                                    int smem_cap, uintptr_t out) {
  return guarded([&] {
    vsl::caption_index::gram_cuda(p<const int64_t>(indptr), p<const int32_t>(indices), p<const float>(data),
                                  p<const int64_t>(rows), B, smem_cap, p<float>(out), 0, 0);
  });
}

int vsl_emu_caption_index_cider_matrix_cuda(uintptr_t indptr, uintptr_t indices, uintptr_t data, uintptr_t inv_norm,
                                            uintptr_t lens, const int64_t* bounds, int64_t nbounds, uintptr_t caps,
                                            int64_t Pb, uintptr_t gptr, int64_t G, int singleton, double sigma,
                                            int smem_cap, uintptr_t scratch, uintptr_t out) {
  return guarded([&] {
    vsl::caption_index::cider_matrix_cuda(p<const int64_t>(indptr), p<const int32_t>(indices), p<const float>(data),
                                          p<const float>(inv_norm), p<const int32_t>(lens),
                                          std::vector<int64_t>(bounds, bounds + nbounds), p<const int64_t>(caps), Pb,
                                          p<const int64_t>(gptr), G, singleton != 0, sigma, smem_cap,
                                          p<float>(scratch), p<float>(out), 0, 0);
  });
}

}  // extern "C"
