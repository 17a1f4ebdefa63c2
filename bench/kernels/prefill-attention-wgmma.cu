// Prefill attention with Hopper's warpgroup MMA (wgmma), the candidate to replace the mma.sync
// kernel of native/src/cuda/attention-prefill.cu (issue 17: prefill attention at 315-336 TFLOP/s
// there; a Hopper-native kernel is what 1.25x transformers needs). Same problem and arguments:
// causal by absolute position, ragged tiles of up to 64 query rows of one sequence, K/V gathered
// from the pages, GQA. One block per (tile, 2 query heads of one KV group): two warpgroups, one per
// head, each S = Q K^T (m64n128k16, Q and K from shared memory) then O += P V (P from registers,
// V from shared memory, N-major), online softmax in f32 between them. K/V tiles of 128 keys are
// gathered with cp.async into 128-byte-swizzled shared memory (the layout wgmma reads), two stages,
// the next tile's copies in flight under the current tile's math; no TMA (the pages make a tile a
// gather), no warp specialisation yet. Head dim 128 only.
// Here: checked against a float64 reference, then timed against the shipped kernel on the 8B shape.
// H200, 2026-12-04 (bench/results/engine-gpu/h200-2026-12-04-prefill-attention-wgmma.txt): every
// check passes (rel. err 2.4e-3 to 3.0e-3, as the shipped kernel's); one layer of the 8B shape,
// 1 x 4096 tokens 0.362 ms (380 TFLOP/s causal) against 0.443 ms (311), 1 x 8192 1.290 ms (426)
// against 1.648 ms (334). 166 registers, no spills, one block of 256 threads per SM. That is the
// "basic" variant as it ran; since then its setup, softmax step, store and products moved into
// Block, maskAndScale, issueQK and issuePV, shared with the "overlap" variant (the same operations;
// 168 registers). "overlap" (194 registers, no spills, no wgmma serialisation reported by ptxas) was
// written after the session's device time was spent: neither form has run since, so the checks come
// first.
//   build: cmake --build native/build --target microserve_kernel_benches; run: prefill-attention-wgmma
#include <cuda.h>
#include <cudaTypedefs.h>

#include <array>
#include <functional>
#include <cmath>
#include <string>

#include "common.cuh"
#include "cuda/mma-ptx.h"
#include "cuda/pdl.h"
#include "cuda/wgmma-ptx.h"

namespace ms::cuda {
namespace {

constexpr int D = 128, BM = kPrefillTileRows, BN = 128, HPB = 2, kThreads = 128 * HPB;
constexpr int kQBytes = BM * D * 2, kTileBytes = BN * D * 2;  // one head's Q; one K (or V) tile
constexpr float kLog2e = 1.4426950408889634f;
static_assert(BM == 64, "one warpgroup's m64 is the tile");

// S = Q K^T of one warpgroup, issued and committed, not waited: 8 steps of 16 head dims, Q (64 rows
// at qAddr) and K (128 keys at kAddr) K-major.
__device__ __forceinline__ void issueQK(float (&s)[64], uint32_t qAddr, uint32_t kAddr) {
  wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)
    wgmmaSS<0>(s, smemDesc128(qAddr + (kk >> 2) * (BM * 128) + (kk & 3) * 32, 16, 1024),
               smemDesc128(kAddr + (kk >> 2) * (BN * 128) + (kk & 3) * 32, 16, 1024), kk > 0);
  wgmmaCommit();
}
// O += P V, issued and committed: 8 steps of 16 keys; P from registers, V N-major at vAddr (its 128
// dims contiguous in two swizzled halves).
__device__ __forceinline__ void issuePV(float (&o)[64], const uint32_t (&p)[8][4], uint32_t vAddr) {
  wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < BN / 16; kk++) wgmmaRS(o, p[kk], smemDesc128(vAddr + kk * 16 * 128, BN * 128, 1024));
  wgmmaCommit();
}

// The block's problem: its tile, heads, KV group and page arithmetic (both variants).
struct Block {
  PrefillTile tile;
  int h0, g, wg, warp, lane, kvDim, ps, psShift, keyEnd;
  const int32_t* pt;
  int64_t vOffset;
  __device__ explicit Block(const PrefillAttentionArgs& a)
      : tile(a.tiles[a.numTiles - 1 - blockIdx.y]),  // longest tiles first
        h0(blockIdx.x * HPB),
        g(h0 / (a.heads / a.kv.kvHeads)),
        wg(threadIdx.x / 128),
        warp((threadIdx.x / 32) % 4),
        lane(threadIdx.x % 32),
        kvDim(a.kv.kvHeads * D),
        ps(a.kv.pageSize),
        psShift(pageShift(ps)),
        keyEnd(tile.posStart + tile.rows),
        pt(a.pageTable + int64_t(tile.seq) * a.ptStride),
        vOffset(int64_t(ps) * kvDim) {}
  // Q of the block's heads (zero rows past the tile) -> swizzled shared memory (cp.async, uncommitted).
  __device__ void loadQ(const PrefillAttentionArgs& a, unsigned char* Qs) const {
    for (int c = threadIdx.x; c < HPB * BM * 16; c += kThreads) {
      const int hs = c / (BM * 16), r = (c / 16) % BM, chunk = c % 16;
      const bool in = r < tile.rows;
      const bf16* src = in ? a.q + int64_t(tile.tokenStart + r) * a.qStride + (h0 + hs) * D + chunk * 8 : a.q;
      cpAsync16(reinterpret_cast<bf16*>(Qs + hs * kQBytes + swz128(BM, r, chunk)), src, in ? 16 : 0);
    }
  }
  // Address of the K row of key j0 + threadIdx.x (this KV head) -> row[threadIdx.x]; null past the end.
  __device__ void rowTable(const PrefillAttentionArgs& a, int j0, const bf16** row) const {
    if (threadIdx.x < BN) {
      const int key = j0 + threadIdx.x;
      const int pg = pageOf(key, ps, psShift);
      row[threadIdx.x] =
          key < keyEnd ? a.kv.base + int64_t(pt[pg]) * a.kv.pageStride + int64_t(key - pg * ps) * kvDim + g * D : nullptr;
    }
  }
  // The rows listed in row (plus `plus` elements: 0 for K, vOffset for V) -> a swizzled tile; zeros for null.
  __device__ void loadRows(const PrefillAttentionArgs& a, const bf16* const* row, unsigned char* dst, int64_t plus) const {
    const int chunk = threadIdx.x % 16;
#pragma unroll
    for (int r = threadIdx.x / 16; r < BN; r += kThreads / 16) {
      const bf16* src = row[r];
      cpAsync16(reinterpret_cast<bf16*>(dst + swz128(BN, r, chunk)), src ? src + chunk * 8 + plus : a.kv.base, src ? 16 : 0);
    }
  }
  // O / l of this thread's rows (l summed over the row's four threads here) -> the output, bf16.
  __device__ void storeO(const PrefillAttentionArgs& a, const float (&o)[64], float (&l)[2]) const {
    const int row0 = warp * 16 + lane / 4;
#pragma unroll
    for (int r = 0; r < 2; r++) {
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
      const int row = row0 + 8 * r;
      if (row >= tile.rows) continue;
      const float inv = 1.f / l[r];
      bf16* dst = a.out + int64_t(tile.tokenStart + row) * a.outStride + (h0 + wg) * D + 2 * (lane & 3);
#pragma unroll
      for (int n = 0; n < D / 8; n++)
        *reinterpret_cast<__nv_bfloat162*>(dst + 8 * n) =
            __floats2bfloat162_rn(o[4 * n + 2 * r] * inv, o[4 * n + 2 * r + 1] * inv);
    }
  }
};

// The causal mask (keys after a row's position -> -inf, where the tile at key j0 reaches past the
// block's first row) and the online softmax's step for this thread's two rows: the new row max
// (mRun, log2 units), base (the max to subtract; 0 for a row with no key yet), alpha (O's rescale),
// l rescaled. s: S of this tile in the accumulator layout.
__device__ __forceinline__ void maskAndScale(float (&s)[64], int j0, int firstPos, const int (&rowPos)[2], float sl2,
                                             float (&mRun)[2], float (&l)[2], float (&base)[2], float (&alpha)[2]) {
  const int lane = threadIdx.x % 32;
  const bool mask = j0 + BN - 1 > firstPos;
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int i = 0; i < 64; i++) {
    const int r = (i >> 1) & 1;
    if (mask && j0 + 8 * (i >> 2) + 2 * (lane & 3) + (i & 1) > rowPos[r]) s[i] = -INFINITY;
    mx[r] = fmaxf(mx[r], s[i]);
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float mNew = fmaxf(mRun[r], mx[r] * sl2);
    base[r] = mNew == -INFINITY ? 0.f : mNew;
    alpha[r] = fastExp2(mRun[r] - base[r]);
    mRun[r] = mNew;
    l[r] *= alpha[r];
  }
}

// Variant "overlap" (not yet run: written after the session's device time was spent, 2026-12-04):
// the same block, with each warpgroup's P V product running under the next tile's softmax (the
// ordering FlashAttention-3 calls intra-warpgroup overlap). Iteration t, with P(t) in registers:
// rescale O; issue S(t + 1) = Q K(t + 1)^T and P(t) V(t); wait for S(t + 1) only and run its softmax
// in place while P(t) V(t) runs; then wait for it and pack P(t + 1). K and V keep two stages each
// (K(t + 1) and V(t) resident while K(t + 2) and V(t + 1) load), the row table three slots; one S
// accumulator, O and P: about the registers of the basic kernel plus P.
constexpr int kSmem2 = HPB * kQBytes + 4 * kTileBytes + 3 * BN * 8 + 1024;
__global__ void __launch_bounds__(kThreads, 1) prefillAttentionWgmma2Kernel(PrefillAttentionArgs a) {
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  unsigned char* Qs = sm;                         // HPB heads x kQBytes
  unsigned char* Ks = sm + HPB * kQBytes;         // 2 stages
  unsigned char* Vs = Ks + 2 * kTileBytes;        // 2 stages
  const bf16** rowPtr = reinterpret_cast<const bf16**>(Vs + 2 * kTileBytes);  // (3, BN)
  pdlWait();
  pdlTrigger();

  const Block b(a);
  const PrefillTile& tile = b.tile;
  const int T = (b.keyEnd + BN - 1) / BN;
  b.loadQ(a, Qs);
  auto rowTable = [&](int j, int slot) { b.rowTable(a, j * BN, rowPtr + slot * BN); };
  auto load = [&](int slot, unsigned char* dst, int64_t plus) { b.loadRows(a, rowPtr + slot * BN, dst, plus); };

  float o[64], s[64], alpha[2] = {1.f, 1.f};
  uint32_t p[8][4];
#pragma unroll
  for (int i = 0; i < 64; i++) o[i] = 0.f;
  float mRun[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float sl2 = a.scale * kLog2e;
  const int row0 = b.warp * 16 + b.lane / 4;
  const int rowPos[2] = {tile.posStart + row0, tile.posStart + row0 + 8};
  const uint32_t qAddr = smemAddr(Qs + b.wg * kQBytes);
  auto issueS = [&](int j) { issueQK(s, qAddr, smemAddr(Ks + (j & 1) * kTileBytes)); };  // S(j), K stage j & 1
  // Softmax of S(j) in place (s becomes the unnormalised probabilities), alpha: O's rescale for them.
  auto softmax = [&](int j) {
    float base[2];
    maskAndScale(s, j * BN, tile.posStart, rowPos, sl2, mRun, l, base, alpha);
#pragma unroll
    for (int i = 0; i < 64; i++) {
      const int r = (i >> 1) & 1;
      s[i] = fastExp2(fmaf(s[i], sl2, -base[r]));
      l[r] += s[i];
    }
  };
  auto pack = [&] {
#pragma unroll
    for (int i = 0; i < 64; i += 2) p[i >> 3][(i >> 1) & 3] = packBf16(s[i], s[i + 1]);
  };

  for (int j = 0; j < 3; j++) rowTable(j, j);
  __syncthreads();
  load(0, Ks, 0);  // with Q: group 0
  cpAsyncCommit();
  load(0, Vs, b.vOffset);
  if (T > 1) load(1, Ks + kTileBytes, 0);
  cpAsyncCommit();  // group 1: V(0), K(1)
  cpAsyncWait<1>();
  fenceProxyAsync();
  __syncthreads();
  issueS(0);
  wgmmaWait<0>();
  pinRegs(s);
  softmax(0);
  pack();

  for (int t = 0; t < T; t++) {
    cpAsyncWait<0>();  // V(t), K(t + 1)
    fenceProxyAsync();
    __syncthreads();   // the copies are everyone's; every warpgroup is done with K(t) and V(t - 1)
    if (t + 1 < T) load((t + 1) % 3, Vs + ((t + 1) & 1) * kTileBytes, b.vOffset);
    if (t + 2 < T) load((t + 2) % 3, Ks + (t & 1) * kTileBytes, 0);
    cpAsyncCommit();
    if (t + 3 < T) rowTable(t + 3, t % 3);
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {  // no product in flight on O
#pragma unroll
      for (int i = 0; i < 64; i++) o[i] *= alpha[(i >> 1) & 1];
    }
    // S(t + 1) even past the last tile (a spare product on a stale stage, its result unused): the
    // same wgmma sequence on every path, which ptxas needs to see to keep the products in flight.
    const bool next = t + 1 < T;
    issueS(t + 1);
    issuePV(o, p, smemAddr(Vs + (t & 1) * kTileBytes));
    wgmmaWait<1>();  // S(t + 1); P(t) V(t) still runs
    pinRegs(s);
    if (next) softmax(t + 1);
    wgmmaWait<0>();
    pinRegs(o);
    if (next) pack();
  }

  b.storeO(a, o, l);
}


// Variant "tma": the shipped kernel's order (S, softmax, P V per tile, two K/V stages, one barrier
// per tile) with the K/V tiles brought by the Tensor Memory Accelerator instead of 16 cp.async per
// thread per tile: thread 0 issues one 5-d tensor copy per (page, K or V, 64-dim half), 32 per tile
// at page 16, which land 128-byte-swizzled (the layout wgmma reads) and complete on an mbarrier per
// stage. The 256 threads' address arithmetic and copies leave the issue slots to the softmax. Pages
// of 8..128 keys that divide BN only (a page is one box of rows). Rows past the sequence's last key:
// pages wholly past it are not loaded (the stage keeps older, finite tiles), and V rows past it in
// the last tile are zeroed (a page's unwritten slots may hold NaN, and 0 x NaN is NaN in the product).
__device__ __forceinline__ void mbarInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smemAddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smemAddr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarWait(uint64_t* bar, int parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra WAIT;\n}\n" ::"r"(
          smemAddr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void tmaLoad5(void* dst, const CUtensorMap* map, int c0, int c1, int c2, int c3, int c4,
                                         uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, %6}], "
      "[%7];\n" ::"r"(smemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(smemAddr(bar))
      : "memory");
}

// One thread: the pages of key tile t (those holding keys before pgEnd's page) -> K at dst, V at
// dst + kTileBytes, both as two swizzled 64-dim halves; complete on bar (expecting their bytes).
__device__ __forceinline__ void issueTile(const Block& b, const CUtensorMap* map, int t, int pgEnd, unsigned char* dst,
                                          uint64_t* bar) {
  const int p0 = t * BN / b.ps, n = min(BN / b.ps, pgEnd - p0);
  mbarExpectTx(bar, uint32_t(n * b.ps * 512));  // n pages x (K, V) x 2 halves x ps rows x 128 B
  for (int i = 0; i < n; i++) {
    const int page = b.pt[p0 + i];
#pragma unroll
    for (int kv = 0; kv < 2; kv++)
#pragma unroll
      for (int h = 0; h < 2; h++) tmaLoad5(dst + kv * kTileBytes + h * BN * 128 + i * b.ps * 128, map, h * 64, b.g, 0, kv, page, bar);
  }
}

constexpr int kSmemT = HPB * kQBytes + 2 * 2 * kTileBytes + 1024 + 64;
__global__ void __launch_bounds__(kThreads, 1)
    prefillAttentionTmaKernel(PrefillAttentionArgs a, const __grid_constant__ CUtensorMap kvMap) {
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  unsigned char* Qs = sm;                   // HPB heads x kQBytes
  unsigned char* KVs = sm + HPB * kQBytes;  // stage st: K at st * 2 * kTileBytes, V after it
  uint64_t* full = reinterpret_cast<uint64_t*>(KVs + 4 * kTileBytes);  // (2,): stage st's copies landed
  if (threadIdx.x == 0) {
    mbarInit(full, 1), mbarInit(full + 1, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  pdlWait();
  pdlTrigger();

  const Block b(a);
  const PrefillTile& tile = b.tile;
  const int numKeyTiles = (b.keyEnd + BN - 1) / BN;
  const int pgEnd = (b.keyEnd + b.ps - 1) / b.ps;  // pages holding the tile's keys
  b.loadQ(a, Qs);
  cpAsyncCommit();
  __syncthreads();  // the barriers are initialised
  auto issue = [&](int t) { issueTile(b, &kvMap, t, pgEnd, KVs + (t & 1) * 2 * kTileBytes, full + (t & 1)); };
  if (threadIdx.x == 0) issue(0);

  float o[64], s[64];
#pragma unroll
  for (int i = 0; i < 64; i++) o[i] = 0.f;
  float mRun[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float sl2 = a.scale * kLog2e;
  const int row0 = b.warp * 16 + b.lane / 4;
  const int rowPos[2] = {tile.posStart + row0, tile.posStart + row0 + 8};
  const uint32_t qAddr = smemAddr(Qs + b.wg * kQBytes);
  for (int t = 0; t < numKeyTiles; t++) {
    const int j0 = t * BN;
    unsigned char* Ks = KVs + (t & 1) * 2 * kTileBytes;
    mbarWait(full + (t & 1), (t >> 1) & 1);
    if (b.keyEnd - j0 < BN) {  // the last tile: zero V's rows past the last key (both halves)
      const int from = b.keyEnd - j0;
      for (int c = threadIdx.x; c < 2 * (BN - from) * 8; c += kThreads) {
        const int h = c / ((BN - from) * 8), r = from + (c / 8) % (BN - from);
        *reinterpret_cast<uint4*>(Ks + kTileBytes + h * BN * 128 + r * 128 + (c % 8) * 16) = make_uint4(0, 0, 0, 0);
      }
    }
    if (t == 0) cpAsyncWait<0>();  // Q
    fenceProxyAsync();
    __syncthreads();  // every warpgroup is done with tile t - 1's stage; zeros and Q visible to wgmma
    if (threadIdx.x == 0 && t + 1 < numKeyTiles) issue(t + 1);
    const uint32_t kAddr = smemAddr(Ks), vAddr = kAddr + kTileBytes;

    issueQK(s, qAddr, kAddr);
    wgmmaWait<0>();
    pinRegs(s);
    float base[2], alpha[2];
    maskAndScale(s, j0, tile.posStart, rowPos, sl2, mRun, l, base, alpha);
    uint32_t p[8][4];
#pragma unroll
    for (int i = 0; i < 64; i += 2) {
      const int r = (i >> 1) & 1;
      const float p0 = fastExp2(fmaf(s[i], sl2, -base[r])), p1 = fastExp2(fmaf(s[i + 1], sl2, -base[r]));
      l[r] += p0 + p1;
      p[i >> 3][(i >> 1) & 3] = packBf16(p0, p1);
    }
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int i = 0; i < 64; i++) o[i] *= alpha[(i >> 1) & 1];
    }
    issuePV(o, p, vAddr);
    wgmmaWait<0>();
    pinRegs(o);
  }
  b.storeO(a, o, l);
}

// Variant "tma3": "tma" with the loads moved to a producer warp (a ninth warp, lane 0) and three
// K/V stages, the two warpgroups no longer in step: a stage is released by an mbarrier every
// consumer thread arrives on after its P V product, and the producer waits on that before loading
// the stage again (no block barrier per tile; the warpgroups drift and overlap each other's
// softmax with their products). The last tile's V rows past the last key are zeroed, a half by
// each warpgroup, under one barrier of the 256 consumer threads.
__device__ __forceinline__ void mbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smemAddr(bar)) : "memory");
}
__device__ __forceinline__ void consumerSync() { asm volatile("bar.sync 1, %0;\n" ::"n"(kThreads) : "memory"); }
constexpr int kStages3 = 3, kThreads3 = kThreads + 32;
constexpr int kSmemT3 = HPB * kQBytes + kStages3 * 2 * kTileBytes + 1024 + 64;
__global__ void __launch_bounds__(kThreads3, 1)
    prefillAttentionTma3Kernel(PrefillAttentionArgs a, const __grid_constant__ CUtensorMap kvMap) {
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  unsigned char* Qs = sm;
  unsigned char* KVs = sm + HPB * kQBytes;  // stage st: K at st * 2 * kTileBytes, V after it
  uint64_t* full = reinterpret_cast<uint64_t*>(KVs + kStages3 * 2 * kTileBytes);  // (3,) loads landed
  uint64_t* empty = full + kStages3;                                               // (3,) consumers done
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages3; i++) mbarInit(full + i, 1), mbarInit(empty + i, kThreads);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  pdlWait();
  pdlTrigger();

  const Block b(a);
  const PrefillTile& tile = b.tile;
  const int numKeyTiles = (b.keyEnd + BN - 1) / BN;
  if (threadIdx.x >= kThreads) {  // the producer warp
    if (threadIdx.x == kThreads) {
      const int pgEnd = (b.keyEnd + b.ps - 1) / b.ps;
      for (int t = 0; t < numKeyTiles; t++) {
        const int st = t % kStages3;
        if (t >= kStages3) mbarWait(empty + st, (t / kStages3 - 1) & 1);
        issueTile(b, &kvMap, t, pgEnd, KVs + st * 2 * kTileBytes, full + st);
      }
    }
    return;
  }
  b.loadQ(a, Qs);
  cpAsyncCommit();
  cpAsyncWait<0>();
  fenceProxyAsync();
  consumerSync();

  float o[64], s[64];
#pragma unroll
  for (int i = 0; i < 64; i++) o[i] = 0.f;
  float mRun[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float sl2 = a.scale * kLog2e;
  const int row0 = b.warp * 16 + b.lane / 4;
  const int rowPos[2] = {tile.posStart + row0, tile.posStart + row0 + 8};
  const uint32_t qAddr = smemAddr(Qs + b.wg * kQBytes);
  for (int t = 0; t < numKeyTiles; t++) {
    const int j0 = t * BN, st = t % kStages3;
    unsigned char* Ks = KVs + st * 2 * kTileBytes;
    mbarWait(full + st, (t / kStages3) & 1);
    if (b.keyEnd - j0 < BN) {  // the last tile: zero V's rows past the last key, half b.wg
      const int from = b.keyEnd - j0;
      unsigned char* half = Ks + kTileBytes + b.wg * BN * 128;
      for (int c = threadIdx.x % 128; c < (BN - from) * 8; c += 128)
        *reinterpret_cast<uint4*>(half + (from + c / 8) * 128 + (c % 8) * 16) = make_uint4(0, 0, 0, 0);
      fenceProxyAsync();
      consumerSync();
    }
    const uint32_t kAddr = smemAddr(Ks), vAddr = kAddr + kTileBytes;
    issueQK(s, qAddr, kAddr);
    wgmmaWait<0>();
    pinRegs(s);
    float base[2], alpha[2];
    maskAndScale(s, j0, tile.posStart, rowPos, sl2, mRun, l, base, alpha);
    uint32_t p[8][4];
#pragma unroll
    for (int i = 0; i < 64; i += 2) {
      const int r = (i >> 1) & 1;
      const float p0 = fastExp2(fmaf(s[i], sl2, -base[r])), p1 = fastExp2(fmaf(s[i + 1], sl2, -base[r]));
      l[r] += p0 + p1;
      p[i >> 3][(i >> 1) & 3] = packBf16(p0, p1);
    }
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int i = 0; i < 64; i++) o[i] *= alpha[(i >> 1) & 1];
    }
    issuePV(o, p, vAddr);
    wgmmaWait<0>();
    pinRegs(o);
    mbarArrive(empty + st);
  }
  b.storeO(a, o, l);
}

// The pool of one layer as a 5-d tensor for the copies: (head dim, KV head, slot, K/V, page), bytes
// strides 256, kvDim * 2, pageSize * kvDim * 2, pageStride * 2; boxes of (64, 1, pageSize, 1, 1).
CUtensorMap kvTensorMap(const KvLayer& kv, int numPages) {
  static const auto encode = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q;
    MS_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    if (!f || q != cudaDriverEntryPointSuccess) throw CudaError("cuTensorMapEncodeTiled not found", false);
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  const int64_t kvDim = int64_t(kv.kvHeads) * D;
  CUtensorMap m;
  const cuuint64_t dim[5] = {cuuint64_t(D), cuuint64_t(kv.kvHeads), cuuint64_t(kv.pageSize), 2, cuuint64_t(numPages)};
  const cuuint64_t stride[4] = {cuuint64_t(D * 2), cuuint64_t(kvDim * 2), cuuint64_t(kv.pageSize * kvDim * 2),
                                cuuint64_t(kv.pageStride * 2)};
  const cuuint32_t box[5] = {64, 1, cuuint32_t(kv.pageSize), 1, 1}, one[5] = {1, 1, 1, 1, 1};
  const CUresult r = encode(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 5, const_cast<bf16*>(kv.base), dim, stride, box, one,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw CudaError("cuTensorMapEncodeTiled failed: " + std::to_string(int(r)), false);
  return m;
}

}  // namespace

// variant: "overlap" (prefillAttentionWgmma2Kernel), "tma" or "tma3" (prefillAttentionTma(3)Kernel,
// which need the pool's page count). The shared memory limit is raised once per kernel.
void prefillAttentionVariant(const PrefillAttentionArgs& a, const std::string& variant, int numPages, cudaStream_t s) {
  if (a.numTiles == 0) return;
  if (a.kv.headDim != D || (a.heads / a.kv.kvHeads) % HPB != 0)
    throw CudaError("prefillAttentionVariant: head dim 128 and an even GQA group only", false);
  if (variant == "overlap") {
    static const bool init = [] {
      MS_CUDA_CHECK(cudaFuncSetAttribute(prefillAttentionWgmma2Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem2));
      return true;
    }();
    (void)init;
    launchPdl("prefillAttentionWgmma2Kernel", prefillAttentionWgmma2Kernel, dim3(a.heads / HPB, a.numTiles),
              dim3(kThreads), kSmem2, s, a);
    return;
  }
  const int ps = a.kv.pageSize;
  if (ps % 8 != 0 || BN % ps != 0) throw CudaError("prefillAttentionVariant tma: pages of 8..128 keys dividing 128", false);
  static const bool init = [] {
    MS_CUDA_CHECK(cudaFuncSetAttribute(prefillAttentionTmaKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemT));
    MS_CUDA_CHECK(cudaFuncSetAttribute(prefillAttentionTma3Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemT3));
    return true;
  }();
  (void)init;
  if (variant == "tma3")
    launchPdl("prefillAttentionTma3Kernel", prefillAttentionTma3Kernel, dim3(a.heads / HPB, a.numTiles), dim3(kThreads3),
              kSmemT3, s, a, kvTensorMap(a.kv, numPages));
  else
    launchPdl("prefillAttentionTmaKernel", prefillAttentionTmaKernel, dim3(a.heads / HPB, a.numTiles), dim3(kThreads),
              kSmemT, s, a, kvTensorMap(a.kv, numPages));
}

}  // namespace ms::cuda

using namespace ms::cuda;

// The slots past each sequence's last key in its last page -> NaN (K and V, every head): unwritten
// slots of the engine's pages hold anything, and a kernel must not let them reach a valid row.
void poisonTail(const bench::PagedProblem& p) {
  const int used = p.ctx % p.pageSize;
  if (used == 0) return;
  const int64_t kvDim = int64_t(p.kvHeads) * p.D;
  for (int s = 0; s < p.numSeqs; s++) {
    const int64_t page = p.pageTable[size_t(s) * p.maxPages + p.maxPages - 1];
    for (int kv = 0; kv < 2; kv++)
      MS_CUDA_CHECK(cudaMemset(p.dPool + page * p.pageElems() + (kv * p.pageSize + used) * kvDim, 0xff,
                               size_t(p.pageSize - used) * kvDim * 2));
  }
}

int main() {
  try {
    auto tmaFits = [](int page) { return page % 8 == 0 && 128 % page == 0; };
    // Prompts after a prefix (pages of 16, 8, and 7: not a power of two), GQA 4 and 2; the unwritten
    // slots of each last page NaN.
    for (auto [heads, kvHeads, page, ctx, len] : {std::array<int, 5>{8, 2, 16, 187, 150}, {8, 2, 7, 300, 300},
                                                  {8, 2, 8, 260, 260}, {4, 2, 16, 700, 129}}) {
      bench::PagedProblem p(2, ctx, len, heads, kvHeads, 128, page);
      bench::PrefillTiles t(p);
      const auto ref = p.reference();
      poisonTail(p);
      const std::string tag = " rep=" + std::to_string(heads / kvHeads) + " page=" + std::to_string(page) +
                              " ctx=" + std::to_string(ctx) + " len=" + std::to_string(len);
      for (const char* v : {"overlap", "tma", "tma3"}) {
        if (std::string(v) != "overlap" && !tmaFits(page)) continue;
        prefillAttentionVariant(t.a, v, p.numSeqs * p.maxPages, 0);
        bench::check(std::string("wgmma ") + v + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
      }
      prefillAttentionWgmma(t.a, 0);
      bench::check("shipped wgmma" + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
      prefillAttentionMma(t.a, 0);
      bench::check("shipped mma.sync" + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
    }
    for (int len : {4096, 8192}) {
      bench::PagedProblem p(1, len, len, 32, 8, 128, 16);
      bench::PrefillTiles t(p);
      prefillAttentionMma(t.a, 0);
      const auto shipped = bench::downloadBf16(p.dOut, size_t(len) * 32 * 128);
      std::vector<double> ref(shipped.begin(), shipped.end());
      const double flop = 4.0 * 32 * 128 * (double(len) * (len + 1) / 2);
      std::string line = "8B shape, 1 x " + std::to_string(len) + " tokens, one layer, ms (TFLOP/s causal):";
      auto timed = [&](const std::string& name, const std::function<void()>& f) {
        f();
        if (name != "mma.sync")
          bench::check(name + " vs mma.sync, 1 x " + std::to_string(len), bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
        const double ms = bench::timeMs(f, 3, 20);
        char buf[96];
        std::snprintf(buf, sizeof buf, " %s %.3f (%.0f);", name.c_str(), ms, flop / ms / 1e9);
        line += buf;
      };
      for (const char* v : {"overlap", "tma", "tma3"})
        timed(v, [&] { prefillAttentionVariant(t.a, v, p.numSeqs * p.maxPages, 0); });
      timed("shipped wgmma", [&] { prefillAttentionWgmma(t.a, 0); });
      timed("mma.sync", [&] { prefillAttentionMma(t.a, 0); });
      std::printf("%s\n", line.c_str());
    }
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("prefill-attention-wgmma: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
