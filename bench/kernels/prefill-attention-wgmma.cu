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
#include <array>
#include <cmath>
#include <string>

#include "common.cuh"
#include "cuda/mma-ptx.h"
#include "cuda/pdl.h"

namespace ms::cuda {
namespace {

constexpr int D = 128, BM = kPrefillTileRows, BN = 128, HPB = 2, kThreads = 128 * HPB;
constexpr int kQBytes = BM * D * 2, kTileBytes = BN * D * 2;  // one head's Q; one K (or V) tile
constexpr int kSmem = HPB * kQBytes + 2 * 2 * kTileBytes + 2 * BN * 8 + 1024;
constexpr float kLog2e = 1.4426950408889634f;
static_assert(BM == 64, "one warpgroup's m64 is the tile");

// D (64 x 128 f32 in the accumulator layout) += A (64 x 16, shared: descA) . B (16 x 128, shared: descB,
// K-major).
__device__ __forceinline__ void wgmmaSS(float (&d)[64], uint64_t descA, uint64_t descB) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(descA), "l"(descB), "r"(1));
}
// D += A (64 x 16 bf16 in registers: the accumulator layout of 16 columns, packed in pairs) . B (16 x 128,
// shared: descB, N-major).
__device__ __forceinline__ void wgmmaRS(float (&d)[64], const uint32_t (&a)[4], uint64_t descB) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(1));
}
// Keeps the compiler from moving accesses of an accumulator across a wgmma fence or wait.
__device__ __forceinline__ void pinRegs(float (&d)[64]) { asm volatile("" : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])::"memory"); }

// D (64 x 128 f32 in the accumulator layout) = A (64 x 16, shared: descA) . B (16 x 128, shared: descB,
// K-major): the first step of a product (D's old values are not read, so they need not stay live).
__device__ __forceinline__ void wgmmaSSFirst(float (&d)[64], uint64_t descA, uint64_t descB) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]), "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]), "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]), "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]), "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63])
      : "l"(descA), "l"(descB), "r"(0));
}
__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N of this warpgroup's committed wgmma groups are pending (they complete in order).
template <int N>
__device__ __forceinline__ void wgmmaWaitUpTo() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory writes of the generic proxy (cp.async) made visible to wgmma (the async proxy).
__device__ __forceinline__ void fenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// A [rows][128] bf16 tile in shared memory as wgmma reads it with 128-byte swizzling: two halves of
// 64 columns (rows x 128 bytes each), the 16-byte chunk c of row r at chunk (c ^ r % 8) of its row.
__device__ __forceinline__ uint32_t swz(int rows, int r, int chunk) {
  return uint32_t((chunk >> 3) * rows * 128 + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}
// Matrix descriptor: start address, leading and stride byte offsets, 128-byte swizzle.
__device__ __forceinline__ uint64_t desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | uint64_t((lbo & 0x3FFFF) >> 4) << 16 | uint64_t((sbo & 0x3FFFF) >> 4) << 32 |
         1ull << 62;
}

// S = Q K^T of one warpgroup, issued and committed, not waited: 8 steps of 16 head dims, Q (64 rows
// at qAddr) and K (128 keys at kAddr) K-major.
__device__ __forceinline__ void issueQK(float (&s)[64], uint32_t qAddr, uint32_t kAddr) {
  wgmmaFence();
  wgmmaSSFirst(s, desc(qAddr, 16, 1024), desc(kAddr, 16, 1024));
#pragma unroll
  for (int kk = 1; kk < D / 16; kk++)
    wgmmaSS(s, desc(qAddr + (kk >> 2) * (BM * 128) + (kk & 3) * 32, 16, 1024),
            desc(kAddr + (kk >> 2) * (BN * 128) + (kk & 3) * 32, 16, 1024));
  wgmmaCommit();
}
// O += P V, issued and committed: 8 steps of 16 keys; P from registers, V N-major at vAddr (its 128
// dims contiguous in two swizzled halves).
__device__ __forceinline__ void issuePV(float (&o)[64], const uint32_t (&p)[8][4], uint32_t vAddr) {
  wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < BN / 16; kk++) wgmmaRS(o, p[kk], desc(vAddr + kk * 16 * 128, BN * 128, 1024));
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
      cpAsync16(reinterpret_cast<bf16*>(Qs + hs * kQBytes + swz(BM, r, chunk)), src, in ? 16 : 0);
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
      cpAsync16(reinterpret_cast<bf16*>(dst + swz(BN, r, chunk)), src ? src + chunk * 8 + plus : a.kv.base, src ? 16 : 0);
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

// grid (heads / HPB, numTiles), block kThreads; dynamic smem kSmem.
__global__ void __launch_bounds__(kThreads, 1) prefillAttentionWgmmaKernel(PrefillAttentionArgs a) {
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  unsigned char* Qs = sm;                            // HPB heads x kQBytes
  unsigned char* KVs = sm + HPB * kQBytes;           // stage s: K at s * 2 * kTileBytes, V after it
  const bf16** rowPtr = reinterpret_cast<const bf16**>(KVs + 4 * kTileBytes);  // (2, BN)
  pdlWait();
  pdlTrigger();

  const Block b(a);
  const PrefillTile& tile = b.tile;
  const int numKeyTiles = (b.keyEnd + BN - 1) / BN;
  b.loadQ(a, Qs);
  auto rowTable = [&](int j0, int slot) { b.rowTable(a, j0, rowPtr + slot * BN); };
  auto loadKV = [&](int slot, int st) {  // the keys of rowPtr[slot] -> stage st (zeros past the end)
    unsigned char* Ks = KVs + st * 2 * kTileBytes;
    b.loadRows(a, rowPtr + slot * BN, Ks, 0);
    b.loadRows(a, rowPtr + slot * BN, Ks + kTileBytes, b.vOffset);
  };

  float o[64], s[64];
#pragma unroll
  for (int i = 0; i < 64; i++) o[i] = 0.f;
  float mRun[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float sl2 = a.scale * kLog2e;
  const int row0 = b.warp * 16 + b.lane / 4;  // this thread's rows of the tile: row0, row0 + 8
  const int rowPos[2] = {tile.posStart + row0, tile.posStart + row0 + 8};
  const uint32_t qAddr = smemAddr(Qs + b.wg * kQBytes);

  rowTable(0, 0);
  rowTable(BN, 1);
  __syncthreads();
  loadKV(0, 0);
  cpAsyncCommit();
  for (int t = 0; t < numKeyTiles; t++) {
    const int j0 = t * BN;
    cpAsyncWait<0>();  // tile t (and Q) landed for this thread
    fenceProxyAsync();
    __syncthreads();   // for every thread; every warpgroup is done with tile t - 1's stage
    if (t + 1 < numKeyTiles) {
      loadKV((t + 1) & 1, (t + 1) & 1);
      cpAsyncCommit();
    }
    if (t + 2 < numKeyTiles) rowTable(j0 + 2 * BN, t & 1);
    const uint32_t kAddr = smemAddr(KVs + (t & 1) * 2 * kTileBytes), vAddr = kAddr + kTileBytes;

    issueQK(s, qAddr, kAddr);
    wgmmaWaitUpTo<0>();
    pinRegs(s);

    // Causal mask where the tile reaches past the first row, online softmax in log2 units.
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
    wgmmaWaitUpTo<0>();
    pinRegs(o);
  }

  b.storeO(a, o, l);
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
  wgmmaWaitUpTo<0>();
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
    wgmmaWaitUpTo<1>();  // S(t + 1); P(t) V(t) still runs
    pinRegs(s);
    if (next) softmax(t + 1);
    wgmmaWaitUpTo<0>();
    pinRegs(o);
    if (next) pack();
  }

  b.storeO(a, o, l);
}

}  // namespace

// variant: "basic" (prefillAttentionWgmmaKernel) or "overlap" (prefillAttentionWgmma2Kernel).
void prefillAttentionWgmma(const PrefillAttentionArgs& a, const std::string& variant, cudaStream_t s) {
  if (a.numTiles == 0) return;
  if (a.kv.headDim != D || (a.heads / a.kv.kvHeads) % HPB != 0)
    throw CudaError("prefillAttentionWgmma: head dim 128 and an even GQA group only", false);
  const bool overlap = variant == "overlap";
  auto kernel = overlap ? prefillAttentionWgmma2Kernel : prefillAttentionWgmmaKernel;
  const int smem = overlap ? kSmem2 : kSmem;
  MS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  launchPdl("prefillAttentionWgmmaKernel", kernel, dim3(a.heads / HPB, a.numTiles), dim3(kThreads), smem, s, a);
}

}  // namespace ms::cuda

using namespace ms::cuda;

int main() {
  try {
    // Prompts after a prefix (page 16, and 7: a page size that is not a power of two), GQA 4 and 2.
    for (auto [heads, kvHeads, page, ctx, len] : {std::array<int, 5>{8, 2, 16, 187, 150}, {8, 2, 7, 300, 300},
                                                  {4, 2, 16, 700, 129}}) {
      bench::PagedProblem p(2, ctx, len, heads, kvHeads, 128, page);
      bench::PrefillTiles t(p);
      const auto ref = p.reference();
      const std::string tag = " rep=" + std::to_string(heads / kvHeads) + " page=" + std::to_string(page) +
                              " ctx=" + std::to_string(ctx) + " len=" + std::to_string(len);
      for (const char* v : {"basic", "overlap"}) {
        prefillAttentionWgmma(t.a, v, 0);
        bench::check(std::string("wgmma ") + v + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
      }
      prefillAttention(t.a, 0);
      bench::check("shipped (mma.sync)" + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
    }
    for (int len : {4096, 8192}) {
      bench::PagedProblem p(1, len, len, 32, 8, 128, 16);
      bench::PrefillTiles t(p);
      prefillAttention(t.a, 0);
      const auto shipped = bench::downloadBf16(p.dOut, size_t(len) * 32 * 128);
      std::vector<double> ref(shipped.begin(), shipped.end());
      const double flop = 4.0 * 32 * 128 * (double(len) * (len + 1) / 2);
      std::printf("8B shape, 1 x %d tokens, one layer:", len);
      for (const char* v : {"basic", "overlap"}) {
        prefillAttentionWgmma(t.a, v, 0);
        bench::check(std::string("wgmma ") + v + " vs shipped, 1 x " + std::to_string(len),
                     bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
        const double w = bench::timeMs([&] { prefillAttentionWgmma(t.a, v, 0); }, 2, 10);
        std::printf("  wgmma %s %.3f ms (%.0f TFLOP/s);", v, w, flop / w / 1e9);
      }
      const double m = bench::timeMs([&] { prefillAttention(t.a, 0); }, 2, 10);
      std::printf("  shipped %.3f ms (%.0f TFLOP/s)\n", m, flop / m / 1e9);
    }
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("prefill-attention-wgmma: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
