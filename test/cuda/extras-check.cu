// Kernel checks of the sampling extras (cuda/logit-processing.h, cuda/extras-pack.h, the sampler
// with SamplingArgs::extras) against the one definition, common/logit-processing.h, on random
// logits: processed logits bit for bit (bias with repeated tokens and bans, allowed masks,
// penalties from rebuilt slots, then again one step later from the slots the GPU updated itself),
// the sampler's integer part (top_k / min_p cut of the GPU's own weights, then top-p and the draw)
// exactly, logprobs and top ids against the host's float64 (ids equal, values within 1e-5), with
// small planned windows (bias in windows, a history in chunks) and the default ones. Then the
// time of the sampling tail at 64 rows of 128256 with and without extras. Part of
// microserve_kernels_check (kernels-check.cu calls checkSamplingExtras).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/logit-processing.h"
#include "common/sampling.h"
#include "cuda/check.h"
#include "cuda/extras-pack.h"
#include "cuda/logit-processing.h"
#include "cuda/sampling.h"
#include "check-device.h"

using namespace ms::cuda;
using ms::check::download;
using ms::check::medianEventUs;
using ms::check::upload;

namespace {

std::mt19937_64 rng(4242);

bool sameFloat(float a, float b) { return (a != a && b != b) || std::memcmp(&a, &b, 4) == 0; }

// One batch of rows with every extra somewhere, as the engine sends it (backend.h SamplingExtras).
struct Case {
  int V = 0, R = 0;
  std::vector<float> z;  // (R, V)
  std::vector<float> temperature, topP;
  std::vector<uint32_t> seed, step;
  std::vector<int32_t> topK, slot, histOffsets{0}, histTokens, histNumOutput, biasOffsets{0}, biasTokens, numLogprobs;
  std::vector<float> minP, rep, pres, freq, biasValues;
  std::vector<uint8_t> reset;
  std::vector<uint32_t> mask;
  std::vector<float> lpOut;
  std::vector<int32_t> idsOut, tokens;
  ms::SamplingExtras x;
  ms::Batch b;

  void link(bool withReset) {
    x = ms::SamplingExtras();
    x.topK = topK.data(), x.minP = minP.data(), x.repetitionPenalty = rep.data(), x.presencePenalty = pres.data();
    x.frequencyPenalty = freq.data(), x.slot = slot.data(), x.histOffsets = histOffsets.data();
    x.histTokens = histTokens.data(), x.histNumOutput = histNumOutput.data(), x.biasOffsets = biasOffsets.data();
    x.biasTokens = biasTokens.data(), x.biasValues = biasValues.data(), x.numLogprobs = numLogprobs.data();
    static std::vector<uint8_t> none;
    none.assign(size_t(R), 0);
    x.reset = withReset ? reset.data() : none.data();
    if (!mask.empty()) x.allowedMask = mask.data(), x.maskWords = (V + 31) / 32;
    lpOut.assign(size_t(R) * (1 + ms::kMaxLogprobs), 0.f);
    idsOut.assign(size_t(R) * ms::kMaxLogprobs, 0);
    x.logprobsOut = lpOut.data(), x.topIdsOut = idsOut.data();
    tokens.assign(size_t(R), -1);
    b = ms::Batch();
    b.numSeqs = R;
    b.temperature = temperature.data(), b.topP = topP.data(), b.seed = seed.data(), b.step = step.data();
    b.tokensOut = tokens.data();
    b.extras = &x;
  }
};

void freshLogits(Case& c) {
  std::normal_distribution<float> nd(0.f, 3.f);
  c.z.resize(size_t(c.R) * c.V);
  for (auto& v : c.z) v = nd(rng);
  for (int i = 0; i < c.V; i += 3) c.z[size_t(2) * c.V + i] = c.z[size_t(2) * c.V];  // ties (row 2: top_k, logprobs 20)
  c.z[size_t(8) * c.V + 1] = NAN;
}

Case makeCase(int V) {
  Case c;
  c.V = V, c.R = 10;
  std::uniform_int_distribution<int> tok(0, V - 1);
  const float temps[] = {0.8f, 1.f, 1.2f, 0.7f, 1.f, 0.f, 1.f, 0.f, 0.9f, 2.f};
  const float tops[] = {1.f, 0.9f, 1.f, 0.95f, 0.8f, 1.f, 1.f, 1.f, 1.f, 0.7f};
  for (int r = 0; r < c.R; r++) {
    c.temperature.push_back(temps[r]), c.topP.push_back(tops[r]), c.seed.push_back(uint32_t(rng())), c.step.push_back(uint32_t(r * 7));
    c.topK.push_back(r == 2 ? 7 : r == 4 ? 50 : r == 9 ? 1 : 0);
    c.minP.push_back(r == 3 ? 0.05f : r == 4 ? 0.01f : 0.f);
    c.rep.push_back(r == 1 ? 1.3f : r == 4 ? 0.8f : r == 7 ? 1.1f : 1.f);
    c.pres.push_back(r == 1 ? 0.5f : r == 7 ? -0.25f : 0.f);
    c.freq.push_back(r == 1 ? 0.2f : r == 4 ? -0.3f : r == 7 ? 0.75f : 0.f);
    c.slot.push_back(r == 1 ? 0 : r == 4 ? 3 : r == 7 ? 5 : -1);
    c.reset.push_back(c.slot.back() >= 0);
    c.numLogprobs.push_back(r == 0 ? 5 : r == 2 ? 20 : r == 5 ? 20 : r == 6 ? 10 : r == 7 ? 0 : -1);
    // history: 30 prompt tokens and 10 output tokens (repeats included)
    int numOut = 0;
    if (c.slot.back() >= 0) {
      for (int i = 0; i < 30; i++) c.histTokens.push_back(tok(rng));
      for (int i = 0; i < 10; i++) c.histTokens.push_back(i % 3 ? tok(rng) : c.histTokens[c.histTokens.size() - 1 - i]);
      numOut = 10;
    }
    c.histOffsets.push_back(int32_t(c.histTokens.size()));
    c.histNumOutput.push_back(numOut);
    // bias: repeats of one token, a ban, a bias on a banned token
    if (r == 0 || r == 3 || r == 4) {
      const int t0 = tok(rng), t1 = tok(rng);
      for (auto [t, v] : {std::pair<int, float>{t0, 1.5f}, {t1, -2.f}, {t0, 0.25f}, {tok(rng), -INFINITY}, {t0, -0.1f}, {t1, 3.f}})
        c.biasTokens.push_back(t), c.biasValues.push_back(v);
    }
    c.biasOffsets.push_back(int32_t(c.biasTokens.size()));
  }
  const int words = (V + 31) / 32;
  c.mask.assign(size_t(c.R) * words, 0xffffffffu);
  for (int w = 0; w < words; w++) c.mask[size_t(5) * words + w] = 0x49249249u;  // row 5: every third token
  for (int w = 0; w < words; w++) c.mask[size_t(6) * words + w] = 0;             // row 6: three tokens
  for (int t : {3, V / 2, V - 1}) c.mask[size_t(6) * words + t / 32] |= 1u << (t % 32);
  freshLogits(c);
  return c;
}

struct Totals {
  int failed = 0;
};

// One step of `c` on the GPU through DeviceExtras and the kernels (as model-forward.cc runs them),
// checked against the host. states: the host's penalty state per slot (rebuilt with reset).
void runStep(Case& c, DeviceExtras& dx, std::vector<ms::PenaltyState>& states, bool withReset, const std::string& name,
             Totals& tot) {
  const int V = c.V, R = c.R;
  c.link(withReset);
  std::vector<int32_t> params(size_t(R) * kSampleParamInts);
  for (int r = 0; r < R; r++) {
    std::memcpy(&params[size_t(r) * kSampleParamInts], &c.temperature[r], 4);
    std::memcpy(&params[size_t(r) * kSampleParamInts + 1], &c.topP[r], 4);
    params[size_t(r) * kSampleParamInts + 2] = int32_t(c.seed[r]), params[size_t(r) * kSampleParamInts + 3] = int32_t(c.step[r]);
  }
  float* dz = upload(c.z);
  int32_t* dp = upload(params);
  int32_t* dt;
  MS_CUDA_CHECK(cudaMalloc(&dt, size_t(R) * 4));
  const std::string err = dx.check(c.b);
  if (!err.empty()) throw CudaError("check refused the case: " + err, false);
  dx.rebuildSlots(c.b, 0);
  dx.pack(c.b, R, 0);
  ExtrasArgs a = dx.args(dz, 0, R, dp, dt);
  dx.applyBiasWindows(a, 0);
  applyMaskPenalties(a, 0);
  const std::vector<float> zg = download<float>(dz, c.z.size());

  // Host: P1-P4 on every row.
  std::vector<float> zh = c.z;
  for (int r = 0; r < R; r++) {
    const int slot = c.slot[r];
    if (slot >= 0 && withReset)
      states[size_t(slot)].rebuild(c.histTokens.data() + c.histOffsets[r], c.histOffsets[r + 1] - c.histOffsets[r], c.histNumOutput[r]);
    ms::processLogits(&zh[size_t(r) * V], V, c.x, r, slot >= 0 ? &states[size_t(slot)] : nullptr);
  }
  int badZ = 0;
  for (size_t i = 0; i < zh.size(); i++)
    if (!sameFloat(zg[i], zh[i])) {
      if (badZ < 4) std::printf("    row %zu token %zu: GPU %a, host %a\n", i / V, i % V, double(zg[i]), double(zh[i]));
      badZ++;
    }

  // The sampler twice: without cuts (the GPU's own weights q), then with them.
  std::vector<int32_t> noCut(size_t(R) * kExtraInts);
  const std::vector<int32_t> real = download<int32_t>(a.extras, size_t(R) * kExtraInts);
  for (int r = 0; r < R; r++) {
    std::copy(real.begin() + r * kExtraInts, real.begin() + (r + 1) * kExtraInts, noCut.begin() + r * kExtraInts);
    noCut[size_t(r) * kExtraInts + kTopK] = 0, noCut[size_t(r) * kExtraInts + kMinP] = 0;
    noCut[size_t(r) * kExtraInts + kNumLogprobs] = -1;
  }
  int32_t* dNoCut = upload(noCut);
  SamplingArgs s;
  s.logits = dz, s.vocab = V, s.rows = R, s.params = dp, s.tokens = dt, s.extras = dNoCut;
  sampleTokens(s, 0);
  const std::vector<uint32_t> qRaw = download<uint32_t>(dz, c.z.size());
  MS_CUDA_CHECK(cudaMemcpy(dz, zg.data(), zg.size() * 4, cudaMemcpyHostToDevice));
  LogprobArgs l;
  l.logits = dz, l.vocab = V, l.rows = R, l.sampleParams = dp, l.numTop = a.extras + kNumLogprobs, l.numTopStride = kExtraInts;
  l.lse = a.lse, l.out = a.out;
  computeLogprobs(l, 0);
  s.extras = a.extras;
  sampleTokens(s, 0);
  afterSample(a, 0);
  dx.downloadLogprobs(c.b, 0);
  const std::vector<uint32_t> qCut = download<uint32_t>(dz, c.z.size());
  MS_CUDA_CHECK(cudaMemcpy(c.tokens.data(), dt, size_t(R) * 4, cudaMemcpyDeviceToHost));
  dx.finishLogprobs(c.b);

  int badTok = 0, badCut = 0, badKept = 0, badIds = 0, differ = 0, numSampled = 0;
  double maxLpErr = 0;
  std::vector<uint32_t> q(V), scratch;
  std::vector<int32_t> idx;
  std::vector<float> lpRef(1 + ms::kMaxLogprobs);
  std::vector<int32_t> idsRef(ms::kMaxLogprobs);
  for (int r = 0; r < R; r++) {
    const float* zr = &zh[size_t(r) * V];
    const bool keep = c.numLogprobs[r] >= 0;
    const int32_t best = ms::sampleArgmax(zr, V);
    int32_t want = best;
    if (c.temperature[r] > 0 && std::isfinite(zr[best])) {
      numSampled++;
      std::copy(qRaw.begin() + size_t(r) * V, qRaw.begin() + size_t(r + 1) * V, q.begin());
      ms::truncateWeights(q.data(), V, c.topK[r], c.minP[r]);
      want = ms::sampleFromWeights(q.data(), V, c.topP[r], c.seed[r], c.step[r]);
      if (want < 0) want = best;
      if (!keep) badCut += !std::equal(q.begin(), q.end(), qCut.begin() + size_t(r) * V);
      std::vector<float> zc(zr, zr + V);
      std::vector<float> zIn(c.z.begin() + size_t(r) * V, c.z.begin() + size_t(r + 1) * V);
      const int32_t host = ms::sampleRowExtras(zIn.data(), V, c.temperature[r], c.topP[r], c.seed[r], c.step[r], c.x, r,
                                               c.slot[r] >= 0 ? &states[size_t(c.slot[r])] : nullptr, scratch);
      (void)zc;
      differ += host != c.tokens[r];
    }
    if (keep) badKept += !std::equal(zg.begin() + size_t(r) * V, zg.begin() + size_t(r + 1) * V, reinterpret_cast<const float*>(qCut.data()) + size_t(r) * V, sameFloat);
    if (c.tokens[r] != want) {
      std::printf("    row %d: GPU token %d, host (GPU weights) %d\n", r, c.tokens[r], want);
      badTok++;
    }
    if (keep) {
      ms::rowLogprobs(zr, V, c.temperature[r], c.tokens[r], c.numLogprobs[r], lpRef.data(), idsRef.data(), idx);
      const float* lp = &c.lpOut[size_t(r) * (1 + ms::kMaxLogprobs)];
      const int32_t* ids = &c.idsOut[size_t(r) * ms::kMaxLogprobs];
      for (int k = 0; k < ms::kMaxLogprobs; k++)
        if (ids[k] != idsRef[k]) {
          if (badIds < 4) std::printf("    row %d top %d: GPU id %d, host %d\n", r, k, ids[k], idsRef[k]);
          badIds++;
        }
      for (int k = 0; k <= ms::kMaxLogprobs; k++) {
        if (std::isinf(lpRef[k]) || std::isinf(lp[k])) {
          if (lpRef[k] != lp[k]) maxLpErr = INFINITY;
        } else {
          maxLpErr = std::max(maxLpErr, std::fabs(double(lp[k]) - double(lpRef[k])));
        }
      }
    }
  }
  // The host's state takes the GPU's tokens (as afterSample did on the device).
  for (int r = 0; r < R; r++)
    if (c.slot[r] >= 0) states[size_t(c.slot[r])].add(c.tokens[r]);
  const bool ok = !badZ && !badTok && !badCut && !badKept && !badIds && maxLpErr <= 1e-5 && differ <= 1;
  if (!ok) tot.failed++;
  std::printf("%-58s logits bad %d, tokens bad %d, cut bad %d, kept bad %d, top ids bad %d, logprob err %.1e, vs float64 "
              "weights differ %d/%d %s\n",
              name.c_str(), badZ, badTok, badCut, badKept, badIds, maxLpErr, differ, numSampled, ok ? "PASS" : "FAIL");
  cudaFree(dz), cudaFree(dp), cudaFree(dt), cudaFree(dNoCut);
}

// Median µs of the sampling tail over 64 rows of 128256 (fresh logits each launch).
void timeTail() {
  const int R = 64, V = 128256;
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<float> z(size_t(R) * V);
  for (auto& v : z) v = nd(rng);
  float* pristine = upload(z);
  float* dz;
  MS_CUDA_CHECK(cudaMalloc(&dz, z.size() * 4));
  int32_t* dt;
  MS_CUDA_CHECK(cudaMalloc(&dt, R * 4));
  std::vector<int32_t> params(size_t(R) * kSampleParamInts);
  for (int r = 0; r < R; r++) {
    const float t = 0.8f, p = 0.9f;
    std::memcpy(&params[size_t(r) * 4], &t, 4), std::memcpy(&params[size_t(r) * 4 + 1], &p, 4);
    params[size_t(r) * 4 + 2] = r;
  }
  int32_t* dp = upload(params);
  DeviceExtras dx;
  ExtrasCaps caps;
  caps.capRows = R, caps.vocab = V, caps.numSlots = R;
  dx.allocate(caps);
  // Every row: penalties over a 1000-token history; variants add top_k 50 and logprobs 20.
  std::vector<float> temp(R, 0.8f), topP(R, 0.9f), rep(R, 1.1f), pres(R, 0.3f), freq(R, 0.2f), minP(R, 0.f);
  std::vector<uint32_t> seed(R), step(R);
  std::vector<int32_t> topK(R, 0), slot(R), histOff(R + 1), hist, histOut(R, 500), biasOff(R + 1, 0), numLp(R, -1);
  std::vector<uint8_t> reset(R, 1);
  std::uniform_int_distribution<int> tok(0, V - 1);
  for (int r = 0; r < R; r++) {
    slot[r] = r;
    for (int i = 0; i < 1000; i++) hist.push_back(tok(rng));
    histOff[r + 1] = int32_t(hist.size());
  }
  std::vector<float> lpOut(size_t(R) * 21);
  std::vector<int32_t> idsOut(size_t(R) * 20), tokens(R);
  ms::SamplingExtras x;
  x.topK = topK.data(), x.minP = minP.data(), x.repetitionPenalty = rep.data(), x.presencePenalty = pres.data();
  x.frequencyPenalty = freq.data(), x.slot = slot.data(), x.reset = reset.data(), x.histOffsets = histOff.data();
  x.histTokens = hist.data(), x.histNumOutput = histOut.data(), x.biasOffsets = biasOff.data();
  x.numLogprobs = numLp.data(), x.logprobsOut = lpOut.data(), x.topIdsOut = idsOut.data();
  ms::Batch b;
  b.numSeqs = R, b.temperature = temp.data(), b.topP = topP.data(), b.seed = seed.data(), b.step = step.data();
  b.tokensOut = tokens.data(), b.extras = &x;
  dx.rebuildSlots(b, 0);
  auto median = [&](bool extras) {
    auto setup = [&] {
      MS_CUDA_CHECK(cudaMemcpy(dz, pristine, z.size() * 4, cudaMemcpyDeviceToDevice));
      if (extras) dx.pack(b, R, 0);
    };
    return medianEventUs(7, setup, [&] {
      SamplingArgs s;
      s.logits = dz, s.vocab = V, s.rows = R, s.params = dp, s.tokens = dt;
      if (extras) {
        ExtrasArgs a = dx.args(dz, 0, R, dp, dt);
        applyBias(a, 0);
        applyMaskPenalties(a, 0);
        LogprobArgs l;
        l.logits = dz, l.vocab = V, l.rows = R, l.sampleParams = dp, l.numTop = a.extras + kNumLogprobs;
        l.numTopStride = kExtraInts, l.lse = a.lse, l.out = a.out;
        computeLogprobs(l, 0);
        s.extras = a.extras;
        sampleTokens(s, 0);
        afterSample(a, 0);
      } else {
        sampleTokens(s, 0);
      }
    });
  };
  std::printf("sampling tail time, 64 rows x 128256, T 0.8 top-p 0.9: plain %.1f us;", median(false));
  std::printf(" penalties (graph kernels) %.1f us;", median(true));
  for (int r = 0; r < R; r++) topK[r] = 50;
  std::printf(" + top_k 50 %.1f us;", median(true));
  for (int r = 0; r < R; r++) numLp[r] = 20;
  std::printf(" + logprobs 20 %.1f us\n", median(true));
  cudaFree(pristine), cudaFree(dz), cudaFree(dt), cudaFree(dp);
}

}  // namespace

// Returns the number of failed checks.
int checkSamplingExtras() {
  Totals tot;
  for (int V : {1000, 4099, 128256}) {
    for (bool small : {true, false}) {
      Case c = makeCase(V);
      DeviceExtras dx;
      ExtrasCaps caps;
      caps.capRows = c.R, caps.vocab = V, caps.numSlots = 8;
      if (small) caps.biasCap = 4, caps.histCap = 16;  // bias in windows, histories in chunks
      dx.allocate(caps);
      std::vector<ms::PenaltyState> states(8);
      const std::string tag = "extras vocab=" + std::to_string(V) + (small ? " small windows" : "");
      runStep(c, dx, states, true, tag + " step 1", tot);
      freshLogits(c);
      for (auto& s : c.step) s++;
      runStep(c, dx, states, false, tag + " step 2 (GPU-kept slots)", tot);
    }
  }
  {  // refusals of the plan: a slot past it, a slot twice
    Case c = makeCase(1000);
    c.link(true);
    DeviceExtras dx;
    ExtrasCaps caps;
    caps.capRows = c.R, caps.vocab = 1000, caps.numSlots = 4;
    dx.allocate(caps);
    const bool past = !dx.check(c.b).empty();
    c.slot[1] = 3, c.slot[4] = 3, c.slot[7] = -1;
    c.link(true);
    const bool twice = !dx.check(c.b).empty();
    c.slot[4] = 2;
    c.link(true);
    const bool fine = dx.check(c.b).empty();
    const bool ok = past && twice && fine;
    if (!ok) tot.failed++;
    std::printf("%-58s slot past the plan %s, slot twice %s, valid %s %s\n", "extras plan checks", past ? "refused" : "ACCEPTED",
                twice ? "refused" : "ACCEPTED", fine ? "accepted" : "REFUSED", ok ? "PASS" : "FAIL");
  }
  timeTail();
  return tot.failed;
}
