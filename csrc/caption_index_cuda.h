// Entry points of the caption index's CUDA kernels (csrc/caption_index_cuda.cu): per-batch TF-IDF
// Gram matrices and CIDEr-D means over the index's CSR arrays on the device. Pointers are device
// pointers; vsl_ext/captions.py chooses smem_cap (rows up to that many entries are staged in
// shared memory; 0: none) and checks every argument before a launch.
#pragma once
#include <cstdint>
#include <vector>

namespace vsl {
namespace caption {

void gram_cuda(const int64_t* indptr, const int32_t* indices, const float* data, const int64_t* rows, int64_t B,
               int smem_cap, float* out, int device, uintptr_t stream);
void cider_cuda(const int64_t* indptr, const int32_t* indices, const float* data, const float* inv_norm,
                const int32_t* lens, const std::vector<int64_t>& bounds, const int64_t* caps, int64_t Pb,
                const int64_t* gptr, int64_t G, bool singleton, double sigma, int smem_cap, float* scratch,
                float* out, int device, uintptr_t stream);

}  // namespace caption
}  // namespace vsl
