// Kernels for avx2 (compile flags set in CMakeLists.txt).
#define MS_VEC_BYTES 32
#define MS_ISA_NS avx2
#define MS_ISA_NAME "avx2"
#include "kernels-impl.inc"

namespace ms::cpu {
const Kernels& kernelsAvx2() { return avx2::table(); }
}  // namespace ms::cpu
