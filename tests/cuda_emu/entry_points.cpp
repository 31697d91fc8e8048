// C entry points over the CUDA kernel families of csrc/*.cu as compiled for the emulator, with the
// signatures of their pybind11 bindings in csrc/bindings.cpp (device and stream are accepted and
// ignored: the emulator has one device and runs launches synchronously). Each returns 0, or -1 with
// the error text left for vsl_emu_error().
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "caption_index_cuda.h"
#include "sigmoid_rank.h"
#include "smooth_ap_loss.h"
#include "vsl_loss.h"

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

vsl::RankArgs rank_args(double tau, int descending, int public_code_clamp) {
  vsl::RankArgs a;
  a.tau = tau;
  a.descending = descending != 0;
  a.public_code_clamp = public_code_clamp != 0;
  a.algorithm = vsl::Algorithm::dense;
  return a;
}

template <typename T> T* p(uintptr_t v) { return reinterpret_cast<T*>(v); }

}  // namespace

extern "C" {

const char* vsl_emu_error() { return g_error.c_str(); }

void vsl_emu_fail(const char* what) { g_error = what; }

int vsl_emu_sigmoid_rank_forward(int f64, uintptr_t ranked, uintptr_t compared, uintptr_t ranks, int64_t rows,
                                 int64_t cols, double tau, int descending, int public_code_clamp) {
  return guarded([&] {
    vsl::sigmoid_rank_forward_cuda(dtype(f64), p<const void>(ranked), p<const void>(compared), p<void>(ranks), rows,
                                   cols, rank_args(tau, descending, public_code_clamp), 0, 0);
  });
}

int vsl_emu_sigmoid_rank_backward(int f64, uintptr_t ranked, uintptr_t compared, uintptr_t grad_ranks,
                                  uintptr_t grad_ranked, uintptr_t grad_compared, int64_t rows, int64_t cols,
                                  double tau, int descending, int public_code_clamp) {
  return guarded([&] {
    vsl::sigmoid_rank_backward_cuda(dtype(f64), p<const void>(ranked), p<const void>(compared),
                                    p<const void>(grad_ranks), p<void>(grad_ranked), p<void>(grad_compared), rows, cols,
                                    rank_args(tau, descending, public_code_clamp), 0, 0);
  });
}

int vsl_emu_sigmoid_rank_sorted_sums(int f64, int kind, uintptr_t sorted_values, uintptr_t value_weights,
                                     uintptr_t sorted_centres, uintptr_t centre_weights, uintptr_t centre_columns,
                                     uintptr_t skip_positions, uintptr_t out, int64_t rows, int64_t cols, double tau,
                                     int descending) {
  return guarded([&] {
    vsl::sigmoid_rank_sorted_sums_cuda(dtype(f64), static_cast<vsl::SortedSum>(kind), p<const void>(sorted_values),
                                       p<const void>(value_weights), p<const void>(sorted_centres),
                                       p<const void>(centre_weights), p<const int64_t>(centre_columns),
                                       p<const int64_t>(skip_positions), p<void>(out), rows, cols, tau, descending != 0,
                                       0, 0);
  });
}

int vsl_emu_vsl_loss_ratio_sum(int f64, uintptr_t sims, uintptr_t sims_compared, uintptr_t semantic,
                               uintptr_t semantic_compared, uintptr_t grad_sr, uintptr_t grad_cr, uintptr_t row_sums,
                               int64_t rows, int64_t cols, double tau, int public_code_clamp) {
  return guarded([&] {
    vsl::vsl_loss_ratio_sum_cuda(dtype(f64), p<const void>(sims), p<const void>(sims_compared), p<const void>(semantic),
                                 p<const void>(semantic_compared), p<void>(grad_sr), p<void>(grad_cr),
                                 p<double>(row_sums), rows, cols, rank_args(tau, 1, public_code_clamp), 0, 0);
  });
}

int vsl_emu_vsl_loss_ratio_sum_from_ranks(int f64, uintptr_t sr, uintptr_t cr, uintptr_t grad_sr, uintptr_t grad_cr,
                                          uintptr_t row_sums, int64_t rows, int64_t cols) {
  return guarded([&] {
    vsl::vsl_loss_ratio_sum_from_ranks_cuda(dtype(f64), p<const void>(sr), p<const void>(cr), p<void>(grad_sr),
                                            p<void>(grad_cr), p<double>(row_sums), rows, cols, 0, 0);
  });
}

int vsl_emu_smooth_ap_loss(int f64, uintptr_t sims, uintptr_t relevant, uintptr_t weights, uintptr_t row_sums,
                           uintptr_t coef_pos, uintptr_t coef_neg, uintptr_t grad_sims, int64_t rows, int64_t cols,
                           double tau) {
  return guarded([&] {
    vsl::smooth_ap_loss_cuda(dtype(f64), p<const void>(sims), p<const uint8_t>(relevant), p<const double>(weights),
                             p<double>(row_sums), p<void>(coef_pos), p<void>(coef_neg), p<void>(grad_sims), rows, cols,
                             tau, 0, 0);
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
                                          p<const int64_t>(gptr), G, singleton != 0, sigma, smem_cap, p<float>(scratch),
                                          p<float>(out), 0, 0);
  });
}

}  // extern "C"
