#include "kernels.h"

#include <cstdlib>
#include <cstring>

namespace ms::cpu {

// Picks the widest instruction set this CPU runs; MS_CPU_ISA=base|avx2|avx512 forces one (tests).
const Kernels& kernels() {
  static const Kernels& chosen = []() -> const Kernels& {
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool hasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    bool hasAvx512 = hasAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512vl");
    const char* force = std::getenv("MS_CPU_ISA");
    if (force && std::strcmp(force, "base") == 0) return kernelsBase();
    if (force && std::strcmp(force, "avx2") == 0 && hasAvx2) return kernelsAvx2();
    if (hasAvx512 && !(force && std::strcmp(force, "avx2") == 0)) return kernelsAvx512();
    if (hasAvx2) return kernelsAvx2();
#endif
    return kernelsBase();
  }();
  return chosen;
}

}  // namespace ms::cpu
