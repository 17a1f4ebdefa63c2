// RMSNorm's arithmetic, in one place for the two kernels that normalise a row of the residual
// stream: rmsNormKernel (elementwise.cu; one block of kNormThreads threads per row) and the skinny
// product with the norm in its prologue (skinny-gemm.cu; 128 threads, each playing two of those
// threads). Both take the same sums in the same order, so both give the same bf16 row, bit for
// bit. Device code only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace ms::cuda::norm {

constexpr int kNormThreads = 256;  // rmsNormKernel's block: thread v sums float4 v, v + 256, ...

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// A thread's share of the sum of squares: one float4 of the row.
__device__ __forceinline__ float squares(float4 v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }

// The row's scale from the total sum of squares.
__device__ __forceinline__ float invRms(float total, int hidden, float eps) {
  return rsqrtf(total / float(hidden) + eps);
}

// Four normalised elements, bf16: weight * (x * scale).
__device__ __forceinline__ void scale4(float4 v, float4 w, float r, __nv_bfloat162* o) {
  o[0] = __floats2bfloat162_rn(w.x * (v.x * r), w.y * (v.y * r));
  o[1] = __floats2bfloat162_rn(w.z * (v.z * r), w.w * (v.w * r));
}

// The final sum over the kNormThreads / 32 warp sums (part[0..7]) as rmsNormKernel's warp 0 takes
// it; every lane returns lane 0's total.
__device__ __forceinline__ float sumParts(const float* part) {
  const int lane = threadIdx.x % 32;
  float w = lane < kNormThreads / 32 ? part[lane] : 0.f;
  return __shfl_sync(0xffffffffu, warpSum(w), 0);
}

}  // namespace ms::cuda::norm
