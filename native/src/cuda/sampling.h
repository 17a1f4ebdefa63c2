// Token sampling on the GPU (kernel in sampling.cu; the algorithm: common/sampling.h). Needs only
// cudart, so it is compile-checked in CI with the other kernel files.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace ms::cuda {

// Per-row parameters, packed as int32 in the forward's metadata buffer (forward-plan.h) so that
// a captured graph replays with new values: temperature (f32 bits), topP (f32 bits), seed, step.
constexpr int kSampleParamInts = 4;

// Per-row SamplingExtras (backend.h; the algorithm: common/logit-processing.h), int32 each (f32 as
// bits), packed by extras-pack.h into the extras buffer a captured graph reads at a fixed address.
// A row without extras has topK 0, minP 0, repetition 1, presence 0, frequency 0, slot -1,
// numLogprobs -1, an empty bias range and maskRow -1.
enum ExtraParam : int {
  kTopK = 0,      // 0: off
  kMinP,          // f32, 0: off
  kRepetition,    // f32, 1: off
  kPresence,      // f32
  kFrequency,     // f32
  kSlot,          // penalty-state slot, -1: none
  kNumLogprobs,   // -1: none; else top entries in [0, kMaxLogprobs]
  kBiasBegin,     // [begin, end) of the row's bias entries (sorted by token, stable)
  kBiasEnd,
  kMaskRow,       // row of the allowed-token mask, -1: every token allowed
  kExtraInts
};

struct SamplingArgs {
  float* logits = nullptr;          // (rows, vocab) f32; a sampled (non-greedy) row is overwritten
                                    // with its integer weights q (uint32), see common/sampling.h
  int vocab = 0;
  int rows = 0;
  const int32_t* params = nullptr;  // (rows, kSampleParamInts)
  int32_t* tokens = nullptr;        // (rows,) out
  // Scratch of rows * kMaxArgmaxParts entries each (or null): with it the argmax of step 1 runs as
  // a first kernel over several blocks per row (all the SMs at small batch), then the sampling
  // kernel combines their partials (see argmaxParts).
  float* partV = nullptr;
  int32_t* partI = nullptr;
  // (rows, kExtraInts) or null: top_k and min_p cut the weights (common/logit-processing.h T1,
  // T2), and a row with numLogprobs >= 0 keeps its logits (they are not overwritten with q).
  const int32_t* extras = nullptr;
};
constexpr int kMaxArgmaxParts = 128;
// Blocks per row of the argmax pass for `rows` rows: 1 (no pass) from 256 rows up.
inline int argmaxParts(int rows) { return rows >= 256 ? 1 : std::clamp(256 / rows, 2, kMaxArgmaxParts); }

// One block per row: argmax for greedy rows; max, weights, radix threshold search and an id-order
// prefix scan for sampled ones. Deterministic (integer sums), graph-capturable; both kernels are
// launched with PDL (the logits come from the LM head product just before).
void sampleTokens(const SamplingArgs& a, cudaStream_t s);

}  // namespace ms::cuda
