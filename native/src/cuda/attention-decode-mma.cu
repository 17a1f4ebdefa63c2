// Paged decode attention on the tensor cores. The rep query heads that share a KV head are the
// rows of a 16-row mma tile (rows past rep are zero), so the K and V of a split stream through
// shared memory with cp.async as in the prefill kernel, and the arithmetic is off the critical
// path. One block (4 warps) per (split, KV head, query token); every 64-key tile is shared by
// the warps, 16 keys each, each warp with its own online softmax; the warps, then the splits
// (the last block to finish, see decode-merge.h), are merged. K/V tiles are double-buffered (the
// next tile's copy runs during this tile's math). The page ids and the first tile (all but the
// newest key) are loaded before the PDL wait, as is a slice of the output projection's weights
// towards L2. With ropeInvFreq (pure-decode layers) the kernel also does ropeAppend's work for its
// tokens: the split holding the newest key rotates k and writes k and v into the page slot before
// loading it, and every block rotates its q heads as it stages them (one kernel less per layer).
#include <cfloat>
#include <cmath>

#include "check.h"
#include "decode-merge.h"
#include "kernels.h"
#include "mma-ptx.h"
#include "pdl.h"

namespace ms::cuda {
namespace {

constexpr int BN = 64;  // keys per tile
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
constexpr size_t smemBytes(int numPageIds) {
  return size_t(16 + 4 * BN) * (D + 8) * sizeof(bf16) + size_t(numPageIds) * sizeof(int32_t);
}

// grid (maxSplits, kvHeads, numQueries), block kThreads; dynamic smem smemBytes<D>(splitLen / pageSize + 2).
template <int D>
__global__ void __launch_bounds__(kThreads) decodeAttentionMmaKernel(DecodeAttentionArgs a) {
  constexpr int LD = D + 8, CPR = D / 8;
  extern __shared__ __align__(16) unsigned char smRaw[];
  bf16* Qs = reinterpret_cast<bf16*>(smRaw);      // (16, LD)
  bf16* KV = Qs + 16 * LD;                        // 2 buffers of K (BN, LD) then V (BN, LD)
  int32_t* smPage = reinterpret_cast<int32_t*>(KV + 4 * BN * LD);
  float* smO = reinterpret_cast<float*>(KV);      // (4 warps, 8 heads, D), once the tiles are consumed
  __shared__ float smM[4][8], smL[4][8];
  __shared__ int smIsLast;
  {  // the output projection's weights towards L2 (they depend on nothing)
    const size_t b = blockIdx.x + size_t(gridDim.x) * (blockIdx.y + size_t(gridDim.y) * blockIdx.z);
    prefetchL2(a.prefetch.ptr, a.prefetch.bytes, b * blockDim.x + threadIdx.x,
               size_t(gridDim.x) * gridDim.y * gridDim.z * blockDim.x);
  }

  const int rep = a.heads / a.kv.kvHeads;
  const int qi = blockIdx.z, g = blockIdx.y, split = blockIdx.x;
  const int tok = a.queries[qi];  // metadata: copied before the first kernel, safe before the wait
  const int ctx = a.meta.pos[tok] + 1;
  const int k0 = split * a.splitLen;
  if (k0 >= ctx) {
    pdlWait();
    return;
  }
  const int n = min(ctx - k0, a.splitLen), newest = ctx - 1 - k0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kvDim = a.kv.kvHeads * D, ps = a.kv.pageSize, page0 = k0 / ps;
  const int32_t* pt = a.meta.pageTable + int64_t(a.meta.seqOf[tok]) * a.meta.ptStride;
  for (int j = threadIdx.x; j <= (k0 + n - 1) / ps - page0; j += kThreads) smPage[j] = pt[page0 + j];
  __syncthreads();
  const bf16* kBase = a.kv.base + g * D;
  const int64_t vOff = int64_t(ps) * kvDim;
  auto keySrc = [&](int kb, int col) {
    const int key = k0 + kb;
    return kBase + int64_t(smPage[key / ps - page0]) * a.kv.pageStride + int64_t(key % ps) * kvDim + col;
  };
  auto loadTile = [&](int j0, bool skipNewest) {  // keys [j0, j0 + BN) of the split; zeros past n
    bf16* Ks = KV + ((j0 / BN) % 2) * 2 * BN * LD;
    bf16* Vs = Ks + BN * LD;
    for (int c = threadIdx.x; c < BN * CPR; c += kThreads) {
      const int r = c / CPR, col = (c % CPR) * 8, kb = j0 + r;
      if (skipNewest && kb == newest) continue;
      const bf16* src = a.kv.base;
      int bytes = 0;
      if (kb < n) src = keySrc(kb, col), bytes = 16;
      cpAsync16(Ks + r * LD + col, src, bytes);
      cpAsync16(Vs + r * LD + col, bytes ? src + vOff : src, bytes);
    }
  };
  loadTile(0, true);
  pdlWait();  // q and the newest K/V come from the kernels before
  pdlTrigger();
  const bf16* qRow = a.q + int64_t(tok) * a.qStride;
  if (a.ropeInvFreq && newest < n) {  // this split holds the newest key: rotate k, append k and v
    const int pos = ctx - 1;
    bf16* kDst = a.kv.base + int64_t(smPage[pos / ps - page0]) * a.kv.pageStride + int64_t(pos % ps) * kvDim + g * D;
    const bf16* kSrc = qRow + (a.heads + g) * D;
    for (int i = threadIdx.x; i < D / 2; i += kThreads) {
      float sn, cs;
      sincosf(float(pos) * a.ropeInvFreq[i], &sn, &cs);  // as ropeAppendKernel: f32 angle, full sin/cos
      const float x0 = __bfloat162float(kSrc[i]), x1 = __bfloat162float(kSrc[i + D / 2]);
      kDst[i] = __float2bfloat16(x0 * cs - x1 * sn);
      kDst[i + D / 2] = __float2bfloat16(x1 * cs + x0 * sn);
    }
    const bf16* vSrc = qRow + (a.heads + a.kv.kvHeads + g) * D;
    for (int i = threadIdx.x; i < D / 8; i += kThreads)
      reinterpret_cast<uint4*>(kDst + vOff)[i] = reinterpret_cast<const uint4*>(vSrc)[i];
    __threadfence_block();
    __syncthreads();  // the slot is written before the cp.async below reads it back
  }
  if (newest < BN && newest < n)
    for (int c = threadIdx.x; c < CPR; c += kThreads) {
      const bf16* src = keySrc(newest, c * 8);
      cpAsync16(KV + newest * LD + c * 8, src, 16);
      cpAsync16(KV + (BN + newest) * LD + c * 8, src + vOff, 16);
    }
  cpAsyncCommit();
  const int numTiles = (n + BN - 1) / BN;
  if (numTiles > 1) {
    loadTile(BN, false);
    cpAsyncCommit();
  }
  if (a.ropeInvFreq) {  // q heads g * rep + r rotated here (pairs i, i + D/2); rows past rep zero
    const int pos = ctx - 1;
    for (int e = threadIdx.x; e < 16 * (D / 2); e += kThreads) {
      const int r = e / (D / 2), i = e % (D / 2);
      bf16 lo = __float2bfloat16(0.f), hi = lo;
      if (r < rep) {
        float sn, cs;
        sincosf(float(pos) * a.ropeInvFreq[i], &sn, &cs);
        const bf16* src = qRow + (g * rep + r) * D;
        const float x0 = __bfloat162float(src[i]), x1 = __bfloat162float(src[i + D / 2]);
        lo = __float2bfloat16(x0 * cs - x1 * sn);
        hi = __float2bfloat16(x1 * cs + x0 * sn);
      }
      Qs[r * LD + i] = lo;
      Qs[r * LD + i + D / 2] = hi;
    }
  } else {
    for (int c = threadIdx.x; c < 16 * CPR; c += kThreads) {
      const int r = c / CPR, col = (c % CPR) * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < rep) v = *reinterpret_cast<const uint4*>(qRow + (g * rep + r) * D + col);
      *reinterpret_cast<uint4*>(Qs + r * LD + col) = v;
    }
  }
  if (numTiles > 1)
    cpAsyncWait<1>();  // tile 0 landed; tile 1 may still be in flight
  else
    cpAsyncWait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)
    ldmatrixX4(qf[kk], Qs + ((lane % 8) + ((lane / 8) % 2) * 8) * LD + kk * 16 + (lane / 16) * 8);

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0.f, 0.f};
  const float sl2 = a.scale * kLog2e;
  for (int t = 0; t < numTiles; t++) {
    const bf16* Ks = KV + (t % 2) * 2 * BN * LD;
    const bf16* Vs = Ks + BN * LD;
    if (t > 0) {  // tile t was issued one iteration ago; issue t + 1 into the other buffer
      if (t + 1 < numTiles) {
        loadTile((t + 1) * BN, false);
        cpAsyncCommit();
        cpAsyncWait<1>();
      } else {
        cpAsyncWait<0>();
      }
      __syncthreads();
    }
    // S = Q . K^T for this warp's 16 keys of the tile.
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      uint32_t b[4];
      ldmatrixX4(b, Ks + (warp * 16 + (lane % 8) + (lane / 16) * 8) * LD + kk * 16 + ((lane / 8) % 2) * 8);
      mma16816(s[0], qf[kk], b[0], b[1]);
      mma16816(s[1], qf[kk], b[2], b[3]);
    }
    float mx[2] = {-FLT_MAX, -FLT_MAX};
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int kb = t * BN + warp * 16 + nt * 8 + (lane % 4) * 2 + (e & 1);
        const float v = kb < n ? s[nt][e] * sl2 : -INFINITY;
        s[nt][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float mNew = fmaxf(m[r], mx[r]);  // finite: m starts at -FLT_MAX
      alpha[r] = exp2f(m[r] - mNew);
      m[r] = mNew;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const float p = exp2f(s[nt][e] - m[e >> 1]);
        s[nt][e] = p;
        l[e >> 1] += p;
      }
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      o[i][0] *= alpha[0];
      o[i][1] *= alpha[0];
      o[i][2] *= alpha[1];
      o[i][3] *= alpha[1];
    }
    // O += P . V over the same 16 keys.
    const uint32_t pa[4] = {packBf16(s[0][0], s[0][1]), packBf16(s[0][2], s[0][3]), packBf16(s[1][0], s[1][1]),
                            packBf16(s[1][2], s[1][3])};
#pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
      uint32_t b[4];
      ldmatrixX4Trans(b, Vs + (warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + dp * 16 + (lane / 16) * 8);
      mma16816(o[2 * dp], pa, b[0], b[1]);
      mma16816(o[2 * dp + 1], pa, b[2], b[3]);
    }
    __syncthreads();  // this buffer is consumed before the load two tiles on (or smO) overwrites it
  }

  // Per-warp state of row lane / 4 (head g * rep + row; rows >= rep are padding) -> shared.
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const int row = lane / 4;
  if (row < rep) {
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      smO[(warp * 8 + row) * D + i * 8 + (lane % 4) * 2] = o[i][0];
      smO[(warp * 8 + row) * D + i * 8 + (lane % 4) * 2 + 1] = o[i][1];
    }
    if (lane % 4 == 0) smM[warp][row] = m[0], smL[warp][row] = l[0];
  }
  __syncthreads();
  const int numSplits = (ctx + a.splitLen - 1) / a.splitLen;
  const int64_t slot0 = (int64_t(qi) * a.heads + g * rep) * a.maxSplits;  // head g * rep, split 0
  for (int e = threadIdx.x; e < rep * D; e += kThreads) {
    const int h = e / D, d = e % D;
    float M = smM[0][h];
    for (int w = 1; w < 4; w++) M = fmaxf(M, smM[w][h]);
    float acc = 0.f, L = 0.f;
    for (int w = 0; w < 4; w++) {
      const float f = exp2f(smM[w][h] - M);  // a warp without keys has m = -FLT_MAX: weight 0
      acc += f * smO[(w * 8 + h) * D + d];
      L += f * smL[w][h];
    }
    if (numSplits == 1) {
      a.out[int64_t(tok) * a.outStride + (g * rep + h) * D + d] = __float2bfloat16(acc / L);
      continue;
    }
    const int64_t slot = slot0 + int64_t(h) * a.maxSplits + split;
    a.partO[slot * D + d] = acc;
    if (d == 0) {
      a.partML[slot * 2] = M;
      a.partML[slot * 2 + 1] = L;
    }
  }
  if (numSplits == 1) return;
  mergeSplitsIfLast(a, qi, g, rep, D, numSplits, slot0, tok, &smIsLast);
}

template <int D>
void launchMma(const DecodeAttentionArgs& a, cudaStream_t s) {
  const size_t smem = smemBytes<D>(a.splitLen / a.kv.pageSize + 2);
  launchPdl("decodeAttentionMmaKernel", decodeAttentionMmaKernel<D>, dim3(a.maxSplits, a.kv.kvHeads, a.numQueries),
            dim3(kThreads), smem, s, a);
}

template <int D>
void allowSmem() {
  MS_CUDA_CHECK(cudaFuncSetAttribute(decodeAttentionMmaKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(smemBytes<D>(kMaxSplitLen + 2))));
}

}  // namespace

void decodeAttentionInit() {
  allowSmem<16>();
  allowSmem<32>();
  allowSmem<64>();
  allowSmem<128>();
}

void decodeAttentionMma(const DecodeAttentionArgs& a, cudaStream_t s) {
  switch (a.kv.headDim) {
    case 16: launchMma<16>(a, s); break;
    case 32: launchMma<32>(a, s); break;
    case 64: launchMma<64>(a, s); break;
    case 128: launchMma<128>(a, s); break;
    default: throw CudaError("decodeAttentionMma: unsupported head dim " + std::to_string(a.kv.headDim), false);
  }
}

}  // namespace ms::cuda
