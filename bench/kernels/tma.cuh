// Tensor copies and cluster helpers shared by the wgmma product benches of this folder
// (gemm-swiglu-wgmma.cu, gemm-decode-wgmma.cu): 2-d and 3-d tensor copies completing on an mbarrier,
// the block's rank in its cluster, a full cluster barrier, bf16 tensor maps (128-byte swizzled), and
// wgmma m64nNk16 with both operands K-major in shared memory for N = 8 .. 256 (wgmma-n.cuh).
#pragma once
#include <string>

#include "cuda/check.h"
#include "cuda/wgmma-ptx.h"

namespace ms::cuda::bench_tma {

// The box of a 2-d map at (c0 inner, c1 outer) -> dst, completing on bar.
__device__ __forceinline__ void tmaLoad2(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smemAddr(bar))
      : "memory");
}
// The box of a 3-d map at (c0, c1, c2) -> dst, completing on bar.
__device__ __forceinline__ void tmaLoad3(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          smemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smemAddr(bar))
      : "memory");
}
__device__ __forceinline__ uint32_t clusterRank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ __forceinline__ void clusterSync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// A bf16 tensor of `rank` dimensions (dim[0] contiguous; stride[i]: bytes between steps of dim i + 1)
// as a tensor map with boxes `box`, 128-byte swizzled.
inline CUtensorMap mapBf16(const bf16* base, int rank, const cuuint64_t* dim, const cuuint64_t* stride,
                           const cuuint32_t* box) {
  CUtensorMap m;
  const cuuint32_t step[5] = {1, 1, 1, 1, 1};
  const CUresult r = tensorMapEncoder()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, cuuint32_t(rank), const_cast<bf16*>(base),
                                       dim, stride, box, step, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                       CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw CudaError("cuTensorMapEncodeTiled (" + std::to_string(rank) + "-d) failed (" + std::to_string(int(r)) + ")", false);
  return m;
}
// A row-major (outer, inner) bf16 matrix as a 2-d tensor map with boxes (boxInner, boxOuter).
inline CUtensorMap map2d(const bf16* base, int inner, int outer, int boxInner, int boxOuter) {
  const cuuint64_t dim[2] = {cuuint64_t(inner), cuuint64_t(outer)}, stride[1] = {cuuint64_t(inner) * 2};
  const cuuint32_t box[2] = {cuuint32_t(boxInner), cuuint32_t(boxOuter)};
  return mapBf16(base, 2, dim, stride, box);
}

}  // namespace ms::cuda::bench_tma
