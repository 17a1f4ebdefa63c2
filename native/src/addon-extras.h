// N-API side of SamplingExtras (backend.h): `sampling.extras` of forward / forwardWithSend,
// copied into owned vectors (the backend thread reads them after the call returns) and checked
// for shape here; value checks are common/logit-processing.h samplingExtrasError.
// The two output arrays (logprobsOut, topIdsOut) are the caller's: the job keeps them alive.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "addon-worker.h"
#include "backend.h"

namespace ms::addon {

struct ExtrasInputs {
  std::vector<int32_t> topK, slot, histOffsets, histTokens, histNumOutput, biasOffsets, biasTokens, numLogprobs;
  std::vector<float> minP, repetition, presence, frequency, biasValues;
  std::vector<uint8_t> reset;
  std::vector<uint32_t> mask;
  int maskWords = 0;
  float* logprobsOut = nullptr;  // (numSeqs, 1 + kMaxLogprobs), the caller's Float32Array
  int32_t* topIdsOut = nullptr;  // (numSeqs, kMaxLogprobs), the caller's Int32Array
  ms::SamplingExtras x;

  // Points x at the vectors (after they are filled; empty vectors stay null).
  void link() {
    auto p = [](auto& v) { return v.empty() ? nullptr : v.data(); };
    x.topK = p(topK), x.minP = p(minP), x.repetitionPenalty = p(repetition), x.presencePenalty = p(presence);
    x.frequencyPenalty = p(frequency), x.slot = p(slot), x.reset = p(reset), x.histOffsets = p(histOffsets);
    x.histTokens = p(histTokens), x.histNumOutput = p(histNumOutput), x.biasOffsets = p(biasOffsets);
    x.biasTokens = p(biasTokens), x.biasValues = p(biasValues), x.allowedMask = p(mask), x.maskWords = maskWords;
    x.numLogprobs = p(numLogprobs), x.logprobsOut = logprobsOut, x.topIdsOut = topIdsOut;
  }
};

namespace extras_detail {
template <class T, class A>
bool copyArray(Napi::Env env, Napi::Object o, const char* key, napi_typedarray_type type, size_t want, std::vector<T>* out,
               bool isSized = true) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  const std::string name = std::string("sampling.extras.") + key;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) fail(env, "BAD_ARGUMENT", name + " has the wrong array type");
  A a = v.As<A>();
  if (isSized && a.ElementLength() != want)
    fail(env, "BAD_ARGUMENT", name + " has " + std::to_string(a.ElementLength()) + " entries, expected " + std::to_string(want));
  out->assign(a.Data(), a.Data() + a.ElementLength());
  return true;
}

inline void checkCsr(Napi::Env env, const std::vector<int32_t>& off, size_t numItems, size_t numSeqs, const char* name) {
  if (off.size() != numSeqs + 1 || off[0] != 0 || size_t(off[numSeqs]) != numItems)
    fail(env, "BAD_ARGUMENT", std::string("sampling.extras.") + name + " must have numSeqs + 1 entries from 0 to the item count");
  for (size_t s = 0; s < numSeqs; s++)
    if (off[s + 1] < off[s]) fail(env, "BAD_ARGUMENT", std::string("sampling.extras.") + name + " must not decrease");
}
}  // namespace extras_detail

// Parses `v` (the extras object) for a batch of numSeqs rows and `vocab`. keep: receives the
// output arrays, to hold while the job runs.
inline std::shared_ptr<ExtrasInputs> parseExtras(Napi::Env env, Napi::Value v, size_t numSeqs, int vocab,
                                                 std::vector<Napi::ObjectReference>* keep) {
  using namespace extras_detail;
  if (!v.IsObject()) fail(env, "BAD_ARGUMENT", "sampling.extras must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto e = std::make_shared<ExtrasInputs>();
  const size_t n = numSeqs;
  copyArray<int32_t, Napi::Int32Array>(env, o, "topK", napi_int32_array, n, &e->topK);
  copyArray<float, Napi::Float32Array>(env, o, "minP", napi_float32_array, n, &e->minP);
  copyArray<float, Napi::Float32Array>(env, o, "repetitionPenalty", napi_float32_array, n, &e->repetition);
  copyArray<float, Napi::Float32Array>(env, o, "presencePenalty", napi_float32_array, n, &e->presence);
  copyArray<float, Napi::Float32Array>(env, o, "frequencyPenalty", napi_float32_array, n, &e->frequency);
  if (copyArray<int32_t, Napi::Int32Array>(env, o, "slot", napi_int32_array, n, &e->slot)) {
    for (int32_t s : e->slot)
      if (s < -1 || s >= (1 << 20)) fail(env, "BAD_ARGUMENT", "sampling.extras.slot entries must be in [-1, 2^20)");
    if (!copyArray<uint8_t, Napi::Uint8Array>(env, o, "reset", napi_uint8_array, n, &e->reset) ||
        !copyArray<int32_t, Napi::Int32Array>(env, o, "histOffsets", napi_int32_array, n + 1, &e->histOffsets) ||
        !copyArray<int32_t, Napi::Int32Array>(env, o, "histTokens", napi_int32_array, 0, &e->histTokens, false) ||
        !copyArray<int32_t, Napi::Int32Array>(env, o, "histNumOutput", napi_int32_array, n, &e->histNumOutput))
      fail(env, "BAD_ARGUMENT", "sampling.extras.slot needs reset, histOffsets, histTokens and histNumOutput");
    checkCsr(env, e->histOffsets, e->histTokens.size(), n, "histOffsets");
    for (size_t s = 0; s < n; s++)
      if (e->histNumOutput[s] < 0 || e->histNumOutput[s] > e->histOffsets[s + 1] - e->histOffsets[s])
        fail(env, "BAD_ARGUMENT", "sampling.extras.histNumOutput must be within the row's history");
  }
  if (copyArray<int32_t, Napi::Int32Array>(env, o, "biasOffsets", napi_int32_array, n + 1, &e->biasOffsets)) {
    copyArray<int32_t, Napi::Int32Array>(env, o, "biasTokens", napi_int32_array, 0, &e->biasTokens, false);
    copyArray<float, Napi::Float32Array>(env, o, "biasValues", napi_float32_array, e->biasTokens.size(), &e->biasValues);
    checkCsr(env, e->biasOffsets, e->biasTokens.size(), n, "biasOffsets");
    if (e->biasValues.size() != e->biasTokens.size()) fail(env, "BAD_ARGUMENT", "sampling.extras.biasValues must match biasTokens");
  }
  const size_t words = (size_t(vocab) + 31) / 32;
  if (copyArray<uint32_t, Napi::Uint32Array>(env, o, "allowedMask", napi_uint32_array, n * words, &e->mask)) e->maskWords = int(words);
  if (copyArray<int32_t, Napi::Int32Array>(env, o, "numLogprobs", napi_int32_array, n, &e->numLogprobs)) {
    Napi::Value lp = o.Get("logprobsOut"), ids = o.Get("topIdsOut");
    if (!lp.IsTypedArray() || lp.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        lp.As<Napi::Float32Array>().ElementLength() != n * (1 + ms::kMaxLogprobs))
      fail(env, "BAD_ARGUMENT", "sampling.extras.logprobsOut must be a Float32Array of numSeqs * 21");
    if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        ids.As<Napi::Int32Array>().ElementLength() != n * ms::kMaxLogprobs)
      fail(env, "BAD_ARGUMENT", "sampling.extras.topIdsOut must be an Int32Array of numSeqs * 20");
    e->logprobsOut = lp.As<Napi::Float32Array>().Data();
    e->topIdsOut = ids.As<Napi::Int32Array>().Data();
    keep->push_back(Napi::Persistent(lp.As<Napi::Object>()));
    keep->push_back(Napi::Persistent(ids.As<Napi::Object>()));
  }
  e->link();
  return e;
}

// sampling.promptLogprobs = {numTop Int32Array (numSeqs,), targets Int32Array (numTokens,),
// logprobsOut Float32Array (numTokens * 21), topIdsOut Int32Array (numTokens * 20)}; the outputs
// are the caller's (kept alive by the job).
struct PromptLogprobsInputs {
  std::vector<int32_t> numTop, targets;
  ms::PromptLogprobs p;
};

inline std::shared_ptr<PromptLogprobsInputs> parsePromptLogprobs(Napi::Env env, Napi::Value v, size_t numSeqs, size_t numTokens,
                                                                 int vocab, std::vector<Napi::ObjectReference>* keep) {
  using namespace extras_detail;
  if (!v.IsObject()) fail(env, "BAD_ARGUMENT", "sampling.promptLogprobs must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto e = std::make_shared<PromptLogprobsInputs>();
  const auto need = [&](const char* key) { fail(env, "BAD_ARGUMENT", std::string("sampling.promptLogprobs.") + key + " is required"); };
  if (!copyArray<int32_t, Napi::Int32Array>(env, o, "numTop", napi_int32_array, numSeqs, &e->numTop)) need("numTop");
  if (!copyArray<int32_t, Napi::Int32Array>(env, o, "targets", napi_int32_array, numTokens, &e->targets)) need("targets");
  for (int32_t n : e->numTop)
    if (n < 0 || n > ms::kMaxLogprobs) fail(env, "BAD_ARGUMENT", "sampling.promptLogprobs.numTop entries must be in [0, 20]");
  for (int32_t t : e->targets)
    if (t < -1 || t >= vocab) fail(env, "BAD_TOKEN", "sampling.promptLogprobs.targets entries must be -1 or token ids");
  Napi::Value lp = o.Get("logprobsOut"), ids = o.Get("topIdsOut");
  if (!lp.IsTypedArray() || lp.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
      lp.As<Napi::Float32Array>().ElementLength() != numTokens * (1 + ms::kMaxLogprobs))
    fail(env, "BAD_ARGUMENT", "sampling.promptLogprobs.logprobsOut must be a Float32Array of numTokens * 21");
  if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      ids.As<Napi::Int32Array>().ElementLength() != numTokens * ms::kMaxLogprobs)
    fail(env, "BAD_ARGUMENT", "sampling.promptLogprobs.topIdsOut must be an Int32Array of numTokens * 20");
  keep->push_back(Napi::Persistent(lp.As<Napi::Object>()));
  keep->push_back(Napi::Persistent(ids.As<Napi::Object>()));
  e->p.numTop = e->numTop.data();
  e->p.targets = e->targets.data();
  e->p.logprobsOut = lp.As<Napi::Float32Array>().Data();
  e->p.topIdsOut = ids.As<Napi::Int32Array>().Data();
  return e;
}

}  // namespace ms::addon
