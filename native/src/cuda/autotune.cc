// CudaBackend::autotune: picks cuBLASLt's fastest algorithm for every decode bucket the arena
// holds, and chooses between the skinny kernel and cuBLASLt for 1..8 tokens.
#include <algorithm>
#include <vector>

#include "check.h"
#include "cuda-backend.h"

namespace ms::cuda {

// Runs in the planned arena (memory-plan.cc), before the graphs are captured. Times the skinny
// kernel against cuBLASLt for 1..8 tokens of every weight (median of 5 after 2 warm-ups, each
// alone). The skinny kernel is kept unless cuBLASLt is 5% faster: in a sequence it also overlaps
// its neighbours (PDL), cuBLASLt does not.
void CudaBackend::autotune() {
  Arena& a = arena_;
  const int H = m_.hidden, I = m_.intermediate, qDim = m_.heads * m_.headDim;
  const int qkvDim = qDim + 2 * m_.kvHeads * m_.headDim;
  // Inputs: random, never zeros (timings on zeros can flatter).
  const size_t T = std::min(a.capRows, kMaxGraphBatch);  // rows the arena holds, logits included
  randomNormalBf16(a.xn, T * H, 7, 1, 0.f, 1.f, stream_);
  randomNormalBf16(a.attn, T * qDim, 7, 2, 0.f, 1.f, stream_);
  randomNormalBf16(a.act, T * I, 7, 3, 0.f, 1.f, stream_);
  randomNormalBf16(a.gu, T * 2 * I, 7, 4, 0.f, 1.f, stream_);
  struct Case {
    const bf16* X;
    const bf16* W;
    int O, K;
    void* Y;
    OutMode mode;
    OutMode skinnyMode;  // the gate|up skinny product writes silu(gate) * up
    void* skinnyY;
  };
  const LayerWeights& L = weights_->layers[0];
  Case cases[kNumWeightKinds] = {{a.xn, L.qkv, qkvDim, H, a.qkv, OutMode::Bf16, OutMode::Bf16, a.qkv},
                                 {a.attn, L.o, H, qDim, a.x, OutMode::F32Add, OutMode::F32Add, a.x},
                                 {a.xn, L.gateUp, 2 * I, H, a.gu, OutMode::Bf16, OutMode::SiluPairBf16, a.act},
                                 {a.act, L.down, H, I, a.x, OutMode::F32Add, OutMode::F32Add, a.x},
                                 {a.xn, weights_->head, m_.vocab, H, a.logits, OutMode::F32, OutMode::F32, a.logits}};
  // cuBLASLt: the fastest of the heuristic's candidates for every decode bucket size.
  for (int k = 0; k < kNumWeightKinds; k++)
    for (int bucket : kGraphBuckets) {
      if (size_t(bucket) > T) break;
      const Case& c = cases[k];
      gemm_->tune(c.X, bucket, c.W, c.O, c.K, c.Y, c.mode, stream_);
    }
  auto timeIt = [&](auto&& fn) {
    for (int i = 0; i < 2; i++) fn();
    std::vector<float> t;
    for (int i = 0; i < 5; i++) {
      MS_CUDA_CHECK(cudaEventRecord(evStart_, stream_));
      fn();
      MS_CUDA_CHECK(cudaEventRecord(evStop_, stream_));
      MS_CUDA_CHECK(cudaEventSynchronize(evStop_));
      float ms;
      MS_CUDA_CHECK(cudaEventElapsedTime(&ms, evStart_, evStop_));
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[2];
  };
  for (int k = 0; k < kNumWeightKinds; k++) {
    const Case& c = cases[k];
    for (int T = 1; T <= kSkinnyMaxTokens; T++) {
      float skinny = timeIt([&] { skinnyGemm(c.X, T, c.W, c.O, c.K, c.skinnyY, c.skinnyMode, stream_); });
      float lt = timeIt([&] { gemm_->run(c.X, T, c.W, c.O, c.K, c.Y, c.mode, stream_); });
      useSkinny_[k][T] = skinny <= 1.05f * lt;
      gemmMs_[k][T][0] = skinny;
      gemmMs_[k][T][1] = lt;
    }
  }
  MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace ms::cuda
