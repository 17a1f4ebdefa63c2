// CudaBackend::autotune: picks cuBLASLt's fastest configuration for every decode bucket the arena
// holds (the heuristic's algorithms, and split-K variants of them for every weight but the LM
// head) and for prefill-sized steps (kPrefillTuneSizes and whole chunks of maxBatchTokens: the
// heuristic's algorithms), and chooses between the skinny kernel and cuBLASLt for 1..8 tokens.
#include <algorithm>
#include <iterator>
#include <utility>
#include <vector>

#include "check.h"
#include "cuda-backend.h"

namespace ms::cuda {

// Runs in the planned arena (memory-plan.cc), before the graphs are captured. Every timed product
// reads another layer's copy of its weight than the one before (kTuneWeights in turn), as a step
// does: a weight of 33-50 MB (o, qkv) would otherwise come partly from the 50 MB L2 and flatter
// whatever streams it. Times the skinny kernel against cuBLASLt for 1..8 tokens of every weight
// (median of 5 after 2 warm-ups, each alone). The skinny kernel is kept unless cuBLASLt is 5%
// faster: in a sequence it also overlaps its neighbours (PDL), cuBLASLt does not.
CudaBackend::GemmShape CudaBackend::gemmShape(int kind) const {
  const int H = m_.hidden, I = m_.intermediate, qDim = m_.heads * m_.headDim;
  switch (kind) {
    case kQkv: return {qDim + 2 * m_.kvHeads * m_.headDim, H, OutMode::Bf16};
    case kO: return {H, qDim, OutMode::F32Add};
    case kGateUp: return {2 * I, H, OutMode::Bf16};
    case kDown: return {H, I, OutMode::F32Add};
    default: return {m_.vocab, H, OutMode::F32};
  }
}

void CudaBackend::autotune() {
  constexpr int kTuneWeights = 4;
  constexpr int kPrefillTuneSizes[] = {512, 1024, 2048, 4096, 8192};
  Arena& a = arena_;
  const int H = m_.hidden, I = m_.intermediate, qDim = m_.heads * m_.headDim;
  // Inputs: random, never zeros (timings on zeros can flatter).
  const size_t T = std::min(a.capRows, kMaxGraphBatch);  // rows the arena holds, logits included
  const size_t R = size_t(a.capTokens);                   // rows of the activations
  randomNormalBf16(a.xn, R * H, 7, 1, 0.f, 1.f, stream_);
  randomNormalBf16(a.attn, R * qDim, 7, 2, 0.f, 1.f, stream_);
  randomNormalBf16(a.act, R * I, 7, 3, 0.f, 1.f, stream_);
  randomNormalBf16(a.gu, T * 2 * I, 7, 4, 0.f, 1.f, stream_);
  struct Case {
    const bf16* X;
    std::vector<const bf16*> Ws;  // the weight of layers 0, 1, .. (the head: one)
    int O, K;
    void* Y;
    OutMode mode;
    OutMode skinnyMode;  // the gate|up skinny product writes silu(gate) * up
    void* skinnyY;
  };
  auto layersOf = [&](bf16* LayerWeights::*w) {
    std::vector<const bf16*> v;
    for (int l = 0; l < std::min(kTuneWeights, m_.layers); l++) v.push_back(weights_->layers[l].*w);
    return v;
  };
  auto shaped = [&](int k, const bf16* X, std::vector<const bf16*> Ws, void* Y, OutMode skinnyMode, void* skinnyY) {
    const GemmShape g = gemmShape(k);
    return Case{X, std::move(Ws), g.O, g.K, Y, g.mode, skinnyMode, skinnyY};
  };
  const Case cases[kNumWeightKinds] = {
      shaped(kQkv, a.xn, layersOf(&LayerWeights::qkv), a.qkv, OutMode::Bf16, a.qkv),
      shaped(kO, a.attn, layersOf(&LayerWeights::o), a.x, OutMode::F32Add, a.x),
      shaped(kGateUp, a.xn, layersOf(&LayerWeights::gateUp), a.gu, OutMode::SiluPairBf16, a.act),
      shaped(kDown, a.act, layersOf(&LayerWeights::down), a.x, OutMode::F32Add, a.x),
      shaped(kHead, a.xn, {weights_->head}, a.logits, OutMode::F32, a.logits)};
  // cuBLASLt: the fastest candidate for every decode bucket size; split-K where the product has
  // few output tiles at small batch (all but the LM head's 128k rows).
  for (int k = 0; k < kNumWeightKinds; k++)
    for (int bi = 0; bi < kNumGraphBuckets; bi++) {
      const int bucket = kGraphBuckets[bi];
      if (size_t(bucket) > T) break;
      const Case& c = cases[k];
      ltChoice_[k][bi] = gemm_->tune(c.X, bucket, c.Ws, c.O, c.K, c.Y, c.mode, stream_, k != kHead);
    }
  // Prefill steps of those exact sizes (the plans are per token count; other sizes keep the
  // heuristic's first algorithm). The LM head reads only the rows that need logits: not here.
  std::vector<int> sizes(std::begin(kPrefillTuneSizes), std::end(kPrefillTuneSizes));
  sizes.push_back(opts_.maxBatchTokens);
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  prefillTune_.clear();
  for (int n : sizes) {
    if (n <= kMaxGraphBatch || n > a.capTokens) continue;
    PrefillTune pt;
    pt.numTokens = n;
    for (int k = 0; k < kHead; k++) {
      const Case& c = cases[k];
      pt.choice[k] = gemm_->tune(c.X, n, c.Ws, c.O, c.K, c.Y, c.mode, stream_, false);
    }
    prefillTune_.push_back(pt);
  }
  size_t turn = 0;
  auto timeIt = [&](auto&& fn) { return medianEventMs(fn, 2, 5); };
  for (int k = 0; k < kNumWeightKinds; k++) {
    const Case& c = cases[k];
    auto nextW = [&] { return c.Ws[turn++ % c.Ws.size()]; };
    for (int T = 1; T <= kSkinnyMaxTokens; T++) {
      float skinny = timeIt([&] { skinnyGemm(c.X, T, nextW(), c.O, c.K, c.skinnyY, c.skinnyMode, stream_); });
      float lt = timeIt([&] { gemm_->run(c.X, T, nextW(), c.O, c.K, c.Y, c.mode, stream_); });
      useSkinny_[k][T] = skinny <= 1.05f * lt;
      gemmMs_[k][T][0] = skinny;
      gemmMs_[k][T][1] = lt;
    }
  }
  MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace ms::cuda
