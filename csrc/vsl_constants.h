// Every constant that the kernels and the Python layer share, defined here once; bindings.cpp
// exports them to Python as attributes of vsl_ext._C (ALGORITHMS, SATURATION, PUBLIC_CODE_CLAMP,
// CPU_SORTED_FROM_COLS, CUDA_SORTED_FROM_COLS, CUDA_SORTED_MAX_WINDOW_FRACTION, SORTED_SUMS).
#pragma once
#include <cstdint>

namespace vsl {

// The element type of a kernel call's matrices (the ops compute float16/bfloat16 in float32).
enum class DType { f32, f64 };

// The algorithm of a sigmoid-rank sum (public names "auto", "dense", "sorted"):
//   dense : every pair of a row gets a sigmoid, O(cols^2) per row;
//   sorted: each row is sorted, and only the pairs inside the saturation window (|difference| <=
//           Saturation<T> tau) are evaluated; the pairs outside contribute exactly 0 or 1 and are
//           counted by position. The CPU and CUDA implementations differ (docs/kernels.md);
//   automatic: sorted on CPU from kCpuSortedFromCols columns; on CUDA per matrix from
//           kCudaSortedFromCols columns when a sample of rows puts at most
//           kCudaSortedMaxWindowFraction of its pairs inside the window (vsl_ext/kernels/cuda.py).
enum class Algorithm : int { automatic = 0, dense = 1, sorted = 2 };

constexpr int64_t kCpuSortedFromCols = 64;  // benchmarks/bench_sigmoid_rank.py measures the crossover
// Estimates, not yet measured on a GPU (the large-n and window sections of the CUDA benchmark report
// measure the crossover).
constexpr int64_t kCudaSortedFromCols = 2048;
constexpr double kCudaSortedMaxWindowFraction = 0.5;

// The saturation window's half width in units of tau: beyond it sigma(d) is exactly 0 or 1 after
// rounding a rank sum (>= 1) in T, and sigma'(d) is 0: sigma(-30) = 9.4e-14 (float eps 6e-8),
// sigma(-50) = 1.9e-22 (double eps 1.1e-16).
template <typename T> struct Saturation;
template <> struct Saturation<float> {
  static constexpr float value = 30.0f;
};
template <> struct Saturation<double> {
  static constexpr double value = 50.0;
};

// The published VSL code clamps the sigmoid's argument to [-50, 50] (the public-code variant).
constexpr double kPublicCodeClamp = 50.0;
// The sorted algorithm ignores the clamp inside its window, which is exact only while the clamp
// lies at or beyond the window.
static_assert(kPublicCodeClamp >= Saturation<float>::value && kPublicCodeClamp >= Saturation<double>::value,
              "the public-code clamp must lie beyond the saturation window");

// What one element of the CUDA sorted implementation sums (csrc/sigmoid_rank_sorted_cuda.cu), with
// d_a = (v_a - u) k, k = +-1 / tau (descending: +), v the sorted compared row, u the centre:
enum class SortedSum : int {
  rank = 0,           // 1 + sum_{a != skip} sigma(d_a)
  row_rank_grad = 1,  // k sum_a sigma'(d_a) (w_a - w_u)            (row rank: the a = centre term is 0)
  ranked_grad = 2,    // -k w_u sum_{a != skip} sigma'(d_a)          (rank against compared rows, ranked side)
  compared_grad = 3,  // k sum_{a != skip} sigma'(d_a) w_a           (rank against compared rows, compared side)
};

}  // namespace vsl
