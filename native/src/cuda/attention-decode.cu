// Paged decode attention (flash-decoding). One block per (split, KV head, query token) handles
// the REP query heads that share the KV head over keys [split * splitLen, ...) of the context,
// in one pass: each warp streams its keys' K and V rows (D/8 lanes per key, 16-byte loads,
// kUnroll keys per lane group in flight) with an online softmax kept per warp; the block merges
// its warps into one unnormalised partial, and the last split block of a (token, KV head) to
// finish merges the splits (a self-resetting counter). K and V are read once per KV head.
// Before the PDL wait the block already loads its page ids and its first K/V rows: every key but
// the newest was written by an earlier forward, so only q and the newest key wait.
#include <cfloat>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "bf16-vec.h"
#include "check.h"
#include "decode-merge.h"
#include "kernels.h"
#include "pdl.h"

namespace ms::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kUnroll = 4;  // keys per lane group in flight
constexpr float kLog2e = 1.4426950408889634f;

// grid (maxSplits, kvHeads, numQueries), block 32 * kWarps.
template <int D, int REP>
__global__ void __launch_bounds__(32 * kWarps) decodeAttentionKernel(DecodeAttentionArgs a) {
  constexpr int TPK = D / 8;     // lanes per key, each 8 dims
  constexpr int KPW = 32 / TPK;  // keys per warp step
  constexpr int STEP = kWarps * KPW;
  __shared__ float smM[kWarps][REP], smL[kWarps][REP], smO[kWarps][REP][D];
  __shared__ int32_t smPage[kMaxSplitLen + 2];
  __shared__ int smIsLast;

  {  // the output projection's weights towards L2 (they depend on nothing)
    const size_t b = blockIdx.x + size_t(gridDim.x) * (blockIdx.y + size_t(gridDim.y) * blockIdx.z);
    prefetchL2(a.prefetch.ptr, a.prefetch.bytes, b * blockDim.x + threadIdx.x,
               size_t(gridDim.x) * gridDim.y * gridDim.z * blockDim.x);
  }
  const int qi = blockIdx.z, g = blockIdx.y, split = blockIdx.x;
  const int tok = a.queries[qi];  // metadata: copied before the first kernel, safe before the wait
  const int ctx = a.meta.pos[tok] + 1;
  const int k0 = split * a.splitLen;
  if (k0 >= ctx) {
    pdlWait();
    return;
  }
  const int n = min(ctx - k0, a.splitLen), newest = ctx - 1 - k0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, sub = lane / TPK, part = lane % TPK;
  const int kvDim = a.kv.kvHeads * D, ps = a.kv.pageSize, page0 = k0 / ps;
  const int32_t* pt = a.meta.pageTable + int64_t(a.meta.seqOf[tok]) * a.meta.ptStride;
  for (int j = threadIdx.x; j <= (k0 + n - 1) / ps - page0; j += blockDim.x) smPage[j] = pt[page0 + j];
  __syncthreads();
  const bf16* kBase = a.kv.base + g * D + part * 8;
  const bf16* vBase = kBase + int64_t(ps) * kvDim;
  auto offset = [&](int kb) {
    int key = k0 + kb;
    return int64_t(smPage[key / ps - page0]) * a.kv.pageStride + int64_t(key % ps) * kvDim;
  };
  uint4 kr[kUnroll], vr[kUnroll];
  auto load = [&](int base, bool skipNewest) {
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      int kb = base + u * STEP + sub;
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (kb < n && !(skipNewest && kb == newest)) {
        int64_t off = offset(kb);
        kr[u] = *reinterpret_cast<const uint4*>(kBase + off);
        vr[u] = *reinterpret_cast<const uint4*>(vBase + off);
      }
    }
  };
  const int first = warp * KPW;
  load(first, true);
  pdlWait();  // q and the newest K/V come from the kernels before
  pdlTrigger();
#pragma unroll
  for (int u = 0; u < kUnroll; u++)
    if (newest < n && first + u * STEP + sub == newest) {  // the newest key lies in this split
      int64_t off = offset(newest);
      kr[u] = *reinterpret_cast<const uint4*>(kBase + off);
      vr[u] = *reinterpret_cast<const uint4*>(vBase + off);
    }

  float q[REP][8];
#pragma unroll
  for (int h = 0; h < REP; h++) {
    uint4 v = *reinterpret_cast<const uint4*>(a.q + int64_t(tok) * a.qStride + (g * REP + h) * D + part * 8);
    toFloat8(v, q[h]);
#pragma unroll
    for (int i = 0; i < 8; i++) q[h][i] *= a.scale * kLog2e;  // scores in the log2 domain
  }
  float m[REP], l[REP], acc[REP][8];
#pragma unroll
  for (int h = 0; h < REP; h++) {
    m[h] = -FLT_MAX;
    l[h] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) acc[h][i] = 0.f;
  }

  // Loop bounds are warp-uniform so the shuffles see every lane; key `base` (sub 0, u 0) is valid.
  for (int base = first; base < n; base += STEP * kUnroll) {
    if (base != first) load(base, false);
    float sc[kUnroll][REP];
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      float kf[8];
      toFloat8(kr[u], kf);
      const bool valid = base + u * STEP + sub < n;
#pragma unroll
      for (int h = 0; h < REP; h++) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) d = fmaf(q[h][i], kf[i], d);
#pragma unroll
        for (int o = TPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        sc[u][h] = valid ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < REP; h++) {
      float mx = sc[0][h];
#pragma unroll
      for (int u = 1; u < kUnroll; u++) mx = fmaxf(mx, sc[u][h]);
#pragma unroll
      for (int o = TPK; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float mNew = fmaxf(m[h], mx), alpha = exp2f(m[h] - mNew);
      m[h] = mNew;
      l[h] *= alpha;
#pragma unroll
      for (int i = 0; i < 8; i++) acc[h][i] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      float vf[8];
      toFloat8(vr[u], vf);
#pragma unroll
      for (int h = 0; h < REP; h++) {
        float p = exp2f(sc[u][h] - m[h]);
        l[h] += p;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[h][i] = fmaf(p, vf[i], acc[h][i]);
      }
    }
  }
  // Lane groups of a warp share m: sum their l and acc; then merge the warps.
#pragma unroll
  for (int h = 0; h < REP; h++) {
#pragma unroll
    for (int o = TPK; o < 32; o <<= 1) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], o);
#pragma unroll
      for (int i = 0; i < 8; i++) acc[h][i] += __shfl_xor_sync(0xffffffffu, acc[h][i], o);
    }
  }
  if (sub == 0) {
#pragma unroll
    for (int h = 0; h < REP; h++) {
#pragma unroll
      for (int i = 0; i < 8; i++) smO[warp][h][part * 8 + i] = acc[h][i];
      if (part == 0) smM[warp][h] = m[h], smL[warp][h] = l[h];
    }
  }
  __syncthreads();
  const int numSplits = (ctx + a.splitLen - 1) / a.splitLen;
  const int64_t slot0 = (int64_t(qi) * a.heads + g * REP) * a.maxSplits;  // head g * REP, split 0
  for (int e = threadIdx.x; e < REP * D; e += blockDim.x) {
    const int h = e / D, d = e % D;
    float M = smM[0][h];
    for (int w = 1; w < kWarps; w++) M = fmaxf(M, smM[w][h]);
    float o = 0.f, L = 0.f;
    for (int w = 0; w < kWarps; w++) {
      float f = exp2f(smM[w][h] - M);  // a warp without keys has m = -FLT_MAX: weight 0
      o += f * smO[w][h][d];
      L += f * smL[w][h];
    }
    if (numSplits == 1) {
      a.out[int64_t(tok) * a.outStride + (g * REP + h) * D + d] = __float2bfloat16(o / L);
      continue;
    }
    const int64_t slot = slot0 + int64_t(h) * a.maxSplits + split;
    a.partO[slot * D + d] = o;
    if (d == 0) {
      a.partML[slot * 2] = M;
      a.partML[slot * 2 + 1] = L;
    }
  }
  if (numSplits == 1) return;

  mergeSplitsIfLast(a, qi, g, REP, D, numSplits, slot0, tok, &smIsLast);
}

template <int D, int REP>
void launchDecode(const DecodeAttentionArgs& a, cudaStream_t s) {
  launchPdl("decodeAttentionKernel", decodeAttentionKernel<D, REP>, dim3(a.maxSplits, a.kv.kvHeads, a.numQueries),
            dim3(32 * kWarps), 0, s, a);
}

template <int D>
void dispatchRep(const DecodeAttentionArgs& a, int rep, cudaStream_t s) {
  switch (rep) {
    case 1: launchDecode<D, 1>(a, s); break;
    case 2: launchDecode<D, 2>(a, s); break;
    case 4: launchDecode<D, 4>(a, s); break;
    case 8: launchDecode<D, 8>(a, s); break;
    default: throw CudaError("decodeAttention: unsupported heads/kvHeads " + std::to_string(rep), false);
  }
}

}  // namespace

void planDecodeSplits(int numQueries, int kvHeads, int maxCtx, int numSms, int* splitLen, int* maxSplits) {
  int groups = numQueries * kvHeads;
  int want = (2 * numSms + groups - 1) / groups;                   // enough blocks for two waves
  int minCount = (maxCtx + kMaxSplitLen - 1) / kMaxSplitLen;      // bounded work per block
  int count = want > minCount ? want : minCount;
  int len = (maxCtx + count - 1) / count;
  len = (len + 63) / 64 * 64;
  if (len < 64) len = 64;
  if (len > kMaxSplitLen) len = kMaxSplitLen;
  *splitLen = len;
  *maxSplits = (maxCtx + len - 1) / len;
}

void planDecodeCluster(DecodeAttentionArgs& a, int cap) {
  int c = 1;
  while (c * 2 <= cap && c * 2 <= a.maxSplits) c *= 2;
  if (c < kMinCluster) return;
  const int maxCtx = a.maxSplits * a.splitLen;
  const int bound = ((maxCtx + c - 1) / c + 15) / 16 * 16;
  if (bound > kMaxSplitLen) return;
  a.clusterSize = c;
  a.splitLen = bound;
}

void decodeAttentionSimt(const DecodeAttentionArgs& a, cudaStream_t s) {
  if (a.numQueries == 0) return;
  if (a.splitLen <= 0 || a.splitLen > kMaxSplitLen || a.splitLen % 64 != 0 || a.maxSplits <= 0)
    throw CudaError("decodeAttention: bad split plan", false);
  int rep = a.heads / a.kv.kvHeads;
  switch (a.kv.headDim) {
    case 16: dispatchRep<16>(a, rep, s); break;
    case 32: dispatchRep<32>(a, rep, s); break;
    case 64: dispatchRep<64>(a, rep, s); break;
    case 128: dispatchRep<128>(a, rep, s); break;
    default: throw CudaError("decodeAttention: unsupported head dim " + std::to_string(a.kv.headDim), false);
  }
}

namespace {
bool simtSelected() {
  const char* v = std::getenv("MS_DECODE_KERNEL");
  return v && std::string(v) == "simt";
}
}  // namespace

bool decodeRopeFused() {
  const char* v = std::getenv("MS_FUSED_ROPE");
  return !(v && v[0] == '0') && !simtSelected();
}

void decodeAttention(const DecodeAttentionArgs& args, cudaStream_t s) {
  DecodeAttentionArgs a = args;
  a.prefetch.bytes = std::min(a.prefetch.bytes, kMaxL2Prefetch);
  const char* mv = std::getenv("MS_DECODE_MERGE");  // [default: batched] serial = the former merge
  a.serialMerge = mv && std::string(mv) == "serial";
  const bool simt = simtSelected();
  if (a.numQueries == 0) return;
  if (simt) {
    if (a.ropeInvFreq) throw CudaError("decodeAttention: fused RoPE needs the tensor-core kernel", false);
    decodeAttentionSimt(a, s);
    return;
  }
  if (a.splitLen <= 0 || a.splitLen > kMaxSplitLen || a.splitLen % 64 != 0 || a.maxSplits <= 0 ||
      a.heads / a.kv.kvHeads > 8)
    throw CudaError("decodeAttention: bad split plan or GQA group over 8", false);
  const char* tv = std::getenv("MS_DECODE_TRIGGER");
  a.triggerAtEntry = tv && std::string(tv) == "entry";
  const char* cv = std::getenv("MS_DECODE_CLUSTER");  // [default: the device's largest] 0 = split merge
  planDecodeCluster(a, cv ? std::min(std::atoi(cv), decodeMaxCluster()) : decodeMaxCluster());
  decodeAttentionMma(a, s);
}

}  // namespace ms::cuda
