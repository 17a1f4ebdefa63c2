// Logit processing and logprobs on the GPU: the kernels of logit-processing.h, in the order they
// run. The float operations are the host's, one at a time and uncontracted (__fadd_rn & co.),
// so a processed logit equals the CPU backend's bit for bit.
#include <climits>
#include <cmath>

#include "block-select.cuh"
#include "check.h"
#include "logit-processing.h"
#include "pdl.h"
#include "sampling.h"

namespace ms::cuda {
namespace {

using namespace block;

// P2: block per row; a thread takes each run of one token's entries and adds them in order.
constexpr int kBiasThreads = 256;
__global__ void __launch_bounds__(kBiasThreads) biasKernel(ExtrasArgs a) {
  pdlWait();
  pdlTrigger();
  const int row = blockIdx.x, V = a.vocab;
  const int32_t* ex = a.extras + size_t(row) * kExtraInts;
  const int b0 = max(ex[kBiasBegin], a.biasFrom), b1 = min(ex[kBiasEnd], a.biasTo);
  float* z = a.logits + size_t(row) * V;
  const int32_t* tok = a.biasTokens - a.biasFrom;
  const float* val = a.biasValues - a.biasFrom;
  for (int e = b0 + int(threadIdx.x); e < b1; e += kBiasThreads) {
    const int t = tok[e];
    if ((e > b0 && tok[e - 1] == t) || t < 0 || t >= V) continue;  // not the first of its run
    float v = z[t];
    for (int f = e; f < b1 && tok[f] == t; f++) v = __fadd_rn(v, val[f]);
    z[t] = v;
  }
}

// P1 + P3 + P4: block (part, row) over a slice of the row.
constexpr int kDenseThreads = 256;
__global__ void __launch_bounds__(kDenseThreads) maskPenaltyKernel(ExtrasArgs a, int parts) {
  pdlWait();
  pdlTrigger();
  const int row = blockIdx.y, V = a.vocab;
  const int32_t* ex = a.extras + size_t(row) * kExtraInts;
  const int slot = ex[kSlot], maskRow = ex[kMaskRow];
  const bool isPenalized = slot >= 0 && slot < a.numSlots;
  if (!isPenalized && maskRow < 0) return;
  const float r = __int_as_float(ex[kRepetition]), f = __int_as_float(ex[kFrequency]), p = __int_as_float(ex[kPresence]);
  const uint32_t* m = maskRow >= 0 ? a.mask + size_t(maskRow) * a.maskWords : nullptr;
  const int32_t* cnt = isPenalized ? a.counts + size_t(slot) * V : nullptr;
  float* z = a.logits + size_t(row) * V;
  const int chunk = (V + parts - 1) / parts, lo = blockIdx.x * chunk, hi = min(V, lo + chunk);
  for (int i = lo + int(threadIdx.x); i < hi; i += kDenseThreads) {
    const bool isBanned = m && !((m[i >> 5] >> (i & 31)) & 1u);
    const int32_t c = cnt ? cnt[i] : 0;
    if (!isBanned && !c) continue;
    float v = isBanned ? -INFINITY : z[i];
    if (c) {
      if (r != 1.f) v = v > 0.f ? __fdiv_rn(v, r) : __fmul_rn(v, r);
      const int n = c >> 1;  // times in the output
      if (n > 0) v = __fsub_rn(v, __fadd_rn(__fmul_rn(float(n), f), p));
    }
    z[i] = v;
  }
}

// Sortable key of a logit (NaN as -inf, -0 as +0): larger value, larger key; never 0.
__device__ __forceinline__ uint32_t logitKey(float v) {
  v = noNan(v);
  if (v == 0.f) v = 0.f;
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__global__ void __launch_bounds__(kThreads) logprobsKernel(LogprobArgs a) {
  __shared__ RadixScratch sc;
  __shared__ double redD[kWarps];
  __shared__ u64 red[kWarps];
  __shared__ float redV[kWarps];
  __shared__ int redI[kWarps];
  __shared__ int cand[kMaxLogprobs];
  __shared__ int numCand;
  const int row = blockIdx.x, V = a.vocab, tid = threadIdx.x;
  pdlWait();
  pdlTrigger();
  const int n = a.numTop[size_t(row) * a.numTopStride];
  if (n < 0) return;  // uniform across the block
  const float* z = a.logits + size_t(row) * V;
  const float T = a.sampleParams ? __int_as_float(a.sampleParams[size_t(row) * kSampleParamInts]) : 1.f;
  const double t = T > 0.f ? double(T) : 1.0;

  float m = -INFINITY;
  int best = INT_MAX;
  for (int i = tid; i < V; i += kThreads) {
    const float v = noNan(z[i]);
    if (better(v, i, m, best)) m = v, best = i;
  }
  blockArgmax(m, best, redV, redI);
  const double md = double(z[best]) / t;
  double sum = 0;
  for (int i = tid; i < V; i += kThreads) {
    const float v = z[i];
    if (v == v) sum += exp(double(v) / t - md);
  }
  sum = blockSum(sum, redD);
  const double lse = md + log(sum);
  auto lp = [&](int i) {
    const float v = z[i];
    return v != v ? -INFINITY : float(double(v) / t - lse);
  };
  int32_t* o = a.out + size_t(row) * kLogprobInts;
  if (tid < kMaxLogprobs) o[1 + tid] = __float_as_int(-INFINITY), o[1 + kMaxLogprobs + tid] = -1;
  if (tid == 0) {
    if (a.lse) a.lse[row] = lse;
    if (a.targets) {
      const int tg = a.targets[row];
      o[0] = __float_as_int(tg >= 0 && tg < V ? lp(tg) : -INFINITY);
    }
  }
  const int k = min(n, V);
  if (k == 0) return;
  // The k-th largest key (the radix search, counting), then the keys above it and the lowest ids
  // of those equal to it, sorted by (value, lower id first).
  auto key = [&](int i) { return logitKey(z[i]); };
  u64 numAtLeast;
  const uint32_t thr = uint32_t(radixSearch(key, V, true, false, double(k), u64(V), sc, &numAtLeast));
  if (tid == 0) numCand = 0;
  __syncthreads();
  for (int i = tid; i < V; i += kThreads)
    if (key(i) > thr) cand[atomicAdd(&numCand, 1)] = i;  // fewer than k: thr is the k-th largest
  __syncthreads();
  const int numAbove = numCand, need = k - numAbove;
  const int chunk = (V + kThreads - 1) / kThreads;
  const int lo = min(V, tid * chunk), hi = min(V, lo + chunk);
  u64 mine = 0;
  for (int i = lo; i < hi; i++) mine += key(i) == thr;
  const u64 before = blockExclusiveScan(mine, red);
  if (before < u64(need)) {
    int j = int(before);
    for (int i = lo; i < hi && j < need; i++)
      if (key(i) == thr) cand[numAbove + j++] = i;
  }
  __syncthreads();
  if (tid == 0) {
    for (int x = 1; x < k; x++) {  // insertion sort of at most kMaxLogprobs ids
      const int c = cand[x];
      const uint32_t kc = key(c);
      int y = x - 1;
      for (; y >= 0 && (key(cand[y]) < kc || (key(cand[y]) == kc && cand[y] > c)); y--) cand[y + 1] = cand[y];
      cand[y + 1] = c;
    }
  }
  __syncthreads();
  if (tid < k) o[1 + tid] = __float_as_int(lp(cand[tid])), o[1 + kMaxLogprobs + tid] = cand[tid];
}

// One thread per row: the sampled token's count, then its logprob from the row's (kept) logits.
__global__ void afterSampleKernel(ExtrasArgs a) {
  pdlWait();
  const int row = blockIdx.x * blockDim.x + threadIdx.x, V = a.vocab;
  if (row >= a.rows) return;
  const int32_t* ex = a.extras + size_t(row) * kExtraInts;
  const int tok = a.tokens[row], slot = ex[kSlot];
  if (tok < 0 || tok >= V) return;
  if (slot >= 0 && slot < a.numSlots) {
    int32_t* c = a.counts + size_t(slot) * V + tok;
    *c = (*c | 1) + 2;
  }
  if (ex[kNumLogprobs] >= 0) {
    const float T = __int_as_float(a.sampleParams[size_t(row) * kSampleParamInts]);
    const double t = T > 0.f ? double(T) : 1.0;
    const float v = a.logits[size_t(row) * V + tok];
    a.out[size_t(row) * kLogprobInts] = __float_as_int(v != v ? -INFINITY : float(double(v) / t - a.lse[row]));
  }
}

__global__ void rebuildKernel(int32_t* counts, int vocab, const int32_t* entries, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int code = entries[2 * i], tok = entries[2 * i + 1];
  int32_t* c = counts + size_t(code >> 1) * vocab + tok;
  if (code & 1) atomicAdd(c, 2);
  atomicOr(c, 1);
}

}  // namespace

void applyBias(const ExtrasArgs& a, cudaStream_t s) {
  if (a.rows <= 0 || a.biasTo <= a.biasFrom) return;
  launchPdl("biasKernel", biasKernel, dim3(a.rows), dim3(kBiasThreads), 0, s, a);
}

void applyMaskPenalties(const ExtrasArgs& a, cudaStream_t s) {
  if (a.rows <= 0) return;
  const int parts = argmaxParts(a.rows);  // the same spread as the sampler's argmax
  launchPdl("maskPenaltyKernel", maskPenaltyKernel, dim3(parts, a.rows), dim3(kDenseThreads), 0, s, a, parts);
}

void computeLogprobs(const LogprobArgs& a, cudaStream_t s) {
  if (a.rows <= 0) return;
  launchPdl("logprobsKernel", logprobsKernel, dim3(a.rows), dim3(kThreads), 0, s, a);
}

void afterSample(const ExtrasArgs& a, cudaStream_t s) {
  if (a.rows <= 0) return;
  launchPdl("afterSampleKernel", afterSampleKernel, dim3((a.rows + 127) / 128), dim3(128), 0, s, a);
}

void rebuildPenaltySlots(int32_t* counts, int vocab, const int32_t* entries, int n, cudaStream_t s) {
  if (n <= 0) return;
  rebuildKernel<<<(n + 255) / 256, 256, 0, s>>>(counts, vocab, entries, n);
  MS_LAUNCH_CHECK("rebuildKernel");
}

}  // namespace ms::cuda
