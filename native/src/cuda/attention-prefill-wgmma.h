// The tile-level steps of the wgmma prefill attention kernel (attention-prefill-wgmma.cu), shared
// with its variants in bench/kernels/prefill-attention-wgmma.cu: one warpgroup's S = Q K^T and
// O += P V over a 128-key tile (m64n128k16, S and O in the accumulator layout, operands named by
// descriptors built once), the causal mask and online-softmax step for a thread's two rows, and one
// thread's tensor copies of a key tile's pages.
#pragma once
#include "kernels.h"
#include "mma-ptx.h"
#include "wgmma-ptx.h"

namespace ms::cuda::prefill_wgmma {

constexpr int D = 128, BM = kPrefillTileRows, BN = 128;
constexpr int kQBytes = BM * D * 2, kTileBytes = BN * D * 2;  // one head's Q; one K (or V) tile
constexpr float kLog2e = 1.4426950408889634f;
static_assert(BM == 64, "one warpgroup's m64 is the tile");

// S = Q K^T of one warpgroup, issued and committed, not waited: 8 steps of 16 head dims, Q (64 rows)
// and K (128 keys) K-major, qLo and kLo their descriptors' low words (descLo(addr, 16)).
__device__ __forceinline__ void issueQK(float (&s)[64], uint32_t qLo, uint32_t kLo) {
  wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)
    wgmmaSS<0>(s, descAt(qLo, (kk >> 2) * (BM * 128) + (kk & 3) * 32), descAt(kLo, (kk >> 2) * (BN * 128) + (kk & 3) * 32),
               kk > 0);
  wgmmaCommit();
}
// O += P V, issued and committed: 8 steps of 16 keys; P from registers, V N-major (its 128 dims
// contiguous in two swizzled halves), vLo its descriptor's low word (descLo(addr, BN * 128)).
__device__ __forceinline__ void issuePV(float (&o)[64], const uint32_t (&p)[8][4], uint32_t vLo) {
  wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < BN / 16; kk++) wgmmaRS(o, p[kk], descAt(vLo, kk * 16 * 128));
  wgmmaCommit();
}
// The causal mask (keys after a row's position -> -inf, where the tile at key j0 reaches past the
// block's first row) and the online softmax's step for this thread's two rows: the new row max
// (mRun, log2 units), base (the max to subtract; 0 for a row with no key yet), alpha (O's rescale),
// l rescaled. s: S of this tile in the accumulator layout.
// Each row's max is a tree (depth 5), not a chain of 32 dependent maxima (the same value in any order).
__device__ __forceinline__ void maskAndScale(float (&s)[64], int j0, int firstPos, const int (&rowPos)[2],
                                             float sl2, float (&mRun)[2], float (&l)[2], float (&base)[2],
                                             float (&alpha)[2]) {
  const int lane = threadIdx.x % 32;
  if (j0 + BN - 1 > firstPos) {
#pragma unroll
    for (int i = 0; i < 64; i++)
      if (j0 + 8 * (i >> 2) + 2 * (lane & 3) + (i & 1) > rowPos[(i >> 1) & 1]) s[i] = -INFINITY;
  }
  float t[2][16];
#pragma unroll
  for (int r = 0; r < 2; r++)
#pragma unroll
    for (int j = 0; j < 16; j++) t[r][j] = fmaxf(s[4 * j + 2 * r], s[4 * j + 2 * r + 1]);
#pragma unroll
  for (int r = 0; r < 2; r++) {
#pragma unroll
    for (int j = 0; j < 8; j++) t[r][j] = fmaxf(t[r][j], t[r][j + 8]);
#pragma unroll
    for (int j = 0; j < 4; j++) t[r][j] = fmaxf(t[r][j], t[r][j + 4]);
#pragma unroll
    for (int j = 0; j < 2; j++) t[r][j] = fmaxf(t[r][j], t[r][j + 2]);
    t[r][0] = fmaxf(t[r][0], t[r][1]);
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float mx = t[r][0];
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mNew = fmaxf(mRun[r], mx * sl2);
    base[r] = mNew == -INFINITY ? 0.f : mNew;
    alpha[r] = fastExp2(mRun[r] - base[r]);
    mRun[r] = mNew;
    l[r] *= alpha[r];
  }
}

// exp2 of the scaled, max-shifted scores into the row sums l and P (bf16 pairs, the A operand of P V).
__device__ __forceinline__ void expPack(const float (&s)[64], float sl2, const float (&base)[2], float (&l)[2],
                                        uint32_t (&p)[8][4]) {
#pragma unroll
  for (int i = 0; i < 64; i += 2) {
    const int r = (i >> 1) & 1;
    const float p0 = fastExp2(fmaf(s[i], sl2, -base[r])), p1 = fastExp2(fmaf(s[i + 1], sl2, -base[r]));
    l[r] += p0 + p1;
    p[i >> 3][(i >> 1) & 3] = packBf16(p0, p1);
  }
}
__device__ __forceinline__ void rescale(float (&o)[64], const float (&alpha)[2]) {
  if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] *= alpha[(i >> 1) & 1];
  }
}
// One thread: the pages of key tile t before page pgEnd (pt: the sequence's page ids, ps keys a page,
// KV head g) -> K at dst, V at dst + kTileBytes, as two swizzled 64-dim halves each; complete on bar,
// which expects their bytes.
__device__ __forceinline__ void issueTile(const CUtensorMap* map, const int32_t* pt, int g, int ps, int t, int pgEnd,
                                          unsigned char* dst, uint64_t* bar) {
  const int p0 = t * BN / ps, n = min(BN / ps, pgEnd - p0);
  mbarExpectTx(bar, uint32_t(n * ps * 512));  // n pages x (K, V) x 2 halves x ps rows x 128 B
  for (int i = 0; i < n; i++) tmaKvPage(dst + i * ps * 128, map, g, pt[p0 + i], kTileBytes, BN * 128, bar);
}

}  // namespace ms::cuda::prefill_wgmma
