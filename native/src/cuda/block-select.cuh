// Block-wide building blocks of the sampling kernels (sampling.cu, logit-processing.cu): argmax
// with the lowest id on ties, integer sums and scans, and the 8-bit radix search of
// common/sampling.h step 3 (also logit-processing.h T1 and the top-logprobs selection). Every sum
// is an integer, so results do not depend on the order threads add in. Device code only.
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

namespace ms::cuda::block {

using u64 = unsigned long long;
constexpr int kThreads = 1024;         // threads of a row's block
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

template <class T>
__device__ __forceinline__ T warpSum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// Every thread gets the block's sum (a block of kThreads). red: (kWarps,) shared scratch.
template <class T>
__device__ T blockSum(T v, T* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return warpSum(red[lane]);
}

// Sum of v over the threads before this one (thread order). red: (kWarps,) shared scratch.
__device__ inline u64 blockExclusiveScan(u64 v, u64* red) {
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
  __device__ void add(int d, u64 v, u64* hist) {
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
// its mass is `mass` (of every weight under the current prefix) minus the other bins. When no
// digit reaches the target (a count search asking for more than there are), digit 0 is taken
// with everything above it, as the host's loop does.
__device__ inline void pickDigit(const u64* hist, u64 mass, u64 above, double target, Pick* out) {
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
  if (best < 0 && lane == 0) *out = Pick{0, cum - loc[0], cum};
}

// Shared scratch of radixSearch.
struct RadixScratch {
  u64 hist[256];
  Pick pick;
};

// The radix search of common/sampling.h step 3 over the nonzero values key(i), i in [0, n): the
// largest t with F(t) >= target, F(t) = sum over key(i) >= t of (isCount ? 1 : key(i)), found 8
// bits at a time from the top. mass: F(1), over every nonzero key. With isTopDone the caller
// already built the top digit's histogram (bits 24..31, digit 0 left out) in sc.hist. Returns t;
// *kept = F(t). Call from every thread of the block; uniform arguments.
template <class Key>
__device__ u64 radixSearch(Key key, int n, bool isCount, bool isTopDone, double target, u64 mass, RadixScratch& sc,
                           u64* kept) {
  const int tid = threadIdx.x;
  u64 prefix = 0, above = 0;
  *kept = mass;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (shift < 24 || !isTopDone) {
      if (tid < 256) sc.hist[tid] = 0;
      __syncthreads();
      const int hi = shift + 8;
      const uint32_t want = hi < 32 ? uint32_t(prefix >> hi) : 0u;
      DigitRun run;
      for (int i = tid; i < n; i += blockDim.x) {
        const uint32_t v = key(i);
        const int d = int((v >> shift) & 255);
        if (d && (hi >= 32 || (v >> hi) == want)) run.add(d, isCount ? 1ull : u64(v), sc.hist);  // digit 0: by subtraction
      }
      run.flush(sc.hist);
      __syncthreads();
    }
    if (tid < 32) pickDigit(sc.hist, mass, above, target, &sc.pick);
    __syncthreads();
    prefix |= u64(sc.pick.digit) << shift;
    above = sc.pick.above;
    *kept = sc.pick.kept;
    mass = sc.pick.kept - sc.pick.above;  // the chosen digit's bin
    __syncthreads();  // pick is rewritten by the next pass
  }
  return prefix;
}

}  // namespace ms::cuda::block
