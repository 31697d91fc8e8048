// What the native module was built with, and what the CUDA runtime it was built with sees now
// (vsl_ext.build_info()).
#pragma once
#include <string>

namespace vsl {

bool cuda_compiled();
const char* cpu_isa();  // instruction set of the CPU kernels in use: "avx2" or "baseline" (cpu_isa.cpp)

// Device count, CUDA versions as 1000 * major + 10 * minor (0 if unknown), and the runtime's error
// when it sees no device (cuda_status.cu; all zero in a build without CUDA).
struct CudaStatus {
  int devices = 0;
  int runtime_version = 0;
  int driver_version = 0;
  std::string error;
};
CudaStatus cuda_status();

}  // namespace vsl
