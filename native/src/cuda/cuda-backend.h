// The CUDA backend: Hugging Face LlamaForCausalLM in bf16 on one GPU over a paged bf16 KV pool.
// Implements ms::Backend and nothing more in public; the engine bench's knobs and read-outs
// (timing, graphs on/off, stage profile, autotune figures) are in bench/gpu/bench-backend.h, a
// subclass over the protected state below.
//
// Per forward: pack the batch's metadata (one host->device copy), embed, then per layer
//   RMSNorm -> fused QKV GEMM -> RoPE + KV append -> paged attention -> O GEMM (+= residual)
//   -> RMSNorm -> fused gate|up GEMM -> SiLU.mul -> down GEMM (+= residual),
// final RMSNorm on the rows that need logits, LM head (f32), then either the logits to the host
// or, with Batch::tokensOut, the sampler (sampling.cu) and numSeqs token ids to the host; with
// Batch::extras, the logit processing and logprobs before it (logit-processing.h, extras-pack.h).
// Pure-decode batches replay a CUDA graph captured per (batch bucket, context bucket, sampling,
// extras): a batch without extras replays a graph without their kernels.
//
// Memory is planned once (memory-plan.cc): at finalize the step arena is sized for the largest
// step the caps allow (BackendOptions maxBatchTokens / maxNumSeqs, the model's max positions),
// every decode graph is captured, then the KV pool takes its fixed size or (numPages 0, auto)
// what gpuMemoryUtilization leaves. Nothing is allocated on the device in forward; a step past
// the plan is refused with OVER_PLAN, a plan the device cannot hold with DEVICE_MEMORY.
#pragma once
#include <algorithm>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../backend.h"
#include "check.h"
#include "extras-pack.h"
#include "forward-plan.h"
#include "gemm.h"
#include "kernels.h"
#include "kv-ipc.h"
#include "pdl-scope.h"
#include "weights.h"

namespace ms::cuda {

// Activations and scratch for up to capTokens tokens (shape comments per token). One arena,
// allocated at finalize, serves eager forwards and the captured graphs (one stream: never both).
struct Arena {
  int capTokens = 0, capRows = 0;
  size_t capPartial = 0, capMeta = 0;
  float* x = nullptr;       // (capTokens, hidden) f32 residual stream
  bf16* xn = nullptr;       // (capTokens, hidden) normed block input
  bf16* qkv = nullptr;      // (capTokens, qDim + 2 * kvDim)
  bf16* attn = nullptr;     // (capTokens, qDim)
  bf16* gu = nullptr;       // (capTokens, 2 * intermediate)
  bf16* act = nullptr;      // (capTokens, intermediate)
  float* logits = nullptr;  // (capRows, vocab) f32
  float* partO = nullptr;   // (capPartial,) decode split partials
  float* partML = nullptr;  // (capPartial / headDim * 2,)
  int32_t* meta = nullptr;  // (capMeta,) packed batch metadata
  int32_t* counters = nullptr;  // (capTokens, kvHeads) decode split counters, zero between launches
  float* argmaxV = nullptr;     // (capRows, kMaxArgmaxParts) sampling's argmax partials
  int32_t* argmaxI = nullptr;   // (capRows, kMaxArgmaxParts)
  void* mem = nullptr;
};

enum WeightKind { kQkv = 0, kO, kGateUp, kDown, kHead, kNumWeightKinds };

// Pure-decode batches of up to kMaxGraphBatch sequences and kMaxGraphCtx keys replay a graph
// captured for (the next bucket >= batch, the next power of two >= context, at least kMinGraphCtx).
constexpr int kMaxGraphBatch = 256;
constexpr int kMinGraphCtx = 256;
constexpr int kMaxGraphCtx = 16384;
constexpr int kGraphBuckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256};
constexpr int kNumGraphBuckets = int(sizeof kGraphBuckets / sizeof kGraphBuckets[0]);
constexpr int kHeadChunk = 256;  // LM-head rows per pass (bounds the f32 logits buffer)

// How decode attention splits its work at one (batch bucket, context bucket) (attention-tune.cc
// times the candidates at start and keeps the fastest; the default is the plan before tuning
// existed). Context buckets 256, 512, 1024 and 2048 are tuned; longer contexts use 2048's.
constexpr int kNumTunedCtx = 4;
struct DecodeChoice {
  int waves = kDefaultDecodeWaves;  // planDecodeSplits' blocks per SM
  bool evenSplits = false;          // DecodeAttentionArgs::evenSplits
  int stages = 2;                   // DecodeAttentionArgs::stages
  int maxSplitLen = kDefaultSplitLen;  // planDecodeSplits' maxLen (longer splits: fewer blocks)
  float ms = 0.f, defaultMs = 0.f;  // tuning: this choice's time and the default's (0: not tuned)
};
// The split plan of one decode attention launch (DecodeAttentionArgs' fields of the same names).
struct DecodeSplits {
  int splitLen = 64, maxSplits = 1;
  bool evenSplits = false;
  int stages = 2;
};

// The plan does not fit the device (Code::DEVICE_MEMORY); the message has the numbers.
class DeviceMemoryError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class CudaBackend : public Backend {
 public:
  CudaBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, int device);
  ~CudaBackend() override;

  Status loadTensorRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape, int64_t rowBegin,
                        const void* data, size_t numBytes) override;
  Status randomInit(uint64_t seed, float std) override;
  Status finalize() override;
  Status forward(const Batch& b, float* logitsOut) override;
  DType kvDType() const override { return DType::BF16; }
  size_t pageBytes() const override { return pageBytes_; }
  Status readPages(const int32_t* pageIds, int n, uint8_t* out) override;
  Status writePages(const int32_t* pageIds, int n, const uint8_t* in) override;
  std::string deviceName() const override { return deviceName_; }
  MemoryPlan memoryPlan() const override { return plan_; }
  Status deviceMemory(size_t* freeBytes, size_t* totalBytes) override {
    return guarded([&] {
      MS_CUDA_CHECK(cudaMemGetInfo(freeBytes, totalBytes));
      return Status::Ok();
    });
  }

  // ---- KV transfer over CUDA IPC (kv-ipc.cc) ----
  Status exportKvPool(uint8_t* handle, std::string* deviceUuid) override;
  Status openPeerPool(const uint8_t* handle, int peerNumPages, int* peerId) override;
  Status copyPeerPages(int peerId, const int32_t* localPages, const int32_t* peerPages, int n, bool toPeer,
                       float* gpuMs) override;
  Status forwardWithSend(const Batch& b, float* logitsOut, const LayerSend& send,
                         std::vector<float>* timeline) override;
  // ---- NVSHMEM (kv-nvshmem.cc) ----
  Status joinNvshmem(const uint8_t* uid, int rank, int nranks, NvshmemInfo* info) override;
  Status openNvshmemPeer(int pe, int* peerId, bool* direct) override;

 protected:
  struct Graph {
    MetaLayout lay;
    cudaGraphExec_t exec = nullptr;
    int32_t* hostMeta = nullptr;  // pinned
    int32_t* devMeta = nullptr;
  };
  template <class F>
  Status guarded(F&& f);
  // model-forward.cc
  void linear(int kind, const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s);
  // T tokens of a weight kind run on the skinny kernel (the autotune's choice for 1..8 tokens),
  // else on cuBLASLt; only the skinny kernel offers the fused gate/up epilogue (SiluPairBf16).
  bool usesSkinny(int kind, int T) const;
  void runLayers(const DeviceMeta& dm, Arena& a, const DecodeSplits& ds, cudaStream_t s);
  // Layer l's part of the page pool, and its tensor map (null where no kernel takes one).
  KvLayer layerKv(int l) const;
  const KvTensorMap* kvMap(int l);
  // The split plan for numQueries decode queries of at most maxCtx keys: the tuned choice of the
  // batch bucket that holds numQueries and the context bucket that holds maxCtx (2048's for longer
  // contexts; the default past the largest batch bucket).
  DecodeSplits decodeSplits(int numQueries, int maxCtx) const;
  void runHead(const int32_t* rows, int n, Arena& a, cudaStream_t s);
  // The checks of forward and forwardWithSend: the plan, the sampling inputs and their extras.
  Status checkForward(const Batch& b, const float* logitsOut) const;
  void forwardEager(const Batch& b, float* out);
  bool graphEligible(const Batch& b) const;
  void forwardGraph(const Batch& b, float* out);
  // A gated step (Batch::maskGate) on a graph: the bucket's logits graph (layers and head), then,
  // once the masks came, the extras and the sampler eagerly over the step's rows.
  void forwardGraphGated(const Batch& b, const Graph& g, int bucket);
  // Waits at the step's mask gate (the forward queued so far keeps the device busy meanwhile),
  // then packs the step's extras with the masks it got (rows [0, numRows)).
  void packGatedExtras(const Batch& b, int numRows);
  // Captures (or, when it exists, re-captures into the same executable) the graph of a key.
  void captureGraph(int bucket, int ctxBucket, bool sampling, bool extras);
  // Rows [row0, row0 + n) of the step, their logits in logits (n, vocab): the extras' logit
  // processing and logprobs (isGraph: every kernel, the first bias window; eager: what the packed
  // batch uses, every window) ...
  void processExtras(float* logits, int row0, int n, const int32_t* params, int32_t* tokens, bool isGraph);
  // ... then the sampler (with the extras: top_k, min_p, then the penalty counts and logprobs).
  void sampleRows(Arena& a, int row0, int n, const int32_t* params, int32_t* tokens, bool extras);
  void copyLogits(const float* dev, int rows, float* out);
  void mark(int stage, cudaStream_t s);
  void collectProfile();
  // [default: off] eager forwards record an event after every stage; profile() sums the GPU time
  // per stage name over the profiled calls (graphs are bypassed while on). Benchmarks.
  void setProfile(bool on);
  std::vector<std::pair<std::string, double>> profile() const;
  void autotune();
  // The product of weight kind `kind` (WeightKind order): output rows O, depth K, output mode
  // through cuBLASLt (autotune.cc).
  struct GemmShape {
    int O, K;
    OutMode mode;
  };
  GemmShape gemmShape(int kind) const;
  // attention-tune.cc: picks decodeChoice_ for the batch buckets from kMinTunedDecodeBatch up and
  // the context buckets up to kMinGraphCtx << (kNumTunedCtx - 1), over the KV pool (after it
  // exists, before the final graph capture).
  void tuneDecodeAttention();
  // The start-time tunings' timer: the median of `reps` runs of fn on stream_, each between the
  // backend's two events, after `warm` untimed ones.
  template <class F>
  float medianEventMs(F&& fn, int warm, int reps) {
    for (int i = 0; i < warm; i++) fn();
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
      MS_CUDA_CHECK(cudaEventRecord(evStart_, stream_));
      fn();
      MS_CUDA_CHECK(cudaEventRecord(evStop_, stream_));
      MS_CUDA_CHECK(cudaEventSynchronize(evStop_));
      float ms;
      MS_CUDA_CHECK(cudaEventElapsedTime(&ms, evStart_, evStop_));
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
  // memory-plan.cc
  void planMemory();
  void planArena();
  void captureAllGraphs();
  size_t autoKvBytes(size_t freeNow) const;
  std::string planNumbers(size_t kvBytes, size_t freeNow) const;
  // cuda-backend.cc
  void allocArena(Arena& a, int capTokens, int capRows, size_t capPartial, size_t capMeta);
  void freeArena(Arena& a);
  void clearGraphs();
  // kv-ipc.cc: called by runLayers after each layer; issues that layer's send, if one is active.
  void afterLayer(int layer, cudaStream_t s);
  KvIpc& ipc();
  Status checkPairs(const int32_t* localPages, const int32_t* peerPages, const int32_t* peerIds, int peer, int n,
                    const char* what);
  bool issueRun(const PageRun& r, size_t off, size_t width, bool toPeer);
  // Allocates the page pool (cudaMalloc) unless joinNvshmem placed it in the symmetric heap.
  void ensureKvPool();

  ModelConfig m_;
  KvConfig kv_;
  int device_ = 0;
  int numSms_ = 0;
  std::string deviceName_;
  size_t pageBytes_ = 0;
  int64_t pageElems_ = 0;
  bf16* pool_ = nullptr;      // (numPages + 1, pageElems): the last page is the graphs' padding page;
                              // allocated by finalize (ensureKvPool) or joinNvshmem
  float* invFreq_ = nullptr;  // (headDim / 2,)
  // The attention kernels' tensor maps (prefill on wgmma, decode's fixed splits), one per layer, for
  // the pool at kvMapsPool_ (kvMap encodes them again when the pool moves: the memory plan's
  // stand-in, then the real pool); empty where neither kernel takes them.
  std::vector<KvTensorMap> kvMaps_;
  const bf16* kvMapsPool_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t evStart_ = nullptr, evStop_ = nullptr;
  std::unique_ptr<DeviceWeights> weights_;
  std::unique_ptr<Gemm> gemm_;
  bool finalized_ = false;
  bool useSkinny_[kNumWeightKinds][kSkinnyMaxTokens + 1] = {};
  float gemmMs_[kNumWeightKinds][kSkinnyMaxTokens + 1][2] = {};
  Gemm::Choice ltChoice_[kNumWeightKinds][kNumGraphBuckets] = {};  // cuBLASLt per graph bucket (autotune)
  struct PrefillTune {
    int numTokens = 0;
    Gemm::Choice choice[kNumWeightKinds] = {};  // the LM head's stays empty
  };
  std::vector<PrefillTune> prefillTune_;  // cuBLASLt at prefill-sized steps (autotune)
  DecodeChoice decodeChoice_[kNumGraphBuckets][kNumTunedCtx];       // per graph batch and context bucket
  Arena arena_;                  // the planned step arena (eager forwards and graphs)
  int32_t* hostMeta_ = nullptr;  // pinned, (arena_.capMeta,) eager metadata staging
  float* staging_ = nullptr;     // pinned, (arena_.capRows, vocab) logits staging
  size_t stagingBytes_ = 0;
  MemoryPlan plan_;
  size_t freeAtStart_ = 0;       // cudaMemGetInfo free when the backend was created
  int maxGraphBatch_ = 0;        // largest graph bucket captured (0: none)
  int maxGraphCtx_ = 0;          // largest context bucket captured
  static constexpr int kCopyParts = 4;
  cudaEvent_t evCopy_[kCopyParts] = {};
  std::map<std::tuple<int, int, bool, bool>, Graph> graphs_;  // (batch bucket, context bucket, sampling, extras)
  DeviceExtras extras_;          // sampling extras: penalty slots, per-row inputs, logprob outputs (planned)
  const BackendOptions opts_;  // fixed at construction
  bool graphsEnabled_ = true;    // BackendOptions::cudaGraphs; benchmarks switch it
  bool timing_ = false;          // time each forward's GPU work with events (lastGpuMs_); benchmarks
  double lastGpuMs_ = 0;
  bool lastUsedGraph_ = false;
  bool profiling_ = false;
  std::vector<cudaEvent_t> profEvents_;  // pool
  std::vector<int> profStages_;          // stage of each recorded event, in order
  std::vector<double> profMs_;           // per stage
  std::unique_ptr<KvIpc> ipc_;           // created on first use
  bool sendUsedPuts_ = false;            // the send in flight issued NVSHMEM puts (quiet at its end)
  bool poolIsSymmetric_ = false;         // pool_ from nvshmem_malloc (never freed: collective)
};

// Checks a CUDA backend's configuration (device 'cuda:N' present, supported model shape, plan
// options): Ok with *device set, else the typed error.
Status checkCudaBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, int* device);

// Builds a B (CudaBackend, or the engine bench's subclass) once checkCudaBackend passed; the
// constructor's failures come back as a Status (null result).
template <class B>
std::unique_ptr<B> buildCudaBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, Status* st) {
  int device = 0;
  *st = checkCudaBackend(m, kv, o, &device);
  if (!st->ok()) return nullptr;
  try {
    return std::make_unique<B>(m, kv, o, device);
  } catch (const DeviceMemoryError& err) {
    *st = Status::Error(Code::DEVICE_MEMORY, err.what());
  } catch (const CudaError& err) {
    *st = Status::Error(err.isOom() ? Code::OUT_OF_MEMORY : Code::NATIVE_ERROR, err.what());
  } catch (const std::bad_alloc&) {
    *st = Status::Error(Code::OUT_OF_MEMORY, "out of host memory");
  }
  return nullptr;
}

// Runs f with this backend's device current (calls arrive on the addon's worker thread) and
// turns exceptions into a Status.
template <class F>
Status CudaBackend::guarded(F&& f) {
  try {
    MS_CUDA_CHECK(cudaSetDevice(device_));
    PdlScope pdl(opts_.pdl);
    return f();
  } catch (const DeviceMemoryError& e) {
    return Status::Error(Code::DEVICE_MEMORY, e.what());
  } catch (const StatusError& e) {
    return Status::Error(e.code(), e.what());
  } catch (const CudaError& e) {
    return Status::Error(e.isOom() ? Code::OUT_OF_MEMORY : Code::NATIVE_ERROR, e.what());
  } catch (const std::bad_alloc&) {
    return Status::Error(Code::OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return Status::Error(Code::NATIVE_ERROR, e.what());
  }
}

}  // namespace ms::cuda
