// Per-request logit processing and logprobs on the GPU (kernels in logit-processing.cu; the one
// definition of the algorithm: common/logit-processing.h, which the CPU backend runs). Applied
// to the LM head's f32 logits before the sampler (sampling.h), in this order:
//   applyBias          P2: each row's (token, bias) entries, sorted by token on the host (stable,
//                      so one token's entries add in the request's order: the same floats);
//   applyMaskPenalties P1 + P3 + P4 in one pass over each row that has a mask or a penalty slot.
//                      P1 after P2 gives the same result: a banned token is -inf either way (the
//                      bias values are finite or -inf);
//   computeLogprobs    log-softmax of the processed row / T and its top entries (before the
//                      sampler, which keeps the logits of rows with logprobs);
//   sampleTokens       (sampling.h, with SamplingArgs::extras: top_k, min_p);
//   afterSample        the sampled token's logprob, and its count in the row's penalty slot.
// Penalty state: one dense row per slot, (numSlots, vocab) int32 = seen | count << 1 (seen: the
// token is in the prompt or the output; count: times in the output), rebuilt from a request's
// history by rebuildPenaltySlots and updated by afterSample, so nothing goes back to the host.
// Every kernel is graph-capturable (fixed pointers, per-row values read from the buffers).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "../backend.h"

namespace ms::cuda {

// One row of logprob output, int32 each: the token's logprob (f32 bits), the top kMaxLogprobs
// logprobs (f32 bits, -inf past the asked count), then their ids (-1 past it).
constexpr int kLogprobInts = 1 + 2 * kMaxLogprobs;

struct ExtrasArgs {
  float* logits = nullptr;              // (rows, vocab) f32, processed in place
  int vocab = 0, rows = 0;
  const int32_t* sampleParams = nullptr;  // (rows, kSampleParamInts): temperature
  const int32_t* extras = nullptr;      // (rows, kExtraInts), sampling.h ExtraParam
  // Bias entries [biasFrom, biasTo) of the batch's list are in the buffers (entry e at e - biasFrom):
  // the eager path may apply a long list in several windows, in order.
  const int32_t* biasTokens = nullptr;
  const float* biasValues = nullptr;
  int biasFrom = 0, biasTo = 0;
  const uint32_t* mask = nullptr;       // (mask rows, maskWords): row ExtraParam kMaskRow
  int maskWords = 0;
  int32_t* counts = nullptr;            // (numSlots, vocab) penalty state
  int numSlots = 0;
  double* lse = nullptr;                // (rows,) log-sum-exp of each logprob row (scratch)
  int32_t* out = nullptr;               // (rows, kLogprobInts)
  const int32_t* tokens = nullptr;      // (rows,) the sampled ids (afterSample)
};

void applyBias(const ExtrasArgs& a, cudaStream_t s);
void applyMaskPenalties(const ExtrasArgs& a, cudaStream_t s);
void afterSample(const ExtrasArgs& a, cudaStream_t s);

// Logprobs of rows of logits: log-softmax of z / T (T <= 0: 1) in float64 as on the host, the top
// numTop entries (value, then lower id first; NaN as -inf) into out[1..], and with targets, the
// target token's logprob into out[0] (-1: -inf). Rows with numTop < 0 are skipped.
struct LogprobArgs {
  const float* logits = nullptr;          // (rows, vocab)
  int vocab = 0, rows = 0;
  const int32_t* sampleParams = nullptr;  // (rows, kSampleParamInts), or null: T = 1
  const int32_t* numTop = nullptr;        // numTop[row * numTopStride]
  int numTopStride = 1;
  const int32_t* targets = nullptr;       // (rows,) or null
  double* lse = nullptr;                  // (rows,) out, or null
  int32_t* out = nullptr;                 // (rows, kLogprobInts)
};
void computeLogprobs(const LogprobArgs& a, cudaStream_t s);

// Rebuild of penalty slots: entries (n, 2) = {slot * 2 + isOutput, token}; the slots' rows must
// have been zeroed before (cudaMemsetAsync). Order-free (integer atomics).
void rebuildPenaltySlots(int32_t* counts, int vocab, const int32_t* entries, int n, cudaStream_t s);

}  // namespace ms::cuda
