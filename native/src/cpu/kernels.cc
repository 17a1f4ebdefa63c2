#include "kernels.h"


namespace ms::cpu {

const Kernels& kernelsFor(CpuIsa isa) {
  if (isa == CpuIsa::kBase) return kernelsBase();
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool hasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool hasAvx512 = hasAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  if (hasAvx512 && isa != CpuIsa::kAvx2) return kernelsAvx512();
  if (hasAvx2) return kernelsAvx2();
#endif
  return kernelsBase();
}

}  // namespace ms::cpu
