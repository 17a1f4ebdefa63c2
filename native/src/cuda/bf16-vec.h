// Vector helpers for bf16 data in 16-byte loads, shared by the kernels.
#pragma once
#include <cuda_bf16.h>

namespace ms::cuda {

// 8 bf16 values packed in a uint4 (one 16-byte load) -> 8 floats.
__device__ __forceinline__ void toFloat8(const uint4& v, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 p = __bfloat1622float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

}  // namespace ms::cuda
