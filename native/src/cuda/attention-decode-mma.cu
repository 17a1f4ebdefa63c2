// Paged decode attention on the tensor cores. The rep query heads that share a KV head (any rep
// from 1 to kMaxGqa = 8) are the first rows of a 16-row mma tile (rows past rep are zero, and only
// rows 0-7, each thread's first accumulator row, are computed past the products and read out), so
// the K and V of a split stream through shared memory (two ways, below), and the arithmetic is off
// the critical path. One block of W warps per (split, KV head, query token); every (16 * W)-key tile is shared
// by the warps, 16 keys each, each warp with its own online softmax; the warps, then the splits,
// are merged. The first K/V tile (all but the newest key) and the page ids are loaded before the
// PDL wait. W = 4 streams 64-key tiles through NB = 2 buffers (or 3: a third tile in flight, two
// blocks per SM instead of three; the autotune picks, attention-tune.cc); W = 8 (clusters at batch
// 1-2, see launchD) holds one 128-key tile (NB = 1), a block's whole share, so after the wait only
// q is loaded.
//
// Two ways to merge the splits:
// - cluster (clusterSize >= 8, the default where the plan has 8 splits or more: small batches):
//   the blocks of one (KV head, query token) form a thread-block cluster and share the context
//   evenly; each block writes every other block the slice of its partial that block reduces
//   (distributed shared memory), then one cluster barrier, then each block reduces its slice.
//   Nothing round-trips through global memory, which matters because the output projection's
//   blocks stream their weights meanwhile and every global round trip waits behind them.
// - split (clusterSize 0): fixed-length splits write f32 partials and the last block to finish
//   merges them (decode-merge.h). With evenSplits a query's context is spread evenly over the
//   grid's splits instead (evenSplitLen), so a context just past a multiple of splitLen leaves no
//   block with a few keys.
// With ropeInvFreq (pure-decode layers) the kernel also does ropeAppend's work for its tokens: the
// split holding the newest key rotates k and writes k and v into the page slot (and straight into
// its shared tile), and every block rotates its q heads as it stages them (one kernel less per layer).
//
// Two ways to load the K/V tiles:
// - cp.async (any head dim and page size): every thread copies 16-byte chunks, a page lookup and an
//   address each; at large batch these were ~45% of the block's instructions and the blocks were
//   issue-bound (Nsight, b=128, 2026-12-04: 2 warps per scheduler, an instruction every 5.2 cycles).
// - tensor copies (kTma: fixed splits, head dim 128, pages of 8 or 16 keys, an sm_90a build): a
//   warp reads only its own 16 keys of each tile, so lane 0 of each warp copies those keys' pages
//   (kvTensorMap: 64 dims x a page of keys, 128-byte swizzle, K and V) onto the warp's own mbarrier
//   per stage, and the warps stream their keys with no block barrier per tile. All NB stages are
//   issued before the PDL wait; the newest key's row (which this kernel or ropeAppend writes) is
//   patched into its tile from shared staging, and in the last tile each warp zeroes its V rows
//   past the context (whole pages land, and an unwritten slot times a zero probability is NaN).
//   The same values as cp.async (the kernel checks compare every element); at b=128 half the
//   instructions, and the decode step 2-3% faster at batches 8-128 (H200, 2026-12-04, engine-gpu.md).
//   Re-filling K right after the QK products (separate K and V barriers) was 1-3% slower.
#include <cfloat>
#include <cmath>
#include <initializer_list>

#include <cooperative_groups.h>

#include "check.h"
#include "decode-merge.h"
#include "kernels.h"
#include "mma-ptx.h"
#include "pdl.h"
#include "wgmma-ptx.h"

namespace ms::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kMaxCluster = 16;
constexpr float kLog2e = 1.4426950408889634f;
// A group is read out of the mma tile's rows 0-7 (smM, smL, smO and ClusterRed hold 8 heads), and
// the cluster merge's slices (rep * D / C values, C >= kMinCluster) fit ClusterRed::o while rep <= C.
static_assert(kMaxGqa <= 8 && kMaxGqa <= kMinCluster, "decode attention holds at most 8 query heads per KV head");

// W warps per block, 16 keys each: a tile is 16 * W keys, NB of them in shared memory. Four warps
// stream the K/V tiles through NB = 2 or 3 buffers; eight (clusters only) hold one tile (NB = 1),
// which must be the block's whole share (splitLen <= 128).
template <int D, int W, int NB>
constexpr size_t smemBytes(int numPageIds) {
  return size_t(16 + NB * 2 * 16 * W) * (D + 8) * sizeof(bf16) + size_t(numPageIds) * sizeof(int32_t);
}
// Tensor copies: q, then up to 1 KB to align the swizzled tiles, then the NB tiles and the page ids.
template <int D, int W, int NB>
constexpr size_t smemBytesTma(int numPageIds) {
  return size_t(16 * (D + 8)) * sizeof(bf16) + 1024 + size_t(NB * 2 * 16 * W * D) * sizeof(bf16) +
         size_t(numPageIds) * sizeof(int32_t);
}
// Byte offset of 16-byte chunk c (0-15) of row r in a swizzled K or V tile of BN rows (two 64-dim
// halves of BN 128-byte rows; the 128-byte swizzle XORs a row's chunk index with its row mod 8).
template <int BN>
__device__ __forceinline__ uint32_t swizzledChunk(int r, int c) {
  return uint32_t((c >> 3) * BN * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

// cp.async.wait_group with a run-time count of groups allowed in flight, 0 <= n <= MAX.
template <int MAX>
__device__ __forceinline__ void cpAsyncWaitUpTo(int n) {
  if constexpr (MAX >= 2)
    if (n >= 2) return cpAsyncWait<2>();
  if constexpr (MAX >= 1)
    if (n >= 1) return cpAsyncWait<1>();
  cpAsyncWait<0>();
}

// Cluster merge, pushed: every block writes each block of its cluster the slice of its
// unnormalised (rep, D) output that block reduces, and its max and sum per head (max -FLT_MAX:
// no keys), straight into that block's shared memory; after one cluster barrier every block
// reduces its slice from its own shared memory. Slices are rep * D / C <= D values (C >= 8).
template <int D>
struct ClusterRed {
  float o[kMaxCluster][D];  // [sender][index in the slice]
  float m[kMaxCluster][8], l[kMaxCluster][8];
};
template <int D>
__device__ __forceinline__ ClusterRed<D>& clusterRed() {
  __shared__ ClusterRed<D> red;  // static: the same place in every block of the kernel
  return red;
}

// A block may write another's shared memory only once that block runs: every block arrives at
// the cluster barrier on entry (no ordering) and waits on it before its first push.
__device__ __forceinline__ void clusterArriveOnEntry() { asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void clusterWaitStarted() { asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory"); }

// Sender side: output element e (of rep * D) of this block.
template <int D>
__device__ __forceinline__ void clusterPushO(int rep, int e, float v) {
  cg::cluster_group cluster = cg::this_cluster();
  const int C = int(cluster.num_blocks()), per = (rep * D + C - 1) / C, to = e / per;
  *cluster.map_shared_rank(&clusterRed<D>().o[cluster.block_rank()][e - to * per], to) = v;
}
template <int D>
__device__ __forceinline__ void clusterPushML(int h, float m, float l) {
  cg::cluster_group cluster = cg::this_cluster();
  const int C = int(cluster.num_blocks()), me = int(cluster.block_rank());
  for (int r = 0; r < C; r++) {
    *cluster.map_shared_rank(&clusterRed<D>().m[me][h], r) = m;
    *cluster.map_shared_rank(&clusterRed<D>().l[me][h], r) = l;
  }
}

// After every push of the block: the barrier, then this block's slice of the output.
template <int D>
__device__ __forceinline__ void clusterReduce(const DecodeAttentionArgs& a, int tok, int g, int rep) {
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // release the pushes, acquire everyone's
  const ClusterRed<D>& red = clusterRed<D>();
  const int C = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int total = rep * D, per = (total + C - 1) / C;
  for (int t = threadIdx.x; t < per && rank * per + t < total; t += blockDim.x) {
    const int e = rank * per + t, h = e / D;
    float M = -FLT_MAX;
    for (int r = 0; r < C; r++) M = fmaxf(M, red.m[r][h]);
    float acc = 0.f, L = 0.f;
    for (int r = 0; r < C; r++) {
      const float f = exp2f(red.m[r][h] - M);  // 0 for a block without keys, which pushed no output
      if (f > 0.f) acc = fmaf(f, red.o[r][t], acc), L = fmaf(f, red.l[r][h], L);
    }
    a.out[int64_t(tok) * a.outStride + g * rep * D + e] = __float2bfloat16(acc / L);
  }
}

// grid (splits, kvHeads, numQueries), block 32 * W; dynamic smem smemBytes<D, W, NB>(splitLen / pageSize + 2).
// kCluster: grid.x is one cluster, whose blocks split each context evenly (in multiples of 16 keys);
// a.splitLen bounds the keys per block. Else split s holds keys [s * len, (s + 1) * len), len =
// a.splitLen, or evenSplitLen(ctx, grid.x) with a.evenSplits. NB: K/V tile buffers (tiles in flight).
template <int D, bool kCluster, int W, int NB, bool kTma>
__global__ void __launch_bounds__(32 * W, W == 8 ? 2 : kTma && NB == 2 ? 3 : 1)
    decodeAttentionMmaKernel(DecodeAttentionArgs a, const __grid_constant__ CUtensorMap kvMap) {
  constexpr int LD = D + 8, CPR = D / 8, BN = 16 * W, kThreads = 32 * W;
  static_assert(!kTma || (D == 128 && !kCluster && W == 4), "tensor copies: fixed splits, head dim 128, 64-key tiles");
  extern __shared__ __align__(16) unsigned char smRaw[];
  bf16* Qs = reinterpret_cast<bf16*>(smRaw);      // (16, LD)
  // cp.async: NB buffers of K (BN, LD) then V (BN, LD). kTma: from the next 1 KB, NB buffers of K then
  // V, each two 64-dim halves of BN 128-byte rows, swizzled (swizzledChunk).
  bf16* KV = Qs + 16 * LD;
  if constexpr (kTma) {  // the swizzle repeats every 1 KB of shared address space
    const uint32_t at = smemAddr(KV);
    KV = reinterpret_cast<bf16*>(reinterpret_cast<unsigned char*>(KV) + (((at + 1023u) & ~1023u) - at));
  }
  int32_t* smPage = reinterpret_cast<int32_t*>(kTma ? KV + NB * 2 * BN * D : KV + NB * 2 * BN * LD);
  float* smO = reinterpret_cast<float*>(KV);      // (W warps, 8 heads, D), once the tiles are consumed
  __shared__ float smM[W][8], smL[W][8];
  __shared__ int smIsLast;
  __shared__ uint64_t smFull[NB * W];                            // kTma: a warp's rows of a stage landed
  __shared__ __align__(16) bf16 smNew[kTma ? 2 : 1][kTma ? D : 8];  // kTma: the newest key's k, v

  if constexpr (kCluster) clusterArriveOnEntry();
  const int rep = a.heads / a.kv.kvHeads;
  const int qi = blockIdx.z, g = blockIdx.y, split = blockIdx.x;
  const int tok = a.queries[qi];  // metadata: copied before the first kernel, safe before the wait
  const int ctx = a.meta.pos[tok] + 1;
  const int len = kCluster        ? ((ctx + int(gridDim.x) - 1) / int(gridDim.x) + 15) / 16 * 16
                  : a.evenSplits ? evenSplitLen(ctx, int(gridDim.x))
                                 : a.splitLen;
  const int k0 = split * len;
  if (k0 >= ctx) {
    pdlWait();
    if constexpr (kCluster) {
      clusterWaitStarted();
      if (threadIdx.x < rep) clusterPushML<D>(threadIdx.x, -FLT_MAX, 0.f);
      clusterReduce<D>(a, tok, g, rep);
    }
    return;
  }
  const int n = min(ctx - k0, len), newest = ctx - 1 - k0;
  const int numTiles = (n + BN - 1) / BN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kvDim = a.kv.kvHeads * D, ps = a.kv.pageSize, page0 = k0 / ps;
  const int32_t* pt = a.meta.pageTable + int64_t(a.meta.seqOf[tok]) * a.meta.ptStride;
  const int lastPage = (k0 + n - 1) / ps - page0;  // of the split, from its first
  for (int j = threadIdx.x; j <= lastPage; j += kThreads) smPage[j] = pt[page0 + j];
  if constexpr (kTma) initStageBarriers(smFull, nullptr, NB * W, 0);
  __syncthreads();
  // kTma, lane 0 of each warp: the warp's 16 rows of tile t (one page of 16 keys or two of 8; k0 is
  // a page boundary) -> stage t % NB, K then V, each page as its two 64-dim halves, on the warp's
  // own barrier; pages past the split's last are not copied. Each warp reads only its own rows, so
  // the warps stream their keys independently, with no block barrier per tile.
  auto issueRows = [&](int t) {
    if constexpr (kTma) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      unsigned char* dst = reinterpret_cast<unsigned char*>(KV + (t % NB) * 2 * BN * D) + warp * 16 * 128;
      uint64_t* bar = &smFull[(t % NB) * W + warp];
      const int p0 = (t * BN + warp * 16) / ps, np = max(0, min(16 / ps, lastPage + 1 - p0));
      mbarExpectTx(bar, uint32_t(np * ps * 512));
      for (int i = 0; i < np; i++) tmaKvPage(dst + i * ps * 128, &kvMap, g, smPage[p0 + i], BN * D * 2, BN * 128, bar);
#else
      __trap();
#endif
    }
  };
  const bf16* kBase = a.kv.base + g * D;
  const int64_t vOff = int64_t(ps) * kvDim;
  // The tile loads are the kernel's main instruction stream (8 chunks per thread per tile): with a
  // division by the page size in each, the blocks were issue-bound at 68% of the read rate (ncu,
  // b=128, 2026-12-04); pageOf shifts instead for the default 16.
  const int psShift = pageShift(ps);
  auto keySrc = [&](int kb, int col) {
    const int key = k0 + kb;
    const int pg = pageOf(key, ps, psShift);
    return kBase + int64_t(smPage[pg - page0]) * a.kv.pageStride + int64_t(key - pg * ps) * kvDim + col;
  };
  auto loadTile = [&](int j0, bool skipNewest) {  // keys [j0, j0 + BN) of the split; zeros past n
    bf16* Ks = KV + ((j0 / BN) % NB) * 2 * BN * LD;
    bf16* Vs = Ks + BN * LD;
    for (int c = threadIdx.x; c < BN * CPR; c += kThreads) {
      const int r = c / CPR, col = (c % CPR) * 8, kb = j0 + r;
      if (skipNewest && kb == newest && kb < n) continue;  // a newest key past n is another block's
      const bf16* src = a.kv.base;
      int bytes = 0;
      if (kb < n) src = keySrc(kb, col), bytes = 16;
      cpAsync16(Ks + r * LD + col, src, bytes);
      cpAsync16(Vs + r * LD + col, bytes ? src + vOff : src, bytes);
    }
  };
  if constexpr (kTma) {  // every stage before the wait: only the newest row may be unwritten, and it is patched
    if (lane == 0)
      for (int t = 0; t < NB && t < numTiles; t++) issueRows(t);
  } else {
    loadTile(0, true);  // before the wait: the newest key may not be written yet
    cpAsyncCommit();
  }
  pdlWait();  // q and the newest K/V come from the kernels before
  pdlTrigger();  // after the wait: measured 0.03 ms per step faster than at entry (engine-gpu.md)
  const bf16* qRow = a.q + int64_t(tok) * a.qStride;
  const bool newestHere = newest < n, newestInSmem = newest < NB * BN;  // in a tile loaded before the loop
  if (newestHere && a.ropeInvFreq) {  // rotate k, append k and v; the tile row gets them directly
    const int pos = ctx - 1;
    bf16* kDst = a.kv.base + int64_t(smPage[pos / ps - page0]) * a.kv.pageStride + int64_t(pos % ps) * kvDim + g * D;
    bf16* kRow = kTma ? smNew[0] : KV + ((newest / BN) % NB) * 2 * BN * LD + (newest % BN) * LD;
    const bf16* kSrc = qRow + (a.heads + g) * D;
    for (int i = threadIdx.x; i < D / 2; i += kThreads) {
      float sn, cs;
      sincosf(float(pos) * a.ropeInvFreq[i], &sn, &cs);  // as ropeAppendKernel: f32 angle, full sin/cos
      const float x0 = __bfloat162float(kSrc[i]), x1 = __bfloat162float(kSrc[i + D / 2]);
      const bf16 lo = __float2bfloat16(x0 * cs - x1 * sn), hi = __float2bfloat16(x1 * cs + x0 * sn);
      kDst[i] = lo;
      kDst[i + D / 2] = hi;
      if (kTma || newestInSmem) kRow[i] = lo, kRow[i + D / 2] = hi;
    }
    const bf16* vSrc = qRow + (a.heads + a.kv.kvHeads + g) * D;
    for (int i = threadIdx.x; i < D / 8; i += kThreads) {
      const uint4 v = reinterpret_cast<const uint4*>(vSrc)[i];
      reinterpret_cast<uint4*>(kDst + vOff)[i] = v;
      if (kTma)
        reinterpret_cast<uint4*>(smNew[1])[i] = v;
      else if (newestInSmem)
        reinterpret_cast<uint4*>(kRow + BN * LD)[i] = v;
    }
    if (!kTma && !newestInSmem) {
      __threadfence_block();
      __syncthreads();  // the slot is written before a later tile's cp.async reads it back
    }
  }
  // Commit groups: tile 0, the newest row where ropeAppend wrote it, then tiles 1 .. NB - 1: the
  // first tile's math waits for all but those.
  if (kTma && newestHere && !a.ropeInvFreq) {  // ropeAppend wrote it before the wait
    const bf16* src = keySrc(newest, 0);
    for (int c = threadIdx.x; c < 2 * CPR; c += kThreads)
      reinterpret_cast<uint4*>(smNew[c / CPR])[c % CPR] = reinterpret_cast<const uint4*>(src + (c / CPR) * vOff)[c % CPR];
  }
  if (!kTma && newestHere && newestInSmem && !a.ropeInvFreq) {
    bf16* kRow = KV + ((newest / BN) % NB) * 2 * BN * LD + (newest % BN) * LD;
    for (int c = threadIdx.x; c < CPR; c += kThreads) {
      const bf16* src = keySrc(newest, c * 8);
      cpAsync16(kRow + c * 8, src, 16);
      cpAsync16(kRow + BN * LD + c * 8, src + vOff, 16);
    }
    cpAsyncCommit();
  }
  for (int t = 1; !kTma && t < NB && t < numTiles; t++) {
    loadTile(t * BN, true);
    cpAsyncCommit();
  }
  if (a.ropeInvFreq) {  // q heads g * rep + r rotated here (pairs i, i + D/2); rows past rep zero
    // Every load first (one round trip on the critical path), then the rotations.
    constexpr int P = (8 * (D / 2) + kThreads - 1) / kThreads;  // pairs per thread at rep 8
    const int pos = ctx - 1, pairs = rep * (D / 2);
    float x0[P], x1[P], f[P];
#pragma unroll
    for (int k = 0; k < P; k++) {
      const int e = threadIdx.x + k * kThreads, r = e / (D / 2), i = e % (D / 2);
      if (e < pairs) {
        const bf16* src = qRow + (g * rep + r) * D;
        x0[k] = __bfloat162float(src[i]), x1[k] = __bfloat162float(src[i + D / 2]), f[k] = a.ropeInvFreq[i];
      }
    }
#pragma unroll
    for (int k = 0; k < P; k++) {
      const int e = threadIdx.x + k * kThreads, r = e / (D / 2), i = e % (D / 2);
      if (e < pairs) {
        float sn, cs;
        sincosf(float(pos) * f[k], &sn, &cs);
        Qs[r * LD + i] = __float2bfloat16(x0[k] * cs - x1[k] * sn);
        Qs[r * LD + i + D / 2] = __float2bfloat16(x1[k] * cs + x0[k] * sn);
      }
    }
    for (int c = threadIdx.x; c < (16 - rep) * CPR; c += kThreads)
      *reinterpret_cast<uint4*>(Qs + (rep + c / CPR) * LD + (c % CPR) * 8) = make_uint4(0, 0, 0, 0);
  } else {
    for (int c = threadIdx.x; c < 16 * CPR; c += kThreads) {
      const int r = c / CPR, col = (c % CPR) * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < rep) v = *reinterpret_cast<const uint4*>(qRow + (g * rep + r) * D + col);
      *reinterpret_cast<uint4*>(Qs + r * LD + col) = v;
    }
  }
  if constexpr (!kTma) cpAsyncWaitUpTo<NB - 1>(min(numTiles - 1, NB - 1));  // tiles 1 .. NB - 1 may still be in flight
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)
    ldmatrixX4(qf[kk], Qs + ((lane % 8) + ((lane / 8) % 2) * 8) * LD + kk * 16 + (lane / 16) * 8);

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m = -FLT_MAX, l = 0.f;  // row lane / 4's running max and sum
  const float sl2 = a.scale * kLog2e;
  for (int t = 0; t < numTiles; t++) {
    const bf16* Ks = KV + (t % NB) * 2 * BN * (kTma ? D : LD);
    const bf16* Vs = Ks + BN * (kTma ? D : LD);
    if constexpr (kTma) {
      mbarWait(&smFull[(t % NB) * W + warp], (t / NB) & 1);
      if (t == numTiles - 1) {  // this warp's rows only: zero V past the context, patch the newest row
        unsigned char* kb = reinterpret_cast<unsigned char*>(const_cast<bf16*>(Ks));
        const int r0 = warp * 16, lo = max(0, min(16, n - t * BN - r0));
        for (int c = lane; c < (16 - lo) * 16; c += 32)
          *reinterpret_cast<uint4*>(kb + BN * D * 2 + swizzledChunk<BN>(r0 + lo + c / 16, c % 16)) = make_uint4(0, 0, 0, 0);
        const int nr = newest - t * BN - r0;
        if (newestHere && nr >= 0 && nr < 16)
          *reinterpret_cast<uint4*>(kb + (lane / 16) * BN * D * 2 + swizzledChunk<BN>(r0 + nr, lane % 16)) =
              reinterpret_cast<const uint4*>(smNew[lane / 16])[lane % 16];
        __syncwarp();
      }
    } else if (t >= 1) {  // tile t was issued before tile t - 1's math; t + 1 .. t + NB - 1 may be in flight
      cpAsyncWaitUpTo<NB - 1>(min(numTiles - t - 1, NB - 1));
      __syncthreads();
    }
    // S = Q . K^T for this warp's 16 keys of the tile.
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      uint32_t b[4];
      const int kr = warp * 16 + (lane % 8) + (lane / 16) * 8, kc = kk * 2 + (lane / 8) % 2;
      if constexpr (kTma)
        ldmatrixX4(b, reinterpret_cast<const bf16*>(reinterpret_cast<const unsigned char*>(Ks) + swizzledChunk<BN>(kr, kc)));
      else
        ldmatrixX4(b, Ks + kr * LD + kc * 8);
      mma16816(s[0], qf[kk], b[0], b[1]);
      mma16816(s[1], qf[kk], b[2], b[3]);
    }
    // Softmax of row lane / 4 (accumulators 0-1) only: rows 8-15 (accumulators 2-3) are padding
    // (a group has at most 8 heads), so their probabilities enter P . V as zeros and their outputs
    // (o[i][2..3]) are never read.
    float mx = -FLT_MAX;
    const int valid = n - (t * BN + warp * 16);  // keys of this warp's 16 that exist: all but in the last tile
    if (valid >= 16) {
#pragma unroll
      for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          s[nt][e] *= sl2;
          mx = fmaxf(mx, s[nt][e]);
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const float v = nt * 8 + (lane % 4) * 2 + e < valid ? s[nt][e] * sl2 : -INFINITY;
          s[nt][e] = v;
          mx = fmaxf(mx, v);
        }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mNew = fmaxf(m, mx);  // finite: m starts at -FLT_MAX
    const float alpha = fastExp2(m - mNew);
    m = mNew;
    l *= alpha;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const float p = fastExp2(s[nt][e] - m);
        s[nt][e] = p;
        l += p;
      }
    if (__any_sync(0xffffffffu, alpha != 1.f)) {  // most tiles past the first move no max
#pragma unroll
      for (int i = 0; i < D / 8; i++) {
        o[i][0] *= alpha;
        o[i][1] *= alpha;
      }
    }
    // O += P . V over the same 16 keys.
    const uint32_t pa[4] = {packBf16(s[0][0], s[0][1]), 0u, packBf16(s[1][0], s[1][1]), 0u};
#pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
      uint32_t b[4];
      const int vr = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8, vc = dp * 2 + lane / 16;
      if constexpr (kTma)
        ldmatrixX4Trans(b, reinterpret_cast<const bf16*>(reinterpret_cast<const unsigned char*>(Vs) + swizzledChunk<BN>(vr, vc)));
      else
        ldmatrixX4Trans(b, Vs + vr * LD + vc * 8);
      mma16816(o[2 * dp], pa, b[0], b[1]);
      mma16816(o[2 * dp + 1], pa, b[2], b[3]);
    }
    if constexpr (kTma) {
      __syncwarp();  // the warp's rows are consumed before its copies NB tiles on overwrite them
      if (lane == 0 && t + NB < numTiles) issueRows(t + NB);
    } else {
      __syncthreads();  // this buffer is consumed before the load NB tiles on (or smO) overwrites it
      if (t + NB < numTiles) {
        loadTile((t + NB) * BN, false);
        cpAsyncCommit();
      }
    }
  }
  if constexpr (kTma) __syncthreads();  // every warp is past its tiles before smO overwrites them

  // Per-warp state of row lane / 4 (head g * rep + row; rows >= rep are padding) -> shared.
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  const int row = lane / 4;
  if (row < rep) {
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      smO[(warp * 8 + row) * D + i * 8 + (lane % 4) * 2] = o[i][0];
      smO[(warp * 8 + row) * D + i * 8 + (lane % 4) * 2 + 1] = o[i][1];
    }
    if (lane % 4 == 0) smM[warp][row] = m, smL[warp][row] = l;
  }
  __syncthreads();
  const int numSplits = kCluster ? int(gridDim.x) : (ctx + len - 1) / len;
  if constexpr (kCluster) clusterWaitStarted();
  const int64_t slot0 = (int64_t(qi) * a.heads + g * rep) * a.maxSplits;  // head g * rep, split 0
  for (int e = threadIdx.x; e < rep * D; e += kThreads) {
    const int h = e / D, d = e % D;
    float M = smM[0][h];
    for (int w = 1; w < W; w++) M = fmaxf(M, smM[w][h]);
    float acc = 0.f, L = 0.f;
    for (int w = 0; w < W; w++) {
      const float f = exp2f(smM[w][h] - M);  // a warp without keys has m = -FLT_MAX: weight 0
      acc += f * smO[(w * 8 + h) * D + d];
      L += f * smL[w][h];
    }
    if (numSplits == 1) {
      a.out[int64_t(tok) * a.outStride + (g * rep + h) * D + d] = __float2bfloat16(acc / L);
    } else if (kCluster) {
      clusterPushO<D>(rep, e, acc);
      if (d == 0) clusterPushML<D>(h, M, L);
    } else {
      const int64_t slot = slot0 + int64_t(h) * a.maxSplits + split;
      a.partO[slot * D + d] = acc;
      if (d == 0) {
        a.partML[slot * 2] = M;
        a.partML[slot * 2 + 1] = L;
      }
    }
  }
  if (numSplits == 1) return;
  if constexpr (kCluster)
    clusterReduce<D>(a, tok, g, rep);
  else
    mergeSplitsIfLast(a, qi, g, rep, D, numSplits, slot0, tok, &smIsLast);
}

template <int D, bool kCluster, int W, int NB, bool kTma = false>
void launchMma(const DecodeAttentionArgs& a, cudaStream_t s) {
  const int ids = a.splitLen / a.kv.pageSize + 2;
  const size_t smem = kTma ? smemBytesTma<D, W, NB>(ids) : smemBytes<D, W, NB>(ids);
  const dim3 grid(kCluster ? a.clusterSize : a.maxSplits, a.kv.kvHeads, a.numQueries);
  KvTensorMap map{};  // unread without kTma
  if (kTma) map = a.kvMap ? *a.kvMap : kvTensorMap(a.kv);
  launchPdlCluster("decodeAttentionMmaKernel", decodeAttentionMmaKernel<D, kCluster, W, NB, kTma>, grid, dim3(32 * W),
                   smem, s, kCluster ? a.clusterSize : 0, a, *reinterpret_cast<const CUtensorMap*>(&map));
}

template <int D, bool kCluster, int W, int NB, bool kTma = false>
void allowSmem() {
  const int ids = kMaxSplitLen / 8 + 2;  // the smallest page the kernels take with the longest split
  MS_CUDA_CHECK(cudaFuncSetAttribute(decodeAttentionMmaKernel<D, kCluster, W, NB, kTma>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(kTma ? smemBytesTma<D, W, NB>(ids) : smemBytes<D, W, NB>(kMaxSplitLen + 2))));
  if (kCluster)
    MS_CUDA_CHECK(cudaFuncSetAttribute(decodeAttentionMmaKernel<D, kCluster, W, NB, kTma>,
                                       cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
}

// Fixed splits on tensor copies (kTma): whole pages per warp's 16 keys from every split's first key
// (splitLen is a multiple of 64, even splits of 16).
bool tmaFits(const DecodeAttentionArgs& a) {
  return a.tensorCopies && a.clusterSize == 0 && decodeAttentionTensorCopies(a.kv);
}

// Clusters of c blocks of the D = 128 kernel with W warps the device can hold at once (0: none).
template <int W>
int activeClusters(int c) {
  constexpr int NB = W == 8 ? 1 : 2;  // cluster shares: <= 512 keys
  return maxActiveClusters(decodeAttentionMmaKernel<128, true, W, NB, false>, c, 32 * W,
                           smemBytes<128, W, NB>(kDefaultSplitLen + 2));
}

int g_maxCluster = 0;     // largest cluster the device runs the kernel in (decodeAttentionInit)
int g_wideClusters = 0;   // clusters of 16 eight-warp blocks the device holds at once

// Clusters use eight warps per block (one 128-key tile: a block's whole share of up to 2k keys)
// when the shares fit one tile and every cluster of the grid fits on the device at once; else
// four. a.clusterWarps = 4 or 8 forces one where it can run (the kernel checks). Fixed splits:
// four warps, a.stages (2 or 3) tile buffers.
template <int D>
void launchD(const DecodeAttentionArgs& a, cudaStream_t s) {
  if (a.clusterSize == 0) {
    if constexpr (D == 128)
      if (tmaFits(a)) return a.stages == 3 ? launchMma<D, false, 4, 3, true>(a, s) : launchMma<D, false, 4, 2, true>(a, s);
    return a.stages == 3 ? launchMma<D, false, 4, 3>(a, s) : launchMma<D, false, 4, 2>(a, s);
  }
  const bool fits = a.splitLen <= 16 * 8;  // one tile per block: the eight-warp kernel has one buffer
  const bool wide = fits && (a.clusterWarps == 4 || a.clusterWarps == 8
                                 ? a.clusterWarps == 8
                                 : a.clusterSize == kMaxCluster && a.numQueries * a.kv.kvHeads <= g_wideClusters);
  if (wide)
    launchMma<D, true, 8, 1>(a, s);
  else
    launchMma<D, true, 4, 2>(a, s);
}

}  // namespace

void decodeAttentionInit() {
  for (auto allow : {allowSmem<16, false, 4, 2>, allowSmem<32, false, 4, 2>, allowSmem<64, false, 4, 2>,
                     allowSmem<128, false, 4, 2>, allowSmem<16, false, 4, 3>, allowSmem<32, false, 4, 3>,
                     allowSmem<64, false, 4, 3>, allowSmem<128, false, 4, 3>, allowSmem<16, true, 4, 2>,
                     allowSmem<32, true, 4, 2>, allowSmem<64, true, 4, 2>, allowSmem<128, true, 4, 2>,
                     allowSmem<16, true, 8, 1>, allowSmem<32, true, 8, 1>, allowSmem<64, true, 8, 1>,
                     allowSmem<128, true, 8, 1>})
    allow();
#if defined(MS_CUDA_WGMMA)
  allowSmem<128, false, 4, 2, true>();
  allowSmem<128, false, 4, 3, true>();
#endif
  g_maxCluster = 0;
  for (int c = kMaxCluster; c >= 2 && !g_maxCluster; c /= 2)
    if (activeClusters<4>(c) > 0) g_maxCluster = c;
  g_wideClusters = activeClusters<8>(kMaxCluster);
}

bool decodeAttentionTensorCopies(const KvLayer& kv) {
#if defined(MS_CUDA_WGMMA)
  return kv.headDim == 128 && (kv.pageSize == 8 || kv.pageSize == 16);
#else
  (void)kv;
  return false;  // built without sm_90a machine code
#endif
}

int decodeMaxCluster() { return g_maxCluster; }
int decodeWideClusters() { return g_wideClusters; }

void decodeAttentionMma(const DecodeAttentionArgs& a, cudaStream_t s) {
  switch (a.kv.headDim) {
    case 16: launchD<16>(a, s); break;
    case 32: launchD<32>(a, s); break;
    case 64: launchD<64>(a, s); break;
    case 128: launchD<128>(a, s); break;
    default: throw CudaError("decodeAttentionMma: unsupported head dim " + std::to_string(a.kv.headDim), false);
  }
}

}  // namespace ms::cuda
