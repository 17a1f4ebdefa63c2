// Per-request logit processing before sampling (SamplingExtras in backend.h): the one definition,
// mirrored in TypeScript by actors/engine/logit-processing.ts. Row s of logits z (vocab V, f32):
//
//  P1. Grammar hook: where allowedMask is set and bit i of row s is clear, z_i = -inf.
//  P2. Bias: z_t += b for each (t, b) of the row's bias list (logit_bias; min_tokens bans the
//      stop tokens with -inf while the output is shorter than min_tokens).
//  P3. Repetition penalty r != 1, on every token seen (prompt or output): z_t = z_t > 0 ? z_t / r
//      : z_t * r (vLLM's, from CTRL).
//  P4. Frequency f and presence p on output tokens with count c > 0: z_t -= c * f + p (OpenAI's).
//  All in float32, one token at a time: the result does not depend on iteration order.
//  Logprobs are the log-softmax of these processed logits divided by the temperature (T > 0;
//  greedy rows: T = 1), before top-k / min-p / top-p truncation: vLLM V0's "processed" logprobs.
//  Then sampling (common/sampling.h) with one addition between its steps 2 and 3 (truncation on the
//  integer weights q, so it is exact and the same on every backend):
//  T1. top_k k > 0: tau_k = the largest t with #{i : q_i >= t} >= k (the same 8-bit radix search
//      as top-p, counting instead of summing); q_i < tau_k become 0 (ties at the boundary kept).
//  T2. min_p m > 0: q_i < ceil(m * 2^31) become 0 (2^31 is the most likely token's q).
//  then top-p over what is left, the draw and the id-order scan as before.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "../backend.h"
#include "sampling.h"

namespace ms {

// One request's penalty state: output counts and every token seen (value 0: prompt only).
struct PenaltyState {
  std::unordered_map<int32_t, int32_t> counts;  // token -> times in the output (0: prompt only)
  void rebuild(const int32_t* hist, int n, int numOutput) {
    counts.clear();
    for (int i = 0; i < n; i++) {
      int32_t& c = counts[hist[i]];
      if (i >= n - numOutput) c++;
    }
  }
  void add(int32_t tok) { counts[tok]++; }
};

// "" when a batch's extras are valid for `vocab`.
inline std::string samplingExtrasError(const Batch& b, int vocab) {
  const SamplingExtras* x = b.extras;
  if (b.maskGate && (!x || x->allowedMask)) return "a mask gate needs extras without allowedMask (the gate gives the masks)";
  if (!x) return "";
  for (int s = 0; s < b.numSeqs; s++) {
    const std::string at = "sequence " + std::to_string(s) + ": ";
    if (x->topK && (x->topK[s] < 0)) return at + "topK must be >= 0";
    if (x->minP && !(x->minP[s] >= 0.f && x->minP[s] <= 1.f)) return at + "minP must be in [0, 1]";
    if (x->repetitionPenalty && !(x->repetitionPenalty[s] > 0.f && std::isfinite(x->repetitionPenalty[s])))
      return at + "repetitionPenalty must be a positive number";
    if (x->presencePenalty && !std::isfinite(x->presencePenalty[s])) return at + "presencePenalty must be finite";
    if (x->frequencyPenalty && !std::isfinite(x->frequencyPenalty[s])) return at + "frequencyPenalty must be finite";
    if (x->numLogprobs && (x->numLogprobs[s] < -1 || x->numLogprobs[s] > kMaxLogprobs))
      return at + "numLogprobs must be in [-1, " + std::to_string(kMaxLogprobs) + "]";
    if (x->biasOffsets) {
      for (int i = x->biasOffsets[s]; i < x->biasOffsets[s + 1]; i++) {
        if (x->biasTokens[i] < 0 || x->biasTokens[i] >= vocab) return at + "bias token out of the vocabulary";
        if (std::isnan(x->biasValues[i])) return at + "bias value is NaN";
      }
    }
    if (x->reset && x->reset[s] && x->histOffsets) {
      for (int i = x->histOffsets[s]; i < x->histOffsets[s + 1]; i++)
        if (x->histTokens[i] < 0 || x->histTokens[i] >= vocab) return at + "history token out of the vocabulary";
    }
  }
  if (x->allowedMask && x->maskWords < (vocab + 31) / 32) return "allowedMask has too few words per row";
  return "";
}

// "" when a batch's prompt logprobs are valid for `vocab` (they come with a sampling forward).
inline std::string promptLogprobsError(const Batch& b, int vocab) {
  const PromptLogprobs* p = b.promptLogprobs;
  if (!p) return "";
  if (!b.tokensOut) return "prompt logprobs come with a sampling forward (tokensOut)";
  if (!p->numTop || !p->targets || !p->logprobsOut || !p->topIdsOut) return "prompt logprobs need numTop, targets and both outputs";
  for (int s = 0; s < b.numSeqs; s++)
    if (p->numTop[s] < 0 || p->numTop[s] > kMaxLogprobs)
      return "sequence " + std::to_string(s) + ": prompt numTop must be in [0, " + std::to_string(kMaxLogprobs) + "]";
  for (int t = 0; t < b.numTokens; t++)
    if (p->targets[t] < -1 || p->targets[t] >= vocab) return "prompt target " + std::to_string(t) + " is outside [-1, vocab)";
  return "";
}

// P1-P4 on row s in place. st: the row's penalty state, or null.
inline void processLogits(float* z, int vocab, const SamplingExtras& x, int s, const PenaltyState* st) {
  if (x.allowedMask) {
    const uint32_t* m = x.allowedMask + size_t(s) * x.maskWords;
    for (int i = 0; i < vocab; i++)
      if (!((m[i >> 5] >> (i & 31)) & 1u)) z[i] = -std::numeric_limits<float>::infinity();
  }
  if (x.biasOffsets)
    for (int i = x.biasOffsets[s]; i < x.biasOffsets[s + 1]; i++) z[x.biasTokens[i]] += x.biasValues[i];
  if (!st) return;
  const float r = x.repetitionPenalty ? x.repetitionPenalty[s] : 1.f;
  const float f = x.frequencyPenalty ? x.frequencyPenalty[s] : 0.f;
  const float p = x.presencePenalty ? x.presencePenalty[s] : 0.f;
  for (const auto& [t, c] : st->counts) {
    float v = z[t];
    if (r != 1.f) v = v > 0.f ? v / r : v * r;
    if (c > 0) v -= float(c) * f + p;
    z[t] = v;
  }
}

// T1 + T2 on the integer weights q (vocab,).
inline void truncateWeights(uint32_t* q, int vocab, int topK, float minP) {
  if (topK > 0) {
    uint32_t prefix = 0;
    long long above = 0;
    long long cnt[256];
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (auto& c : cnt) c = 0;
      const int hi = shift + 8;
      for (int i = 0; i < vocab; i++) {
        const uint32_t v = q[i];
        if (v == 0 || (hi < 32 && (v >> hi) != (prefix >> hi))) continue;
        cnt[(v >> shift) & 255]++;
      }
      long long cum = above;
      int d = 255;
      for (; d > 0; d--) {
        if (cum + cnt[d] >= topK) break;
        cum += cnt[d];
      }
      prefix |= uint32_t(d) << shift;
      above = cum;
    }
    for (int i = 0; i < vocab; i++)
      if (q[i] < prefix) q[i] = 0;
  }
  if (minP > 0.f) {
    const double t = std::ceil(double(minP) * kSampleScale);
    for (int i = 0; i < vocab; i++)
      if (double(q[i]) < t) q[i] = 0;
  }
}

// Logprobs of row z (processed, vocab,) at temperature T: the sampled token's, then the top n.
inline void rowLogprobs(const float* z, int vocab, float temperature, int32_t tok, int n, float* lpOut, int32_t* idsOut,
                        std::vector<int32_t>& idx) {
  const double t = temperature > 0.f ? double(temperature) : 1.0;
  const int32_t best = sampleArgmax(z, vocab);
  const double m = double(z[best]) / t;
  double sum = 0;
  for (int i = 0; i < vocab; i++)
    if (!std::isnan(z[i])) sum += std::exp(double(z[i]) / t - m);
  const double lse = m + std::log(sum);
  auto lp = [&](int i) { return std::isnan(z[i]) ? -INFINITY : float(double(z[i]) / t - lse); };
  lpOut[0] = lp(tok);
  for (int k = 0; k < kMaxLogprobs; k++) lpOut[1 + k] = -INFINITY, idsOut[k] = -1;
  if (n <= 0) return;
  idx.resize(size_t(vocab));
  for (int i = 0; i < vocab; i++) idx[size_t(i)] = i;
  auto key = [&](int i) { return std::isnan(z[i]) ? -INFINITY : z[i]; };
  std::partial_sort(idx.begin(), idx.begin() + std::min(n, vocab), idx.end(),
                    [&](int a, int b) { return key(a) > key(b) || (key(a) == key(b) && a < b); });
  for (int k = 0; k < std::min(n, vocab); k++) idsOut[k] = idx[size_t(k)], lpOut[1 + k] = lp(idx[size_t(k)]);
}

// The whole row with extras: process z in place (P1-P4), then sample (steps 1-5 with T1, T2).
inline int32_t sampleRowExtras(float* z, int vocab, float temperature, float topP, uint32_t seed, uint32_t step,
                               const SamplingExtras& x, int s, const PenaltyState* st, std::vector<uint32_t>& q) {
  processLogits(z, vocab, x, s, st);
  const int32_t best = sampleArgmax(z, vocab);
  const float m = z[best];
  if (!(temperature > 0.f) || !std::isfinite(m)) return best;
  q.resize(size_t(vocab));
  sampleWeights(z, vocab, temperature, m, q.data());
  truncateWeights(q.data(), vocab, x.topK ? x.topK[s] : 0, x.minP ? x.minP[s] : 0.f);
  const int32_t tok = sampleFromWeights(q.data(), vocab, topP, seed, step);
  return tok < 0 ? best : tok;
}

}  // namespace ms
