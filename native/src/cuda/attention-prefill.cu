// Paged prefill attention on the tensor cores (flash-attention 2 style, mma.sync m16n8k16 bf16):
// every head dim and GQA group; prefillAttention takes the wgmma kernel (attention-prefill-wgmma.cu)
// instead where it fits (head dim 128, even group, an sm_90a build).
// Causal by absolute position, so a prefix already in the cache and a chunked prompt are the same
// case. Online softmax in f32. One block per (tile of 64 query tokens of one sequence, HPB query
// heads of one KV group): 8 warps and 4 heads where the group has a multiple of 4 query heads,
// else 4 warps and 2 heads (even groups) or 1. Each warp holds 16 positions of MT heads (MT x 16
// rows), so every K/V fragment read from shared memory feeds MT matrix products, and a K/V tile
// gathered from the pages serves HPB heads. K/V tiles are double-buffered: the gather of tile t+1
// (cp.async, row addresses from a table built one tile ahead) overlaps all the work on tile t,
// one barrier per tile. Q stays in shared memory. O is rescaled only when a row max moved.
// Measured (H100, 8B shape: 32 q heads, 8 KV heads, d 128, page 16; .scratch harness, 2026-11-24):
// 1 x 8k tokens 1.61 ms (342 TFLOP/s causal) vs 4.12 ms (133) for the one-head-per-block kernel it
// replaced (bench/kernels/prefill-attention-fa2.cu); 1 x 4k 0.52 ms (264) vs 1.19 ms.
#include <cfloat>
#include <cmath>
#include <string>
#include <type_traits>

#include "check.h"
#include "kernels.h"
#include "mma-ptx.h"
#include "pdl.h"

namespace ms::cuda {
namespace {

constexpr int BM = kPrefillTileRows;  // query rows per block
constexpr float kLog2e = 1.4426950408889634f;

// gqa kernel. grid (heads / HPB, numTiles), block NW warps; warp w holds tile positions
// (w % 4) * 16 .. + 15 of heads h0 + (w / 4) * MT + m, m < MT. Dynamic smem
// (HPB * BM + 4 * BN) * (D + 8) bf16: Q, then two stages of (K, V); then 2 * BN row pointers.
template <int D, int BN, int MT, int NW, int MINB>
__global__ void __launch_bounds__(NW * 32, MINB) prefillAttentionGqaKernel(PrefillAttentionArgs a) {
  static_assert(NW % 4 == 0, "four warps cover the 64 positions of a tile");
  constexpr int T = NW * 32;
  constexpr int HPB = MT * NW / 4;  // query heads per block
  constexpr int LD = D + 8;         // padded row: conflict-free ldmatrix
  constexpr int CPR = D / 8;        // 16-byte chunks per row
  extern __shared__ __align__(16) unsigned char smRaw[];
  bf16* Qs = reinterpret_cast<bf16*>(smRaw);  // (HPB * BM, LD)
  bf16* KVs = Qs + HPB * BM * LD;             // stage s: K at KVs + s * 2 * BN * LD, V after it
  const bf16** rowPtr = reinterpret_cast<const bf16**>(KVs + 4 * BN * LD);  // (2, BN): K row of a key or null
  pdlWait();
  pdlTrigger();

  // Head groups vary fastest in the grid, so blocks start in the order of their tiles, longest tiles
  // of a sequence first (with tiles fastest, each head group's short tiles ran before the next
  // group's long ones, leaving long blocks for the end: ~20% of a 4k prefill's attention).
  const PrefillTile tile = a.tiles[a.numTiles - 1 - blockIdx.y];
  const int h0 = blockIdx.x * HPB, g = h0 / (a.heads / a.kv.kvHeads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wg = warp / 4, wm = warp % 4;
  const int kvDim = a.kv.kvHeads * D;
  const int32_t* pt = a.pageTable + int64_t(tile.seq) * a.ptStride;
  const int keyEnd = tile.posStart + tile.rows;
  const int64_t vOffset = int64_t(a.kv.pageSize) * kvDim;

  // Q (zero rows past the tile) -> shared.
  for (int c = threadIdx.x; c < HPB * BM * CPR; c += T) {
    int hs = c / (BM * CPR), r = (c / CPR) % BM, col = (c % CPR) * 8;
    const bf16* src = a.q;
    int bytes = 0;
    if (r < tile.rows) {
      src = a.q + int64_t(tile.tokenStart + r) * a.qStride + (h0 + hs) * D + col;
      bytes = 16;
    }
    cpAsync16(Qs + (hs * BM + r) * LD + col, src, bytes);
  }
  // Address of key j0 + threadIdx.x's K row (this KV head) -> rowPtr[st]; null past the end.
  auto rowTable = [&](int j0, int st) {
    if (threadIdx.x < BN) {
      int key = j0 + threadIdx.x;
      rowPtr[st * BN + threadIdx.x] =
          key < keyEnd ? a.kv.base + int64_t(pt[key / a.kv.pageSize]) * a.kv.pageStride +
                             int64_t(key % a.kv.pageSize) * kvDim + g * D
                       : nullptr;
    }
  };
  // K and V of the keys listed in rowPtr[st] -> stage st (zero past the end).
  auto loadKV = [&](int st) {
    static_assert(T % CPR == 0, "a thread keeps its column");
    bf16* Kd = KVs + st * 2 * BN * LD;
    const int col = (threadIdx.x % CPR) * 8;
#pragma unroll
    for (int r = threadIdx.x / CPR; r < BN; r += T / CPR) {
      const bf16* src = rowPtr[st * BN + r];
      cpAsync16(Kd + r * LD + col, src ? src + col : a.kv.base, src ? 16 : 0);
      cpAsync16(Kd + (BN + r) * LD + col, src ? src + col + vOffset : a.kv.base, src ? 16 : 0);
    }
  };

  float o[MT][D / 8][4];
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[m][i][0] = o[m][i][1] = o[m][i][2] = o[m][i][3] = 0.f;
  float mRun[MT][2], l[MT][2];  // running max (log2 units, scaled) and sum per row
#pragma unroll
  for (int m = 0; m < MT; m++) mRun[m][0] = mRun[m][1] = -INFINITY, l[m][0] = l[m][1] = 0.f;
  const float sl2 = a.scale * kLog2e;
  const int rowPos = tile.posStart + wm * 16 + lane / 4;  // this thread's rows: rowPos, rowPos + 8
  const int numKeyTiles = (keyEnd + BN - 1) / BN;
  const bool active = wm * 16 < tile.rows;  // warp-uniform: some row of this warp is real

  // The work on one K/V tile (MASK false: no key of it is after any row of this warp).
  auto tileBody = [&](auto maskTag, const bf16* Ks, const bf16* Vs, int j0, bool mask) {
    constexpr bool MASK = decltype(maskTag)::value;
    // S = Q . K^T (MT x 16 rows x BN keys per warp)
    float s[MT][BN / 8][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int i = 0; i < BN / 8; i++) s[m][i][0] = s[m][i][1] = s[m][i][2] = s[m][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      uint32_t qa[MT][4];
#pragma unroll
      for (int m = 0; m < MT; m++)
        ldmatrixX4(qa[m], Qs + ((wg * MT + m) * BM + wm * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + kk * 16 +
                              (lane / 16) * 8);
#pragma unroll
      for (int np = 0; np < BN / 16; np++) {
        uint32_t b[4];
        ldmatrixX4(b, Ks + (np * 16 + (lane % 8) + (lane / 16) * 8) * LD + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int m = 0; m < MT; m++) {
          mma16816(s[m][2 * np], qa[m], b[0], b[1]);
          mma16816(s[m][2 * np + 1], qa[m], b[2], b[3]);
        }
      }
    }

    // Causal mask (MASK && mask), online softmax in log2 units with the scale folded into one FMA.
#pragma unroll
    for (int m = 0; m < MT; m++) {
      if (MASK && mask) {
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            if (j0 + nt * 8 + (lane % 4) * 2 + (e & 1) > rowPos + (e >> 1) * 8) s[m][nt][e] = -INFINITY;
      }
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[m][nt][e]);
      float base[2], alpha[2];
#pragma unroll
      for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        float mNew = fmaxf(mRun[m][r], mx[r] * sl2);
        base[r] = mNew == -INFINITY ? 0.f : mNew;  // a row with every key masked so far
        alpha[r] = fastExp2(mRun[m][r] - base[r]);
        mRun[m][r] = mNew;
        l[m][r] *= alpha[r];
      }
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          float p = fastExp2(fmaf(s[m][nt][e], sl2, -base[e >> 1]));
          s[m][nt][e] = p;
          l[m][e >> 1] += p;
        }
      if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int i = 0; i < D / 8; i++) {
          o[m][i][0] *= alpha[0];
          o[m][i][1] *= alpha[0];
          o[m][i][2] *= alpha[1];
          o[m][i][3] *= alpha[1];
        }
      }
    }

    // O += P . V
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int m = 0; m < MT; m++) {
        pa[m][0] = packBf16(s[m][2 * kk][0], s[m][2 * kk][1]);
        pa[m][1] = packBf16(s[m][2 * kk][2], s[m][2 * kk][3]);
        pa[m][2] = packBf16(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
        pa[m][3] = packBf16(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t b[4];
        ldmatrixX4Trans(b, Vs + (kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + dp * 16 + (lane / 16) * 8);
#pragma unroll
        for (int m = 0; m < MT; m++) {
          mma16816(o[m][2 * dp], pa[m], b[0], b[1]);
          mma16816(o[m][2 * dp + 1], pa[m], b[2], b[3]);
        }
      }
    }
  };

  rowTable(0, 0);
  rowTable(BN, 1);
  __syncthreads();
  loadKV(0);
  cpAsyncCommit();
  for (int t = 0; t < numKeyTiles; t++) {
    const int j0 = t * BN;
    cpAsyncWait<0>();  // tile t (and Q) landed for this thread
    __syncthreads();   // for every thread; and every warp is done with tile t - 1's stage
    if (t + 1 < numKeyTiles) {
      loadKV((t + 1) & 1);  // row table (t + 1) & 1 was written before this barrier
      cpAsyncCommit();
    }
    // Table t & 1 was last read for tile t's loads, before this barrier; it is read next for tile
    // t + 2, after the next one.
    if (t + 2 < numKeyTiles) rowTable(j0 + 2 * BN, t & 1);
    if (!active) continue;
    const bf16* Ks = KVs + (t & 1) * 2 * BN * LD;
    const bf16* Vs = Ks + BN * LD;
    // Mask keys after each row's position: only the tiles that reach past the warp's first row.
    const bool mask = j0 + BN - 1 > tile.posStart + wm * 16;
    if (mask)
      tileBody(std::true_type{}, Ks, Vs, j0, mask);
    else
      tileBody(std::false_type{}, Ks, Vs, j0, false);
  }

  if (!active) return;

  // Normalise and store the valid rows.
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float sum = l[m][r];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      int row = wm * 16 + lane / 4 + r * 8;
      if (row >= tile.rows) continue;
      float inv = 1.f / sum;
      bf16* dst = a.out + int64_t(tile.tokenStart + row) * a.outStride + (h0 + wg * MT + m) * D + (lane % 4) * 2;
#pragma unroll
      for (int i = 0; i < D / 8; i++)
        *reinterpret_cast<__nv_bfloat162*>(dst + i * 8) =
            __floats2bfloat162_rn(o[m][i][2 * r] * inv, o[m][i][2 * r + 1] * inv);
    }
}

template <int D, int BN, int MT, int NW, int MINB>
void launchGqa(const PrefillAttentionArgs& a, cudaStream_t s) {
  constexpr int HPB = MT * NW / 4;
  auto kernel = prefillAttentionGqaKernel<D, BN, MT, NW, MINB>;
  const size_t smem = size_t(HPB * BM + 4 * BN) * (D + 8) * sizeof(bf16) + 2 * BN * sizeof(bf16*);
  if (smem > 48 * 1024) MS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  launchPdl("prefillAttentionGqaKernel", kernel, dim3(a.heads / HPB, a.numTiles), dim3(NW * 32), smem, s, a);
}

// The gqa kernel for head dim D (64 keys per tile): 4 heads per block (8 warps, two heads each)
// where the KV group has a multiple of 4 query heads, else 2 heads (4 warps), else 1.
template <int D>
void launchGqaFor(const PrefillAttentionArgs& a, cudaStream_t s) {
  const int rep = a.heads / a.kv.kvHeads;
  if (rep % 2 != 0)
    launchGqa<D, 64, 1, 4, 2>(a, s);
  else if (rep % 4 != 0)
    launchGqa<D, 64, 2, 4, 2>(a, s);
  else
    launchGqa<D, 64, 2, 8, 1>(a, s);
}

}  // namespace

void prefillAttention(const PrefillAttentionArgs& a, cudaStream_t s) {
  if (prefillAttentionWgmmaFits(a))
    prefillAttentionWgmma(a, s);
  else
    prefillAttentionMma(a, s);
}

void prefillAttentionMma(const PrefillAttentionArgs& a, cudaStream_t s) {
  if (a.numTiles == 0) return;
  if (a.numTiles > 65535) throw CudaError("prefillAttention: more than 65535 query tiles in one launch", false);
  switch (a.kv.headDim) {
    case 16: launchGqaFor<16>(a, s); break;
    case 32: launchGqaFor<32>(a, s); break;
    case 64: launchGqaFor<64>(a, s); break;
    case 128: launchGqaFor<128>(a, s); break;
    default: throw CudaError("prefillAttention: unsupported head dim " + std::to_string(a.kv.headDim), false);
  }
}

}  // namespace ms::cuda
