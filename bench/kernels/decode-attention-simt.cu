// Decode attention, variant "simt" (shipped until 2026-11; now bench only): one block per (split,
// KV head, query token) handles the query heads that share the KV head in one pass over its keys,
// D/8 lanes per key with 16-byte loads and shuffles, RoPE in a separate kernel. Lost to the
// tensor-core kernel (attention-decode-mma.cu): 5.795 vs 5.598 ms per 8B decode step at batch 1,
// 10.447 vs 9.732 at batch 64 (H100, bench/results/engine-gpu.md). Here: checked against a float64
// reference, then both kernels timed alone on the 8B shape at 1k context.
//   build: cmake --build native/build --target microserve_kernel_benches; run: decode-attention-simt
#include <array>

#include "common.cuh"
#include "cuda/bf16-vec.h"
#include "cuda/decode-merge.h"
#include "cuda/pdl.h"

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

void decodeAttentionSimt(const DecodeAttentionArgs& a, cudaStream_t s) {
  if (a.numQueries == 0) return;
  if (a.splitLen <= 0 || a.splitLen > kMaxSplitLen || a.splitLen % 64 != 0 || a.maxSplits <= 0)
    throw CudaError("decodeAttentionSimt: bad split plan", false);
  const int rep = a.heads / a.kv.kvHeads;
  switch (a.kv.headDim) {
    case 16: dispatchRep<16>(a, rep, s); break;
    case 32: dispatchRep<32>(a, rep, s); break;
    case 64: dispatchRep<64>(a, rep, s); break;
    case 128: dispatchRep<128>(a, rep, s); break;
    default: throw CudaError("decodeAttentionSimt: unsupported head dim " + std::to_string(a.kv.headDim), false);
  }
}

}  // namespace ms::cuda

using namespace ms::cuda;

// Split plan and scratch for p's queries, as the backend makes them.
struct Plan {
  DecodeAttentionArgs a;
  float *po = nullptr, *pml = nullptr;
  int32_t *cnt = nullptr, *queries = nullptr;
  explicit Plan(const bench::PagedProblem& p) {
    std::vector<int32_t> qs(p.numTokens());
    for (int i = 0; i < p.numTokens(); i++) qs[i] = i;
    queries = bench::upload(qs);
    a.q = p.dQ, a.qStride = p.heads * p.D, a.out = p.dOut, a.outStride = p.heads * p.D;
    a.queries = queries, a.numQueries = p.numTokens(), a.meta = p.meta(), a.kv = p.kv(), a.heads = p.heads;
    a.scale = 1.f / std::sqrt(float(p.D));
    planDecodeSplits(a.numQueries, p.kvHeads, p.ctx, bench::numSms(), &a.splitLen, &a.maxSplits);
    MS_CUDA_CHECK(cudaMalloc(&po, size_t(a.numQueries) * a.heads * a.maxSplits * p.D * 4));
    MS_CUDA_CHECK(cudaMalloc(&pml, size_t(a.numQueries) * a.heads * a.maxSplits * 2 * 4));
    MS_CUDA_CHECK(cudaMalloc(&cnt, size_t(a.numQueries) * p.kvHeads * 4));
    MS_CUDA_CHECK(cudaMemset(cnt, 0, size_t(a.numQueries) * p.kvHeads * 4));
    a.partO = po, a.partML = pml, a.counters = cnt;
  }
  ~Plan() { cudaFree(po), cudaFree(pml), cudaFree(cnt), cudaFree(queries); }
};

int main() {
  try {
    decodeAttentionInit();
    for (auto [batch, heads, kvHeads, D] : {std::array<int, 4>{1, 32, 8, 128}, {8, 32, 8, 128}, {3, 16, 16, 64}}) {
      bench::PagedProblem p(batch, 1025, 1, heads, kvHeads, D, 16);
      Plan plan(p);
      const auto ref = p.reference();
      const std::string tag = " b=" + std::to_string(batch) + " D=" + std::to_string(D) + " rep=" + std::to_string(heads / kvHeads);
      decodeAttentionSimt(plan.a, 0);
      bench::check("simt" + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 1e-2);
      decodeAttention(plan.a, 0);
      bench::check("shipped (decodeAttention)" + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 1e-2);
    }
    for (int batch : {1, 64}) {
      bench::PagedProblem p(batch, 1025, 1, 32, 8, 128, 16);
      Plan plan(p);
      const double simt = bench::timeMs([&] { decodeAttentionSimt(plan.a, 0); });
      const double shipped = bench::timeMs([&] { decodeAttention(plan.a, 0); });
      std::printf("8B shape, b=%d, 1025 keys: simt %.4f ms, shipped %.4f ms per launch (one layer)\n", batch, simt, shipped);
    }
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("decode-attention-simt: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
