// Entry points of the caption index's CUDA kernels (csrc/caption_index_cuda.cu): per-batch Gram
// matrices (tfidf, phrases) and CIDEr-D means over the index's CSR arrays on the device, the CUDA
// twins of gram_cpu and cider_matrix_cpu (csrc/caption_index.h). Pointers are device pointers; the
// kernels trust every id in them (vsl_ext/caption_index.py checks the feature ids once before the
// upload and the row ids of every batch). smem_cap: rows of up to that many entries are staged in
// shared memory (0: none; at most kSmemRowCap, chosen by the caller from the batch's longest row).
#pragma once
#include <cstdint>
#include <vector>

namespace vsl {
namespace caption_index {

void gram_cuda(const int64_t* indptr, const int32_t* indices, const float* data, const int64_t* rows, int64_t B,
               int smem_cap, float* out, int device, uintptr_t stream);
// singleton: every group holds one caption, so the caption matrix is the output (scratch unused);
// otherwise scratch holds Pb x Pb floats.
void cider_matrix_cuda(const int64_t* indptr, const int32_t* indices, const float* data, const float* inv_norm,
                       const int32_t* lens, const std::vector<int64_t>& bounds, const int64_t* caps, int64_t Pb,
                       const int64_t* gptr, int64_t G, bool singleton, double sigma, int smem_cap, float* scratch,
                       float* out, int device, uintptr_t stream);

}  // namespace caption_index
}  // namespace vsl
