// Token sampling: the one definition. Implemented identically in TypeScript
// (test/shared/sampling-reference.ts, the tests' oracle), here for the CPU backend (sampleRow), and on the GPU
// (cuda/sampling.cu). Inputs per row: logits z (vocab V, f32), temperature T (f32), topP p (f32),
// seed and step (uint32; step = index of the token being generated, 0 for the first output token).
//
//  1. NaN logits count as -inf. b = argmax z, the lowest id among equal maxima; m = z[b].
//     Greedy (the answer is b) when !(T > 0) or m is not finite.
//  2. w_i = exp((z_i - m) / T): float64 on the host (TS and C++), float32 expf on the GPU.
//     q_i = min(floor(w_i * 2^31), 2^31), an integer weight (the argmax has q = 2^31; tokens below
//     2^-31 of its probability get 0 and are never drawn). Q = sum q_i (exact: < 2^53).
//  3. Nucleus: if p >= 1, tau = 1. Otherwise target = double(p) * double(Q) (one IEEE multiply)
//     and tau = the largest integer t with M(t) >= target, where M(t) = sum of q_i over q_i >= t.
//     Kept set K = {i : q_i >= tau} (ties at the boundary are all kept), kept mass M* = M(tau).
//     Every implementation finds tau by the same radix search over the 32 bits of q, 8 at a time
//     from the top: histogram the mass of the q that match the bits chosen so far by their next
//     8 bits, take the largest digit whose mass plus the mass above reaches target. It is exact
//     integer arithmetic, so any summation order gives the same tau.
//  4. u = splitmix64((seed << 32) | step) >> 11, times 2^-53: one uniform in [0, 1) per (seed,
//     step), so a request that moves to another engine draws the same u for the same token.
//     r = min(floor(u * M*), M* - 1) (one IEEE multiply).
//  5. The token is the smallest id k in K with sum_{i in K, i <= k} q_i > r (id order).
//
// Everything after step 2 is integer arithmetic (or a single correctly rounded double operation),
// so each backend is deterministic and the host implementations agree exactly (up to an ulp of
// exp between libm and V8, which moves q_i by at most 1). The GPU computes w_i in float32, so its
// q_i differ in their low bits and it may pick a different token where that rounding moves a
// boundary (the nucleus threshold or the draw's crossing): rare, ~1e-7 per draw.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../backend.h"

#if defined(__CUDACC__)
#define MS_SAMPLING_HD __host__ __device__
#else
#define MS_SAMPLING_HD
#endif

namespace ms {

constexpr double kSampleScale = 2147483648.0;  // 2^31: q of the most likely token

// Step 4: the uniform of (seed, step) in [0, 1), 53 random bits.
MS_SAMPLING_HD inline double sampleUniform(uint32_t seed, uint32_t step) {
  unsigned long long z = ((static_cast<unsigned long long>(seed) << 32) | step) + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

// Step 4: the draw r in [0, kept).
MS_SAMPLING_HD inline unsigned long long sampleDraw(uint32_t seed, uint32_t step, unsigned long long kept) {
  unsigned long long r = static_cast<unsigned long long>(floor(sampleUniform(seed, step) * static_cast<double>(kept)));
  return r >= kept ? kept - 1 : r;
}

// Parameters of one row; "" when valid. temperature: finite (<= 0 is greedy); topP in (0, 1].
inline std::string samplingParamError(float temperature, float topP) {
  if (!std::isfinite(temperature)) return "temperature must be a finite number";
  if (!(topP > 0.f && topP <= 1.f)) return "topP must be in (0, 1]";
  return "";
}

// Checks a batch's sampling inputs (Batch::tokensOut set): arrays present, last-token logits,
// every row's parameters. Also refuses a forward that asks for neither logits nor tokens.
inline Status checkBatchSampling(const Batch& b, const float* logitsOut) {
  if (!b.tokensOut) {
    if (b.maskGate) return Status::Error(Code::BAD_ARGUMENT, "a mask gate needs sampling (tokensOut)");
    if (!logitsOut) return Status::Error(Code::BAD_ARGUMENT, "forward needs logitsOut or tokensOut");
    return Status::Ok();
  }
  if (!b.temperature || !b.topP || !b.seed || !b.step)
    return Status::Error(Code::BAD_ARGUMENT, "sampling needs temperature, topP, seed and step for every sequence");
  if (b.allLogits) return Status::Error(Code::BAD_ARGUMENT, "sampling uses last-token logits: allLogits must be false");
  for (int s = 0; s < b.numSeqs; s++) {
    std::string e = samplingParamError(b.temperature[s], b.topP[s]);
    if (!e.empty()) return Status::Error(Code::BAD_ARGUMENT, "sequence " + std::to_string(s) + ": " + e);
  }
  return Status::Ok();
}

// Step 1: argmax with NaN as -inf, lowest id on ties.
inline int32_t sampleArgmax(const float* z, int vocab) {
  int32_t best = 0;
  float bestV = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < vocab; i++) {
    float v = std::isnan(z[i]) ? -std::numeric_limits<float>::infinity() : z[i];
    if (v > bestV) bestV = v, best = i;
  }
  return best;
}

// Steps 3-5 on integer weights q (vocab,): the token. Shared by the CPU backend and the GPU
// kernel check (which feeds it the GPU's own q to compare the integer part exactly).
inline int32_t sampleFromWeights(const uint32_t* q, int vocab, float topP, uint32_t seed, uint32_t step) {
  unsigned long long total = 0;
  for (int i = 0; i < vocab; i++) total += q[i];
  unsigned long long tau = 1, kept = total;
  if (topP < 1.f) {
    const double target = static_cast<double>(topP) * static_cast<double>(total);
    unsigned long long prefix = 0, above = 0;
    unsigned long long hist[256];
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (auto& h : hist) h = 0;
      const int hi = shift + 8;
      for (int i = 0; i < vocab; i++) {
        const uint32_t v = q[i];
        if (v == 0 || (hi < 32 && (v >> hi) != (prefix >> hi))) continue;
        hist[(v >> shift) & 255] += v;
      }
      unsigned long long cum = above;
      int d = 255;
      for (; d > 0; d--) {
        if (static_cast<double>(cum + hist[d]) >= target) break;
        cum += hist[d];
      }
      prefix |= static_cast<unsigned long long>(d) << shift;
      above = cum;
      kept = cum + hist[d];
    }
    tau = prefix;
  }
  const unsigned long long r = sampleDraw(seed, step, kept);
  unsigned long long acc = 0;
  for (int i = 0; i < vocab; i++) {
    if (q[i] < tau) continue;
    acc += q[i];
    if (acc > r) return i;
  }
  return -1;  // unreachable: the kept mass exceeds r
}

// Step 2 on the host (float64): q (vocab,) from logits given the argmax value m.
inline void sampleWeights(const float* z, int vocab, float temperature, float m, uint32_t* q) {
  const double t = temperature, md = m;
  for (int i = 0; i < vocab; i++) {
    if (std::isnan(z[i])) {
      q[i] = 0;
      continue;
    }
    const double w = std::exp((static_cast<double>(z[i]) - md) / t);
    const double v = std::floor(w * kSampleScale);
    q[i] = static_cast<uint32_t>(v < kSampleScale ? v : kSampleScale);
  }
}

// The whole algorithm on one row of logits (vocab,). q: scratch, resized to vocab.
inline int32_t sampleRow(const float* z, int vocab, float temperature, float topP, uint32_t seed, uint32_t step,
                         std::vector<uint32_t>& q) {
  const int32_t best = sampleArgmax(z, vocab);
  const float m = z[best];
  if (!(temperature > 0.f) || !std::isfinite(m)) return best;
  q.resize(size_t(vocab));
  sampleWeights(z, vocab, temperature, m, q.data());
  const int32_t tok = sampleFromWeights(q.data(), vocab, topP, seed, step);
  return tok < 0 ? best : tok;
}

}  // namespace ms
