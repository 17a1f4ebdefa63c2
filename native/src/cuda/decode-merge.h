// Device helper shared by the decode attention kernels: the last split block of a (token, KV
// head) to finish merges every split's unnormalised partial into the bf16 output.
#pragma once
#include <cfloat>

#include "kernels.h"

namespace ms::cuda {

// Call after this block wrote its partials (partO, partML) for heads [g * rep, (g + 1) * rep).
// Every thread of the block must call it. slot0: partial slot of head g * rep, split 0.
__device__ __forceinline__ void mergeSplitsIfLast(const DecodeAttentionArgs& a, int qi, int g, int rep, int D,
                                                  int numSplits, int64_t slot0, int tok, int* smIsLast) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t* counter = a.counters + int64_t(qi) * a.kv.kvHeads + g;
    *smIsLast = atomicAdd(counter, 1) == numSplits - 1;
    if (*smIsLast) *counter = 0;  // ready for the next launch
  }
  __syncthreads();
  if (!*smIsLast) return;
  __threadfence();
  for (int e = threadIdx.x; e < rep * D; e += blockDim.x) {
    const int h = e / D, d = e % D;
    const int64_t base = slot0 + int64_t(h) * a.maxSplits;
    float M = -FLT_MAX;
    for (int sp = 0; sp < numSplits; sp++) M = fmaxf(M, __ldcg(a.partML + (base + sp) * 2));
    float o = 0.f, L = 0.f;
    for (int sp = 0; sp < numSplits; sp++) {
      float f = exp2f(__ldcg(a.partML + (base + sp) * 2) - M);
      L += f * __ldcg(a.partML + (base + sp) * 2 + 1);
      o += f * __ldcg(a.partO + (base + sp) * D + d);
    }
    a.out[int64_t(tok) * a.outStride + (g * rep + h) * D + d] = __float2bfloat16(o / L);
  }
}

}  // namespace ms::cuda
