// Token sampling: one 1024-thread block per row of logits. The algorithm and its steps are
// defined in common/sampling.h; this file follows them. Every sum is an integer, so the result
// does not depend on the order threads add in: the kernel is deterministic.
//
// Passes over a row (V = vocab): greedy rows 1 (argmax). Sampled rows: argmax, weights q (written
// over the logits) + their total + the top radix digit's histogram, 3 more histogram passes when
// topP < 1, then the id-order scan that finds the token.
#include <climits>
#include <cmath>

#include "../common/sampling.h"
#include "check.h"
#include "pdl.h"
#include "sampling.h"

namespace ms::cuda {
namespace {

using u64 = unsigned long long;
constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;  // 32: one warp can reduce the per-warp partials
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float noNan(float v) { return v != v ? -INFINITY : v; }
// (v, i) beats (bv, bi): larger value, then lower id.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__device__ __forceinline__ void warpArgmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFull, v, o);
    const int oi = __shfl_xor_sync(kFull, i, o);
    if (better(ov, oi, v, i)) v = ov, i = oi;
  }
}

// Every thread of a block of W warps gets the block's best (v, i). sv, si: (W,) shared scratch.
template <int W = kWarps>
__device__ void blockArgmax(float& v, int& i, float* sv, int* si) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warpArgmax(v, i);
  __syncthreads();
  if (lane == 0) sv[warp] = v, si[warp] = i;
  __syncthreads();
  v = lane < W ? sv[lane] : -INFINITY, i = lane < W ? si[lane] : INT_MAX;
  warpArgmax(v, i);
}

__device__ __forceinline__ u64 warpSum(u64 v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// Every thread gets the block's sum. red: (kWarps,) shared scratch.
__device__ u64 blockSum(u64 v, u64* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return warpSum(red[lane]);
}

// Sum of v over the threads before this one (thread order). red: (kWarps,) shared scratch.
__device__ u64 blockExclusiveScan(u64 v, u64* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const u64 n = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += n;
  }
  __syncthreads();
  if (lane == 31) red[warp] = incl;
  __syncthreads();
  const u64 w = red[lane];
  u64 wIncl = w;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const u64 n = __shfl_up_sync(kFull, wIncl, o);
    if (lane >= o) wIncl += n;
  }
  const u64 warpBefore = __shfl_sync(kFull, wIncl - w, warp);
  return warpBefore + incl - v;
}

// A thread's run of equal digits is added with one shared atomic, which keeps the atomics few where
// neighbouring weights share a digit. (Digit 0, where the tiny weights of a flat row all land, is
// not added at all: pickDigit derives it.)
struct DigitRun {
  int digit = -1;
  u64 mass = 0;
  __device__ void add(int d, uint32_t v, u64* hist) {
    if (d != digit) {
      flush(hist);
      digit = d;
    }
    mass += v;
  }
  __device__ void flush(u64* hist) {
    if (mass) atomicAdd(&hist[digit], mass);
    mass = 0;
  }
};

struct Pick {
  int digit;
  u64 above, kept;
};

// Warp 0: the largest digit d with above + sum_{d' >= d} hist[d'] >= target (step 3 of the
// definition); the mass strictly above d and M at d. Lane l owns bins [8l, 8l + 8). Digit 0 is
// never added into hist (on flat rows most weights land there and the adds would all collide):
// its mass is `mass` (of every weight under the current prefix) minus the other bins.
__device__ void pickDigit(const u64* hist, u64 mass, u64 above, double target, Pick* out) {
  const int lane = threadIdx.x;
  u64 loc[8], s = 0;
#pragma unroll
  for (int j = 0; j < 8; j++) loc[j] = hist[8 * lane + j], s += loc[j];
  u64 rest = s;  // sum over every bin but 0 (bin 0 reads 0 here)
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) rest += __shfl_xor_sync(kFull, rest, o);
  if (lane == 0) loc[0] = mass - rest, s += loc[0];
  u64 suffix = s;  // sum over lanes >= this one
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const u64 n = __shfl_down_sync(kFull, suffix, o);
    if (lane + o < 32) suffix += n;
  }
  u64 cum = above + (suffix - s);
  int found = -1;
  u64 fAbove = 0, fKept = 0;
#pragma unroll
  for (int j = 7; j >= 0; j--) {
    if (found < 0) {
      if (double(cum + loc[j]) >= target) {
        found = 8 * lane + j, fAbove = cum, fKept = cum + loc[j];
      } else {
        cum += loc[j];
      }
    }
  }
  int best = found;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(kFull, best, o));
  if (found >= 0 && found == best) *out = Pick{found, fAbove, fKept};
  // Unreachable (digit 0 always qualifies: the mass at the current prefix reaches target); keep
  // the whole range rather than read garbage.
  if (best < 0 && lane == 0) *out = Pick{0, cum - loc[0], cum};
}

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

__global__ void __launch_bounds__(kThreads) sampleKernel(SamplingArgs a, int parts) {
  __shared__ u64 hist[256];
  __shared__ u64 red[kWarps];
  __shared__ float redV[kWarps];
  __shared__ int redI[kWarps];
  __shared__ Pick pick;
  __shared__ int result;
  const int row = blockIdx.x, V = a.vocab, tid = threadIdx.x;
  float* z = a.logits + size_t(row) * V;
  uint32_t* q = reinterpret_cast<uint32_t*>(z);  // the weights replace the logits, in place
  const int32_t* prm = a.params + size_t(row) * kSampleParamInts;
  const float T = __int_as_float(prm[0]), p = __int_as_float(prm[1]);
  const uint32_t seed = uint32_t(prm[2]), step = uint32_t(prm[3]);

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

  // Step 2: weights q (in place), their total, and the top digit's histogram (bits 24..31).
  const bool nucleus = p < 1.f;
  if (tid < 256) hist[tid] = 0;
  __syncthreads();
  u64 total = 0;
  {
    DigitRun run;
    for (int i = tid; i < V; i += kThreads) {
      const float w = fminf(expf((noNan(z[i]) - m) / T), 1.f);
      const uint32_t v = uint32_t(w * 2147483648.f);  // floor(w * 2^31), exact scaling
      q[i] = v;
      total += v;
      if (nucleus && (v >> 24)) run.add(int(v >> 24), v, hist);  // digit 0: by subtraction
    }
    run.flush(hist);
  }
  total = blockSum(total, red);  // its barriers also complete the histogram

  // Step 3: tau and the kept mass, 8 bits per pass from the top.
  u64 tau = 1, kept = total;
  if (nucleus) {
    const double target = double(p) * double(total);
    u64 prefix = 0, above = 0, mass = total;  // mass: of the weights under the prefix so far
    for (int shift = 24; shift >= 0; shift -= 8) {
      if (shift < 24) {  // the top digit's histogram came with step 2
        if (tid < 256) hist[tid] = 0;
        __syncthreads();
        const int hi = shift + 8;
        const uint32_t want = uint32_t(prefix >> hi);
        DigitRun run;
        for (int i = tid; i < V; i += kThreads) {
          const uint32_t v = q[i];
          const int d = int((v >> shift) & 255);
          if (d && (v >> hi) == want) run.add(d, v, hist);  // digit 0: by subtraction
        }
        run.flush(hist);
        __syncthreads();
      }
      if (tid < 32) pickDigit(hist, mass, above, target, &pick);
      __syncthreads();
      prefix |= u64(pick.digit) << shift;
      above = pick.above;
      kept = pick.kept;
      mass = pick.kept - pick.above;  // the chosen digit's bin
      __syncthreads();  // pick is rewritten by the next pass
    }
    tau = prefix;
  }

  // Steps 4-5: the draw, then the first kept id whose running mass passes it. Thread t owns the
  // ids [t * chunk, (t + 1) * chunk); a scan of the owned masses finds the thread holding it.
  const u64 r = sampleDraw(seed, step, kept);
  const int chunk = (V + kThreads - 1) / kThreads;
  const int lo = min(V, tid * chunk), hi = min(V, lo + chunk);
  u64 mine = 0;
  for (int i = lo; i < hi; i++) {
    const uint32_t v = q[i];
    if (v >= tau) mine += v;
  }
  const u64 before = blockExclusiveScan(mine, red);
  if (tid == 0) result = best;  // replaced below; kept only if the sums were inconsistent
  __syncthreads();
  if (before <= r && r < before + mine) {
    u64 acc = before;
    for (int i = lo; i < hi; i++) {
      const uint32_t v = q[i];
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
  launchPdl("sampleKernel", sampleKernel, dim3(a.rows), dim3(kThreads), 0, s, a, parts);
}

}  // namespace ms::cuda
