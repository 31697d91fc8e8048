// Which copy of the CPU kernels runs (cpu_isa.h): the AVX2+FMA one where the CPU has both.
#include "cpu_isa.h"

#include "build_info.h"

namespace vsl {

bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

const char* cpu_isa() { return cpu_has_avx2() ? "avx2" : "baseline"; }

}  // namespace vsl
