// Token sampling: one 1024-thread block per row of logits. The algorithm and its steps are
// defined in common/sampling.h; this file follows them. Every sum is an integer, so the result
// does not depend on the order threads add in: the kernel is deterministic.
//
// Passes over a row (V = vocab): greedy rows 1 (argmax). Sampled rows: argmax, weights q (written
// over the logits) + their total + the top radix digit's histogram, 3 more histogram passes when
// topP < 1, then the id-order scan that finds the token. With extras (SamplingArgs::extras): min_p
// is cut in the weights pass; top_k adds 4 counting passes and one that cuts; a row with logprobs
// keeps its logits and recomputes q from them in each pass.
#include <climits>
#include <cmath>

#include "../common/sampling.h"
#include "block-select.cuh"
#include "check.h"
#include "pdl.h"
#include "sampling.h"

namespace ms::cuda {
namespace {

using namespace block;

// Step 1 in parts: block (part, row) writes the argmax of its slice of the row (NaN as -inf,
// lowest id on ties), which the sampling kernel combines; the order of the combination does not
// change the result.
constexpr int kPartThreads = 256;
__global__ void __launch_bounds__(kPartThreads) argmaxPartsKernel(SamplingArgs a, int parts) {
  __shared__ float redV[kPartThreads / 32];
  __shared__ int redI[kPartThreads / 32];
  pdlWait();  // the logits come from the kernel before
  pdlTrigger();
  const int row = blockIdx.y, part = blockIdx.x, V = a.vocab, tid = threadIdx.x;
  const int chunk = (V + parts - 1) / parts, lo = part * chunk, hi = min(V, lo + chunk);
  const float* z = a.logits + size_t(row) * V;
  float m = -INFINITY;
  int best = INT_MAX;
  constexpr int U = 4;  // loads in flight per thread
  int i = lo + tid;
  for (; i + (U - 1) * kPartThreads < hi; i += U * kPartThreads) {
    float v[U];
#pragma unroll
    for (int u = 0; u < U; u++) v[u] = z[i + u * kPartThreads];
#pragma unroll
    for (int u = 0; u < U; u++)
      if (better(noNan(v[u]), i + u * kPartThreads, m, best)) m = noNan(v[u]), best = i + u * kPartThreads;
  }
  for (; i < hi; i += kPartThreads)
    if (better(noNan(z[i]), i, m, best)) m = noNan(z[i]), best = i;
  blockArgmax<kPartThreads / 32>(m, best, redV, redI);
  if (tid == 0) a.partV[size_t(row) * parts + part] = m, a.partI[size_t(row) * parts + part] = best;
}

// Step 2 for one logit: the integer weight q = floor(min(exp((z - m) / T), 1) * 2^31).
__device__ __forceinline__ uint32_t weightOf(float zi, float m, float T) {
  const float w = fminf(expf((noNan(zi) - m) / T), 1.f);
  return uint32_t(w * 2147483648.f);  // floor(w * 2^31), exact scaling
}

// kExtras: the row's top_k and min_p (common/logit-processing.h T1, T2) from SamplingArgs::extras;
// a row that asks for logprobs keeps its logits (the sampled token's logprob is read from them
// after this kernel) and recomputes its weights in each pass instead of storing them in place.
template <bool kExtras>
__global__ void __launch_bounds__(kThreads) sampleKernel(SamplingArgs a, int parts) {
  __shared__ RadixScratch sc;
  __shared__ u64 red[kWarps];
  __shared__ float redV[kWarps];
  __shared__ int redI[kWarps];
  __shared__ int result;
  const int row = blockIdx.x, V = a.vocab, tid = threadIdx.x;
  float* z = a.logits + size_t(row) * V;
  uint32_t* q = reinterpret_cast<uint32_t*>(z);  // the weights replace the logits, in place
  const int32_t* prm = a.params + size_t(row) * kSampleParamInts;
  const float T = __int_as_float(prm[0]), p = __int_as_float(prm[1]);
  const uint32_t seed = uint32_t(prm[2]), step = uint32_t(prm[3]);
  int topK = 0;
  float minP = 0.f;
  bool keep = false;
  if constexpr (kExtras) {
    const int32_t* ex = a.extras + size_t(row) * kExtraInts;
    topK = ex[kTopK], minP = __int_as_float(ex[kMinP]), keep = ex[kNumLogprobs] >= 0;
  }

  pdlWait();  // the logits (or the argmax partials) come from the kernel before
  // Step 1: argmax (NaN as -inf, lowest id on ties), from the partials when there are some.
  float m = -INFINITY;
  int best = INT_MAX;
  if (parts > 1) {
    if (tid < parts) m = a.partV[size_t(row) * parts + tid], best = a.partI[size_t(row) * parts + tid];
  } else {
    for (int i = tid; i < V; i += kThreads) {
      const float v = noNan(z[i]);
      if (better(v, i, m, best)) m = v, best = i;
    }
  }
  blockArgmax(m, best, redV, redI);
  if (!(T > 0.f) || !isfinite(m)) {  // uniform across the block
    if (tid == 0) a.tokens[row] = best;
    return;
  }

  // T2's bound: q below ceil(min_p * 2^31) (in double, as on the host) is cut; 0: off. T1's cut
  // tauK is 0 until top_k has been searched.
  const double minQ = minP > 0.f ? ceil(double(minP) * 2147483648.0) : 0.0;
  uint32_t tauK = 0;
  // q_i as the passes after step 2 see it.
  auto qAt = [&](int i) -> uint32_t {
    if (!kExtras || !keep) return q[i];
    uint32_t v = weightOf(z[i], m, T);
    return double(v) < minQ || v < tauK ? 0u : v;
  };

  // Step 2: weights q (in place) with T2's cut, their total, and the top digit's histogram
  // (bits 24..31; after T1's cut instead when the row has top_k).
  const bool nucleus = p < 1.f;
  const bool topDigitNow = nucleus && topK <= 0;
  if (tid < 256) sc.hist[tid] = 0;
  __syncthreads();
  u64 total = 0, numNonzero = 0;
  {
    DigitRun run;
    for (int i = tid; i < V; i += kThreads) {
      uint32_t v = weightOf(z[i], m, T);
      if constexpr (kExtras) {
        if (double(v) < minQ) v = 0;
        numNonzero += v != 0;
      }
      if (!keep) q[i] = v;
      total += v;
      if (topDigitNow && (v >> 24)) run.add(int(v >> 24), v, sc.hist);  // digit 0: by subtraction
    }
    run.flush(sc.hist);
  }
  total = blockSum(total, red);  // its barriers also complete the histogram

  // T1: tauK = the largest t with at least topK weights >= t (the radix search, counting); the
  // weights below it are cut, then the total and the top digit's histogram again.
  if constexpr (kExtras) {
    if (topK > 0) {
      numNonzero = blockSum(numNonzero, red);
      u64 numKept;
      const uint32_t t = uint32_t(radixSearch(qAt, V, true, false, double(topK), numNonzero, sc, &numKept));
      if (tid < 256) sc.hist[tid] = 0;
      __syncthreads();
      u64 cutTotal = 0;
      DigitRun run;
      for (int i = tid; i < V; i += kThreads) {
        uint32_t v = qAt(i);
        if (v < t) {
          if (!keep && v) q[i] = 0;
          v = 0;
        }
        cutTotal += v;
        if (nucleus && (v >> 24)) run.add(int(v >> 24), v, sc.hist);
      }
      run.flush(sc.hist);
      tauK = t;
      total = blockSum(cutTotal, red);
    }
  }

  // Step 3: tau and the kept mass, 8 bits per pass from the top.
  u64 tau = 1, kept = total;
  if (nucleus) tau = radixSearch(qAt, V, false, true, double(p) * double(total), total, sc, &kept);

  // Steps 4-5: the draw, then the first kept id whose running mass passes it. Thread t owns the
  // ids [t * chunk, (t + 1) * chunk); a scan of the owned masses finds the thread holding it.
  const u64 r = sampleDraw(seed, step, kept);
  const int chunk = (V + kThreads - 1) / kThreads;
  const int lo = min(V, tid * chunk), hi = min(V, lo + chunk);
  u64 mine = 0;
  for (int i = lo; i < hi; i++) {
    const uint32_t v = qAt(i);
    if (v >= tau) mine += v;
  }
  const u64 before = blockExclusiveScan(mine, red);
  if (tid == 0) result = best;  // replaced below; kept only if the sums were inconsistent
  __syncthreads();
  if (before <= r && r < before + mine) {
    u64 acc = before;
    for (int i = lo; i < hi; i++) {
      const uint32_t v = qAt(i);
      if (v < tau) continue;
      acc += v;
      if (acc > r) {
        result = i;
        break;
      }
    }
  }
  __syncthreads();
  if (tid == 0) a.tokens[row] = result;
}

}  // namespace

void sampleTokens(const SamplingArgs& a, cudaStream_t s) {
  if (a.rows <= 0) return;
  const int parts = a.partV && a.partI ? argmaxParts(a.rows) : 1;
  if (parts > 1)
    launchPdl("argmaxPartsKernel", argmaxPartsKernel, dim3(parts, a.rows), dim3(kPartThreads), 0, s, a, parts);
  if (a.extras)
    launchPdl("sampleKernel<extras>", sampleKernel<true>, dim3(a.rows), dim3(kThreads), 0, s, a, parts);
  else
    launchPdl("sampleKernel", sampleKernel<false>, dim3(a.rows), dim3(kThreads), 0, s, a, parts);
}

}  // namespace ms::cuda
