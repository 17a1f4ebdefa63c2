// The C++ logit processing + sampling (native/src/common/logit-processing.h, the code the CPU
// backend runs) on given logits, as a small program for test/native/sampling-extras.test.ts, which
// builds it with the host compiler (the addon has no sampleLogits; see sampling-check.cc).
// stdin (little-endian): int32 rows, int32 vocab; rows x (f32 temperature, f32 topP, u32 seed,
// u32 step); then 15 arrays of SamplingExtras, each int32 count + count 4-byte items (count 0:
// absent), in the order topK, minP, repetitionPenalty, presencePenalty, frequencyPenalty, slot,
// reset (as int32), histOffsets, histTokens, histNumOutput, biasOffsets, biasTokens, biasValues,
// numLogprobs, allowedMask; then (rows, vocab) f32 logits. A row's penalty state comes from its
// history (reset rows) or is empty, as a backend's fresh slot would be.
// stdout: (rows,) int32 token ids, (rows, 21) f32 logprobs, (rows, 20) int32 top ids.
// Exit 2 on bad input, 3 when the extras are invalid (message on stderr).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "check-input.h"
#include "common/logit-processing.h"

using ms::check::readAll;
using Row = ms::check::SampleParams;

namespace {

template <class T>
bool readArray(std::vector<T>* out) {
  int32_t n;
  if (!readAll(&n, 1) || n < 0 || n > (1 << 28)) return false;
  std::vector<uint32_t> raw(static_cast<size_t>(n));
  if (!readAll(raw.data(), raw.size())) return false;
  out->resize(raw.size());
  for (size_t i = 0; i < raw.size(); i++) {
    if constexpr (sizeof(T) == 4) std::memcpy(&(*out)[i], &raw[i], 4);
    else (*out)[i] = static_cast<T>(raw[i]);
  }
  return true;
}

template <class T>
const T* ptr(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}
}  // namespace

int main() {
  int rows, vocab;
  std::vector<Row> params;
  if (!ms::check::readHeader(&rows, &vocab, &params)) return 2;
  std::vector<int32_t> topK, slot, histOffsets, histTokens, histNumOutput, biasOffsets, biasTokens, numLogprobs;
  std::vector<float> minP, rep, pres, freq, biasValues;
  std::vector<uint8_t> reset;
  std::vector<uint32_t> mask;
  if (!readArray(&topK) || !readArray(&minP) || !readArray(&rep) || !readArray(&pres) || !readArray(&freq) ||
      !readArray(&slot) || !readArray(&reset) || !readArray(&histOffsets) || !readArray(&histTokens) ||
      !readArray(&histNumOutput) || !readArray(&biasOffsets) || !readArray(&biasTokens) || !readArray(&biasValues) ||
      !readArray(&numLogprobs) || !readArray(&mask))
    return 2;
  std::vector<float> z(static_cast<size_t>(rows) * static_cast<size_t>(vocab));
  if (!readAll(z.data(), z.size())) return 2;

  std::vector<float> lpOut(static_cast<size_t>(rows) * (1 + ms::kMaxLogprobs), 0.f);
  std::vector<int32_t> idsOut(static_cast<size_t>(rows) * ms::kMaxLogprobs, 0);
  ms::SamplingExtras x;
  x.topK = ptr(topK), x.minP = ptr(minP), x.repetitionPenalty = ptr(rep), x.presencePenalty = ptr(pres);
  x.frequencyPenalty = ptr(freq), x.slot = ptr(slot), x.reset = ptr(reset), x.histOffsets = ptr(histOffsets);
  x.histTokens = ptr(histTokens), x.histNumOutput = ptr(histNumOutput), x.biasOffsets = ptr(biasOffsets);
  x.biasTokens = ptr(biasTokens), x.biasValues = ptr(biasValues), x.numLogprobs = ptr(numLogprobs);
  x.allowedMask = ptr(mask), x.maskWords = mask.empty() ? 0 : (vocab + 31) / 32;
  x.logprobsOut = lpOut.data(), x.topIdsOut = idsOut.data();
  ms::Batch b;
  b.numSeqs = rows;
  b.extras = &x;
  const std::string e = ms::samplingExtrasError(b, vocab);
  if (!e.empty()) {
    std::fprintf(stderr, "%s\n", e.c_str());
    return 3;
  }
  std::vector<int32_t> out(static_cast<size_t>(rows));
  std::vector<uint32_t> q;
  std::vector<int32_t> idx;
  for (int s = 0; s < rows; s++) {
    const Row& r = params[static_cast<size_t>(s)];
    if (!ms::samplingParamError(r.temperature, r.topP).empty()) return 2;
    float* row = z.data() + static_cast<size_t>(s) * vocab;
    ms::PenaltyState st;
    const bool hasState = x.slot && x.slot[s] >= 0;
    if (hasState && x.reset && x.reset[s]) st.rebuild(x.histTokens + x.histOffsets[s], x.histOffsets[s + 1] - x.histOffsets[s], x.histNumOutput[s]);
    out[static_cast<size_t>(s)] = ms::sampleRowExtras(row, vocab, r.temperature, r.topP, r.seed, r.step, x, s, hasState ? &st : nullptr, q);
    if (x.numLogprobs && x.numLogprobs[s] >= 0)
      ms::rowLogprobs(row, vocab, r.temperature, out[static_cast<size_t>(s)], x.numLogprobs[s], x.logprobsOut + s * (1 + ms::kMaxLogprobs),
                      x.topIdsOut + s * ms::kMaxLogprobs, idx);
  }
  const bool ok = std::fwrite(out.data(), sizeof(int32_t), out.size(), stdout) == out.size() &&
                  std::fwrite(lpOut.data(), sizeof(float), lpOut.size(), stdout) == lpOut.size() &&
                  std::fwrite(idsOut.data(), sizeof(int32_t), idsOut.size(), stdout) == idsOut.size();
  return ok ? 0 : 1;
}
