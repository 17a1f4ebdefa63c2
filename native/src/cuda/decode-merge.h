// Device helper of the decode attention kernel's fixed-split mode: the last split block of a (token, KV
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
  // One pass with an online rescale: kPer outputs per thread, kChunk splits per step, and every
  // load of a step (3 * kPer * kChunk) issued before the first is used. This merge sits on the
  // decode step's critical path (the output projection waits for it); a loop over the splits one
  // at a time waits for about two L2 round trips per split (bench/kernels/decode-merge-serial.cu).
  constexpr int kPer = 4, kChunk = 4;
  const int total = rep * D;
  for (int e0 = threadIdx.x; e0 < total; e0 += kPer * blockDim.x) {
    float M[kPer], L[kPer], acc[kPer];
    int64_t base[kPer];  // partial slot of split 0 for output k's head
    int dd[kPer];
    bool valid[kPer];
#pragma unroll
    for (int k = 0; k < kPer; k++) {
      const int e = e0 + k * blockDim.x;
      valid[k] = e < total;
      dd[k] = valid[k] ? e % D : 0;
      base[k] = slot0 + int64_t(valid[k] ? e / D : 0) * a.maxSplits;
      M[k] = -FLT_MAX, L[k] = 0.f, acc[k] = 0.f;
    }
    for (int sp0 = 0; sp0 < numSplits; sp0 += kChunk) {
      float m[kPer][kChunk], l[kPer][kChunk], o[kPer][kChunk];
#pragma unroll
      for (int k = 0; k < kPer; k++)
#pragma unroll
        for (int j = 0; j < kChunk; j++) {
          const bool in = valid[k] && sp0 + j < numSplits;
          const int64_t slot = base[k] + (in ? sp0 + j : 0);
          m[k][j] = in ? __ldcg(a.partML + slot * 2) : -FLT_MAX;
          l[k][j] = in ? __ldcg(a.partML + slot * 2 + 1) : 0.f;
          o[k][j] = in ? __ldcg(a.partO + slot * D + dd[k]) : 0.f;
        }
#pragma unroll
      for (int k = 0; k < kPer; k++) {
        float mx = M[k];
#pragma unroll
        for (int j = 0; j < kChunk; j++) mx = fmaxf(mx, m[k][j]);
        const float c = exp2f(M[k] - mx);  // 0 once a real split raised the max; 1 while both are -FLT_MAX
        acc[k] *= c;
        L[k] *= c;
#pragma unroll
        for (int j = 0; j < kChunk; j++) {
          const float f = exp2f(m[k][j] - mx);  // padding: m = -FLT_MAX gives 0 (or 1 times o = l = 0)
          acc[k] = fmaf(f, o[k][j], acc[k]);
          L[k] = fmaf(f, l[k][j], L[k]);
        }
        M[k] = mx;
      }
    }
#pragma unroll
    for (int k = 0; k < kPer; k++)
      if (valid[k]) {
        const int h = (e0 + k * blockDim.x) / D;
        a.out[int64_t(tok) * a.outStride + (g * rep + h) * D + dd[k]] = __float2bfloat16(acc[k] / L[k]);
      }
  }
}

}  // namespace ms::cuda
