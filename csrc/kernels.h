// Entry points of the sigmoid-rank kernel family, shared by the CPU and CUDA implementations.
//
// All matrices are dense, row-major and contiguous; the Python layer validates shapes, dtypes and
// devices before any pointer gets here. "Cross" ranks generalise the row rank:
//
//   out[b, c] = 1 + sum_{a != c} sigma(sgn * (y[b, a] - x[b, c]) / tau)     sgn = +1 descending
//
// With y == nullptr, y is x and this is the ordinary row rank R(x). The published VSL code ranks S
// against its transpose, i.e. x = S, y = S^T.
#pragma once
#include <cstdint>
#include <string>

namespace vsl {

enum class DType { f32, f64 };

enum class RankAlgo : int { automatic = 0, dense = 1, sorted = 2 };

struct RankArgs {
  double tau = 1e-3;
  bool descending = true;
  double clamp_at = 0.0;  // > 0: clamp sigma's argument to [-clamp_at, clamp_at] (published code: 50)
  RankAlgo algo = RankAlgo::automatic;
  int threads = 1;        // CPU only
};

// out (rows x cols) = cross rank of x against y (y == nullptr: row rank of x).
void rank_forward_cpu(DType dt, const void* x, const void* y, void* out, int64_t rows, int64_t cols,
                      const RankArgs& args);

// Given g = dL/dout: y == nullptr -> gx = dL/dx (gy unused). Otherwise gx = dL/dx and gy = dL/dy,
// both rows x cols in the layout of x and y.
void rank_backward_cpu(DType dt, const void* x, const void* y, const void* g, void* gx, void* gy,
                       int64_t rows, int64_t cols, const RankArgs& args);

// Fused VSL forward over rows x cols blocks: ranks SR = rank(sx vs sy), CR = rank(cx vs cy) one row
// at a time, writes partials[i] = sum_j min(SR_ij, CR_ij) / max(SR_ij, CR_ij) (float64) and the
// gradients of L = 1 - grad_scale * sum(partials): gs = dL/dSR, gc = dL/dCR (if gc != nullptr).
// For a whole n x n batch grad_scale = 1 / n^2; row shards of a global batch use 1 / N^2.
void vsl_forward_cpu(DType dt, const void* sx, const void* sy, const void* cx, const void* cy, void* gs,
                     void* gc, double* partials, int64_t rows, int64_t cols, double grad_scale,
                     const RankArgs& args);

// Sorted-window sums over rows that arrive sorted ascending (csrc/sorted_window.h), for every
// row r and position i: out[r, uperm[r, i]] = element `kind` of centre u[r, i] (weight wu[r, i])
// against the sorted row v[r, :] (weights w[r, :]), leaving out position skip[r, i] of v.
// w and wu may be null where the kind does not read them; skip null leaves out the centre's own
// position for the rank kind (u is v: a row rank) and nothing for the gradient kinds. kind: WindowKind.
void window_sums_cpu(DType dt, int kind, const void* v, const void* w, const void* u, const void* wu,
                     const int64_t* uperm, const int64_t* skip, void* out, int64_t rows, int64_t cols,
                     double tau, bool descending, int threads);

// The VSL entries from the ranks: partials[i] = sum_j min(SR, CR) / max(SR, CR) of row i and the
// gradients of L = 1 - grad_scale * sum(partials) with respect to SR (gs) and CR (gc, may be null).
void rank_ratio_rows_cpu(DType dt, const void* sr, const void* cr, void* gs, void* gc, double* partials,
                         int64_t rows, int64_t cols, double grad_scale);

bool cuda_compiled();
const char* cpu_isa();  // instruction set of the CPU kernels in use: "avx2" or "baseline"
// What the CUDA runtime the kernels were built with sees: device count, CUDA versions as
// 1000 * major + 10 * minor (0 if unknown), and the runtime's error when it sees no device.
struct CudaStatus {
  int devices = 0;
  int runtime_version = 0;
  int driver_version = 0;
  std::string error;
};
CudaStatus cuda_status();

#if VSL_WITH_CUDA
void rank_forward_cuda(DType dt, const void* x, const void* y, void* out, int64_t rows, int64_t cols,
                       const RankArgs& args, int device, uintptr_t stream);
void rank_backward_cuda(DType dt, const void* x, const void* y, const void* g, void* gx, void* gy,
                        int64_t rows, int64_t cols, const RankArgs& args, int device, uintptr_t stream);
void vsl_forward_cuda(DType dt, const void* sx, const void* sy, const void* cx, const void* cy, void* gs,
                      void* gc, double* partials, int64_t rows, int64_t cols, double grad_scale,
                      const RankArgs& args, int device, uintptr_t stream);
void window_sums_cuda(DType dt, int kind, const void* v, const void* w, const void* u, const void* wu,
                      const int64_t* uperm, const int64_t* skip, void* out, int64_t rows, int64_t cols,
                      double tau, bool descending, int device, uintptr_t stream);
void rank_ratio_rows_cuda(DType dt, const void* sr, const void* cr, void* gs, void* gc, double* partials,
                          int64_t rows, int64_t cols, double grad_scale, int device, uintptr_t stream);
#endif

}  // namespace vsl
