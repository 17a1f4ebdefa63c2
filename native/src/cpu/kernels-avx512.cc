// Kernels for avx512 (compile flags set in CMakeLists.txt).
#define MS_VEC_BYTES 64
#define MS_ISA_NS avx512
#define MS_ISA_NAME "avx512"
#include "kernels-impl.inc"

namespace ms::cpu {
const Kernels& kernelsAvx512() { return avx512::table(); }
}  // namespace ms::cpu
