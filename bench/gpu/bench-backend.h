// The engine bench's CUDA backend: the shipped CudaBackend plus the knobs and read-outs a
// benchmark needs (GPU time per forward, graphs on/off and re-capture, the stage profile, the
// GEMM autotune figures, random KV pages), kept out of the shipped backend's public API. Built
// only with bench/gpu/engine-bench.cu (target microserve_engine_bench).
#pragma once
#include <cstdint>
#include <memory>
#include <utility>

#include "cuda/cuda-backend.h"
#include "cuda/kernels.h"

namespace ms::cuda {

class BenchCudaBackend : public CudaBackend {
 public:
  using CudaBackend::CudaBackend;

  // As makeCudaBackend (same checks, same typed errors), but the bench's class.
  static std::unique_ptr<BenchCudaBackend> make(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o,
                                                Status* st) {
    return buildCudaBackend<BenchCudaBackend>(m, kv, o, st);
  }

  // [default: BackendOptions::cudaGraphs] replay CUDA graphs for pure-decode batches.
  void setGraphsEnabled(bool on) { graphsEnabled_ = on; }
  // Captures every planned graph again (after kernel settings changed).
  void resetGraphs() {
    guarded([&] {
      if (finalized_) captureAllGraphs();
      return Status::Ok();
    });
  }
  // [default: off] time each forward's GPU work with events (lastGpuMs).
  void setTiming(bool on) { timing_ = on; }
  double lastGpuMs() const { return lastGpuMs_; }
  bool lastUsedGraph() const { return lastUsedGraph_; }
  // Fills every KV page with N(0, 1) bf16 (decode benchmarks without a prefill per sequence).
  Status fillKvRandom(uint64_t seed) {
    return guarded([&] {
      ensureKvPool();
      randomNormalBf16(pool_, size_t(kv_.numPages + 1) * pageElems_, seed, uint64_t(1) << 40, 0.f, 1.f, stream_);
      MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return Status::Ok();
    });
  }
  // Which product runs for T tokens of a weight kind: "skinny" or "cublaslt" (after finalize).
  const char* gemmChoice(int kind, int T) const {
    return usesSkinny(kind, T) ? "skinny" : "cublaslt";
  }
  // Autotune times (ms) of one product of a weight kind for T tokens: skinny, cuBLASLt.
  std::pair<float, float> gemmTimes(int kind, int T) const { return {gemmMs_[kind][T][0], gemmMs_[kind][T][1]}; }
  // cuBLASLt's tuned configuration of a weight kind at graph bucket kGraphBuckets[bi]: its time,
  // rank in the heuristic's list, split-K count (0: as the heuristic gave it).
  Gemm::Choice ltChoice(int kind, int bi) const { return ltChoice_[kind][bi]; }
  // cuBLASLt's tuned configurations at prefill-sized steps (numTokens, one choice per weight kind).
  const std::vector<PrefillTune>& prefillTune() const { return prefillTune_; }
  // The decode attention split plan tuned for graph batch bucket kGraphBuckets[bi] and context
  // bucket kMinGraphCtx << ci (ms 0: not tuned).
  DecodeChoice decodeChoice(int bi, int ci) const { return decodeChoice_[bi][ci]; }
  // The per-stage GPU time profile (CudaBackend::setProfile).
  using CudaBackend::profile;
  using CudaBackend::setProfile;
};

}  // namespace ms::cuda
