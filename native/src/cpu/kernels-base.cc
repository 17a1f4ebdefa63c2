// Kernels for base (compile flags set in CMakeLists.txt).
#define MS_VEC_BYTES 16
#define MS_ISA_NS base
#define MS_ISA_NAME "base"
#include "kernels-impl.inc"

namespace ms::cpu {
const Kernels& kernelsBase() { return base::table(); }
}  // namespace ms::cpu
