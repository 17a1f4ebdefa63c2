// The engine bench's CUDA backend: the shipped CudaBackend plus the knobs and read-outs a
// benchmark needs (GPU time per forward, graphs on/off and re-capture, the stage profile, the
// GEMM autotune figures, random KV pages), kept out of the shipped backend's public API. Built
// only with bench/gpu/engine-bench.cu (target microserve_engine_bench).
#pragma once
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
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
  // This run's start-time choices as text, one per line (applyChoices reads it back):
  //   skinny KIND T 0|1          the skinny kernel or cuBLASLt for T tokens of weight kind KIND
  //   gemm KIND T RANK SPLITK    cuBLASLt's candidate at decode bucket T
  //   prefill KIND T RANK        cuBLASLt's candidate at prefill size T
  //   attention BI CI WAVES EVEN STAGES MAXSPLITLEN   decode attention at bucket (BI, CI)
  std::string choicesText() const {
    std::string out;
    for (int k = 0; k < kNumWeightKinds; k++)
      for (int T = 1; T <= kSkinnyMaxTokens; T++)
        out += "skinny " + std::to_string(k) + " " + std::to_string(T) + " " + (useSkinny_[k][T] ? "1" : "0") + "\n";
    for (int k = 0; k < kNumWeightKinds; k++)
      for (int bi = 0; bi < kNumGraphBuckets; bi++)
        if (ltChoice_[k][bi].ms > 0.f)
          out += "gemm " + std::to_string(k) + " " + std::to_string(kGraphBuckets[bi]) + " " +
                 std::to_string(ltChoice_[k][bi].rank) + " " + std::to_string(ltChoice_[k][bi].splitK) + "\n";
    for (const PrefillTune& pt : prefillTune_)
      for (int k = 0; k < kHead; k++)
        out += "prefill " + std::to_string(k) + " " + std::to_string(pt.numTokens) + " " +
               std::to_string(pt.choice[k].rank) + "\n";
    for (int bi = 0; bi < kNumGraphBuckets; bi++)
      for (int ci = 0; ci < kNumTunedCtx; ci++) {
        const DecodeChoice& c = decodeChoice_[bi][ci];
        if (c.ms > 0.f)
          out += "attention " + std::to_string(bi) + " " + std::to_string(ci) + " " + std::to_string(c.waves) + " " +
                 (c.evenSplits ? "1 " : "0 ") + std::to_string(c.stages) + " " + std::to_string(c.maxSplitLen) + "\n";
      }
    return out;
  }
  // Applies another run's choices (choicesText), then captures the graphs again: the profiled run
  // (bench/gpu/profile.sh) replays the normal run's, since under ncu, whose launches are serialised,
  // the start-time timings pick otherwise. Returns the lines it could not apply (unknown, out of
  // range, or a cuBLASLt candidate this run's heuristic does not list).
  int applyChoices(const std::string& text) {
    int bad = 0;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string what;
      int v[6] = {};
      f >> what;
      const int n = what == "skinny" ? 3 : what == "gemm" ? 4 : what == "prefill" ? 3 : what == "attention" ? 6 : 0;
      for (int i = 0; i < n; i++) f >> v[i];
      if (what.empty()) continue;
      if (n == 0 || f.fail() || (what != "attention" && (v[0] < 0 || v[0] >= kNumWeightKinds))) {
        bad++;
      } else if (what == "skinny") {
        if (v[1] >= 1 && v[1] <= kSkinnyMaxTokens) useSkinny_[v[0]][v[1]] = v[2] != 0;
        else bad++;
      } else if (what == "gemm" || what == "prefill") {
        const GemmShape g = gemmShape(v[0]);
        if (v[1] < 1 || !gemm_->pin(v[1], g.O, g.K, g.mode, v[2], what == "gemm" ? v[3] : 0)) bad++;
      } else if (v[0] >= 0 && v[0] < kNumGraphBuckets && v[1] >= 0 && v[1] < kNumTunedCtx && (v[4] == 2 || v[4] == 3) &&
                 v[5] >= 64 && v[5] <= kMaxSplitLen && v[5] % 64 == 0) {
        DecodeChoice& c = decodeChoice_[v[0]][v[1]];
        c.waves = v[2], c.evenSplits = v[3] != 0, c.stages = v[4], c.maxSplitLen = v[5];
      } else {
        bad++;
      }
    }
    resetGraphs();
    return bad;
  }
  // The product of each weight kind: rows, depth, output mode (what the autotune times).
  using CudaBackend::gemmShape;
  // The per-stage GPU time profile (CudaBackend::setProfile).
  using CudaBackend::profile;
  using CudaBackend::setProfile;
};

}  // namespace ms::cuda
