// What the CUDA runtime the kernels were built with sees (build_info.h).
#include <cuda_runtime.h>

#include <string>

#include "build_info.h"

namespace vsl {

CudaStatus cuda_status() {
  CudaStatus st;
  cudaRuntimeGetVersion(&st.runtime_version);
  cudaDriverGetVersion(&st.driver_version);  // 0 when no driver is installed
  const cudaError_t err = cudaGetDeviceCount(&st.devices);
  if (err != cudaSuccess) {
    st.devices = 0;
    st.error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
  }
  return st;
}

}  // namespace vsl
