// The one native interface. Every backend (cpu/, cuda/) implements `Backend`; addon.cc is the
// thin N-API boundary over it. No scheduling or caching policy lives in C++: the TypeScript
// engine decides which tokens run and which pages they use.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ms {

// Status codes mirror actors/errors.ts codes where they cross the boundary.
// MASK_TIMEOUT: a step's late masks (MaskGate) never came; OVER_PLAN: a step larger than the memory plan (BackendOptions caps); DEVICE_MEMORY: the plan does
// not fit the device (weights + arena + KV bytes vs what it has), refused at construction/finalize.
enum class Code : int {
  OK = 0, BAD_ARGUMENT = 1, BAD_CHECKPOINT = 2, OUT_OF_MEMORY = 3, NATIVE_ERROR = 4, NO_DEVICE = 5,
  OVER_PLAN = 6, DEVICE_MEMORY = 7, MASK_TIMEOUT = 8
};

struct Status {
  Code code = Code::OK;
  std::string message;
  bool ok() const { return code == Code::OK; }
  static Status Ok() { return {}; }
  static Status Error(Code c, std::string m) { return {c, std::move(m)}; }
};

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Llama-3 architecture hyper-parameters (Hugging Face LlamaConfig semantics), with the two
// differences of the other families (native/model-families.ts): Qwen2's q/k/v biases and Qwen3's
// per-head q/k RMSNorm before RoPE. Mistral is the Llama forward pass.
struct ModelConfig {
  int vocab = 0, hidden = 0, intermediate = 0, layers = 0, heads = 0, kvHeads = 0, headDim = 0;
  float rmsEps = 1e-5f;
  float ropeTheta = 500000.f;
  bool llama3Scaling = false;      // rope_type == "llama3"
  float ropeFactor = 8.f, lowFreqFactor = 1.f, highFreqFactor = 4.f;
  int originalMaxPositions = 8192;
  bool tiedEmbeddings = false;     // lm_head shares embed_tokens
  int maxPositions = 0;            // max_position_embeddings: the plan's context cap (0: none)
  bool qkvBias = false;            // self_attn.{q,k,v}_proj.bias (Qwen2)
  bool qkNorm = false;             // self_attn.{q,k}_norm.weight (headDim,), before RoPE (Qwen3)
};

// Paged KV pool. Layout is the backend's own; the transfer (wire) layout of one page is fixed:
// for layer in [0, layers): K (pageSize, kvHeads, headDim) then V (pageSize, kvHeads, headDim),
// in the backend's KV dtype (`kvDType()`), so one page is pageBytes() contiguous bytes on the wire.
// numPages 0 is `auto`: the CUDA backend sizes the pool at finalize from what
// BackendOptions::gpuMemoryUtilization leaves after weights, the step arena and CUDA graphs; the
// CPU backend takes kCpuAutoPages.
struct KvConfig {
  int numPages = 0;
  int pageSize = 16;
};
constexpr int kCpuAutoPages = 512;

// The memory plan, fixed once (CUDA: at finalize, CPU: at construction); memoryPlan() reports it.
// Every per-step buffer is sized for the largest step the caps allow, so a step allocates
// nothing; a step past the caps is refused with OVER_PLAN (common/step-plan.h).
struct MemoryPlan {
  int maxBatchTokens = 0, maxNumSeqs = 0;
  int maxContext = 0;         // longest sequence a step may attend (model max positions)
  int numPages = 0, pageSize = 0;
  int64_t kvTokens = 0;       // numPages * pageSize
  int64_t maxRequestTokens = 0;  // min(maxContext, kvTokens): the longest request the pool holds
  size_t weightsBytes = 0;    // device (CUDA) or host (CPU) bytes of the weights
  size_t arenaBytes = 0;      // step scratch: activations, logits, sampling, split partials, meta
  size_t graphBytes = 0;      // CUDA graphs (measured with cudaMemGetInfo); 0 on CPU
  size_t kvBytes = 0;         // the page pool
  size_t deviceTotal = 0;     // cudaMemGetInfo total (CPU: 0)
  size_t deviceFree = 0;      // free after the pool was allocated (CPU: 0)
  int numGraphs = 0;          // decode CUDA graphs captured at start
  bool isHost = true;         // bytes are host memory (CPU backend)
};

// A ragged batch. Sequence s contributes seqLens[s] new tokens at positions
// [startPos[s], startPos[s] + seqLens[s]); KV for [0, startPos[s]) is already in its pages.
// pageTables is (numSeqs, maxPagesPerSeq) row-major; entries past a sequence's need are ignored.
// The backend writes the new tokens' K/V into their pages, then attends causally over [0, pos].
struct Batch {
  const int32_t* tokens = nullptr;      // (numTokens,) concatenated per sequence
  int numTokens = 0;
  int numSeqs = 0;
  const int32_t* seqLens = nullptr;     // (numSeqs,)
  const int32_t* startPos = nullptr;    // (numSeqs,)
  const int32_t* pageTables = nullptr;  // (numSeqs, maxPagesPerSeq)
  int maxPagesPerSeq = 0;
  bool allLogits = false;               // false: logits of each sequence's last token only
  // Sampling on the device (optional; the algorithm: common/sampling.h). With tokensOut set, the
  // backend samples one token per sequence from its last token's logits and writes tokensOut; the
  // logits go to the host only if logitsOut is non-null too. Needs allLogits == false.
  const float* temperature = nullptr;   // (numSeqs,) finite; <= 0: greedy
  const float* topP = nullptr;          // (numSeqs,) in (0, 1]
  const uint32_t* seed = nullptr;       // (numSeqs,)
  const uint32_t* step = nullptr;       // (numSeqs,) index of the token being generated
  int32_t* tokensOut = nullptr;         // (numSeqs,) sampled ids; null: no sampling
  // Per-request logit processing and logprobs (optional; common/logit-processing.h). Null: plain
  // temperature / top-p sampling as above.
  const struct SamplingExtras* extras = nullptr;
  // Prompt logprobs (optional, with tokensOut): logits of the tokens that ask for them, and only
  // those, are computed besides the sampled rows' (struct PromptLogprobs).
  const struct PromptLogprobs* promptLogprobs = nullptr;
  // Masks supplied late (optional, with tokensOut and extras whose allowedMask is null): the
  // backend runs the forward up to the logits, waits here, then samples with the masks it gets as
  // extras->allowedMask (class MaskGate).
  class MaskGate* maskGate = nullptr;
};

// The allowed masks of a step submitted before they existed (structured outputs: the grammar
// computes them while the forward runs, as vLLM and SGLang do; the mask is needed only at
// sampling). The addon opens the gate from the JS thread (addon-gate.h).
class MaskGate {
 public:
  virtual ~MaskGate() = default;
  // Called once by the backend, on its thread, between the logits and the sampling; blocks until
  // the gate opens. *masks: (numSeqs, ceil(vocab / 32)) rows, valid until the forward returns, or
  // null: no masks (rows are sampled unmasked; the caller discards them). MASK_TIMEOUT when the
  // gate is not opened in time, NATIVE_ERROR when it is cancelled (the backend closes).
  virtual Status wait(const uint32_t** masks) = 0;
};

// Most top logprobs a row may ask for (OpenAI's chat limit; vLLM allows 20 for completions too).
constexpr int kMaxLogprobs = 20;

// The OpenAI / vLLM sampling parameters beyond temperature and top-p, one entry per sequence of
// the batch, applied before sampling in the order of common/logit-processing.h. Penalties need
// each request's token counts: the backend keeps them per `slot` (one per live request, chosen by
// the engine, distinct within a batch), rebuilt from `hist*` on a row with reset[s] = 1 (first
// sample of a request, or after a migration) and updated with each token the backend samples, so
// nothing goes back to the host per token.
struct SamplingExtras {
  const int32_t* topK = nullptr;              // (numSeqs,) 0: off
  const float* minP = nullptr;                // (numSeqs,) in [0, 1]; 0: off
  const float* repetitionPenalty = nullptr;   // (numSeqs,) > 0; 1: off (prompt and output tokens)
  const float* presencePenalty = nullptr;     // (numSeqs,) 0: off (output tokens)
  const float* frequencyPenalty = nullptr;    // (numSeqs,) 0: off (output tokens)
  const int32_t* slot = nullptr;              // (numSeqs,) penalty-state slot; -1: no state (no penalties)
  const uint8_t* reset = nullptr;             // (numSeqs,) 1: rebuild the slot from the row's history
  const int32_t* histOffsets = nullptr;       // (numSeqs + 1,) CSR into histTokens (only reset rows read it)
  const int32_t* histTokens = nullptr;        // prompt + output so far of each reset row
  const int32_t* histNumOutput = nullptr;     // (numSeqs,) the last histNumOutput[s] history tokens are output
  const int32_t* biasOffsets = nullptr;       // (numSeqs + 1,) CSR into biasTokens / biasValues
  const int32_t* biasTokens = nullptr;        // additive logit bias (logit_bias; -inf bans: min_tokens)
  const float* biasValues = nullptr;
  // Grammar hook (structured outputs): (numSeqs, maskWords) bitmask, bit i of row s clear bans
  // token i (logit -inf) before anything else; null: every token allowed. Not produced yet.
  const uint32_t* allowedMask = nullptr;
  int maskWords = 0;
  const int32_t* numLogprobs = nullptr;       // (numSeqs,) -1: no logprobs; else top entries in [0, kMaxLogprobs]
  float* logprobsOut = nullptr;               // (numSeqs, 1 + kMaxLogprobs): the sampled token's, then the top ones
  int32_t* topIdsOut = nullptr;               // (numSeqs, kMaxLogprobs) ids of the top entries, best first
};

// Prompt logprobs (completions' echo with logprobs, vLLM's prompt_logprobs): token t of the batch
// with targets[t] >= 0 gets, from its own logits (raw: no logit processing, temperature 1), the
// logprob of targets[t] (the next prompt token) and its sequence's numTop top entries, as
// rowLogprobs (common/logit-processing.h) computes them. Rows with target -1 are neither computed
// nor written.
struct PromptLogprobs {
  const int32_t* numTop = nullptr;   // (numSeqs,) top entries in [0, kMaxLogprobs]
  const int32_t* targets = nullptr;  // (numTokens,) the id whose logprob token t's logits give; -1: none
  float* logprobsOut = nullptr;      // (numTokens, 1 + kMaxLogprobs): the target's, then the top ones
  int32_t* topIdsOut = nullptr;      // (numTokens, kMaxLogprobs) ids of the top entries, best first
};

// A layer-by-layer send carried by forwardWithSend: after layer L's compute, layer L's slice of
// each srcPages[i] (this pool) is copied into dstPages[i] of peer pool `peerId` (openPeerPool).
// peerIds, when set, names the peer of each page pair (one forward may send to several peers).
struct LayerSend {
  int peerId = -1;
  const int32_t* srcPages = nullptr;
  const int32_t* dstPages = nullptr;
  int n = 0;  // 0: no send (the forward is timed the same way)
  const int32_t* peerIds = nullptr;  // (n,) or null: every pair goes to peerId
};

// Bytes of a CUDA IPC memory handle (cudaIpcMemHandle_t).
constexpr int kIpcHandleBytes = 64;
// Bytes of an NVSHMEM unique id (nvshmemx_uniqueid_t), the bootstrap token of one job.
constexpr int kNvshmemUidBytes = 128;

// This process's place in an NVSHMEM job (joinNvshmem).
struct NvshmemInfo {
  int pe = -1, npes = 0;
  int initStatus = 0;    // nvshmemx_init_status(): 3 = limited MPG (several PEs on one GPU)
  double initMs = 0;     // time spent in the collective init
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Hands rows [rowBegin, rowBegin + numBytes / rowBytes) of one checkpoint tensor (Hugging Face
  // name and [out, in] shape; a 1-D tensor's rows are its elements) to the backend, which converts
  // them to its compute dtype; a tensor is complete once all its rows arrived, in any order and
  // any number of parts (the loader streams large tensors through fixed staging buffers). Unknown
  // names, wrong shapes, a part that is not whole rows or runs past the tensor, and rows given
  // twice are BAD_CHECKPOINT.
  virtual Status loadTensorRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                int64_t rowBegin, const void* data, size_t numBytes) = 0;
  // The whole tensor at once.
  Status loadTensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                    size_t numBytes) {
    return loadTensorRows(name, dtype, shape, 0, data, numBytes);
  }
  // Fills every weight with seeded random values (presets); N(0, std) for matrices and 1 + N(0, 0.2·std/0.08)
  // for norm weights, the same recipe as the fixtures. Deterministic for a seed on one backend.
  virtual Status randomInit(uint64_t seed, float std) = 0;
  // Checks every tensor is present; after this, forward may run. Names the first missing tensor.
  virtual Status finalize() = 0;
  // logitsOut: (numSeqs, vocab) or, with allLogits, (numTokens, vocab), float32; may be null when
  // batch.tokensOut is set (sampling). Called on a worker thread; calls are serialised by the
  // addon (one in flight per backend).
  virtual Status forward(const Batch& batch, float* logitsOut) = 0;
  virtual DType kvDType() const = 0;
  virtual size_t pageBytes() const = 0;  // one page across all layers, wire layout
  // Gathers pages into (n, pageBytes) wire layout / scatters them back.
  virtual Status readPages(const int32_t* pageIds, int n, uint8_t* out) = 0;
  virtual Status writePages(const int32_t* pageIds, int n, const uint8_t* in) = 0;
  virtual std::string deviceName() const = 0;
  // The plan (complete after finalize; numPages may be 0 = auto until then on CUDA).
  virtual MemoryPlan memoryPlan() const = 0;
  // The device's free and total memory now (cudaMemGetInfo; tests check steps allocate nothing).
  virtual Status deviceMemory(size_t* freeBytes, size_t* totalBytes) { return unsupported("deviceMemory"); }

  // ---- KV transfer between pools on one GPU (CUDA IPC); other backends answer unsupported ----
  // The pool's IPC handle (kIpcHandleBytes) and the device's UUID (hex), so a peer can tell it
  // shares the GPU.
  virtual Status exportKvPool(uint8_t* handle, std::string* deviceUuid) { return unsupported("exportKvPool"); }
  // Opens a peer's pool (cached per handle; closed with this backend). peerNumPages bounds its ids.
  virtual Status openPeerPool(const uint8_t* handle, int peerNumPages, int* peerId) { return unsupported("openPeerPool"); }
  // Copies whole pages between this pool and a peer's (toPeer: local -> peer, else peer -> local)
  // on the transfer stream and waits for them; peerId -1 copies within this pool. gpuMs: copy time.
  virtual Status copyPeerPages(int peerId, const int32_t* localPages, const int32_t* peerPages, int n, bool toPeer,
                               float* gpuMs) {
    return unsupported("copyPeerPages");
  }
  // forward + a layer-by-layer send that overlaps the later layers' compute; returns once both are
  // done. timeline: per layer {compute done, copy start, copy end} ms since the forward began, then
  // {compute end, send end} (3 * layers + 2 values).
  virtual Status forwardWithSend(const Batch& batch, float* logitsOut, const LayerSend& send,
                                 std::vector<float>* timeline) {
    return unsupported("forwardWithSend");
  }

  // ---- NVSHMEM (CUDA builds where NVSHMEM exists); others answer unsupported ----
  // Joins job `uid` as PE `rank` of `nranks` (collective: every member calls it; blocks until all
  // have) and places the KV pool in the symmetric heap (nvshmem_malloc, collective: members must
  // have equal pools). Only before finalize, once per process; the job lives until the process exits.
  virtual Status joinNvshmem(const uint8_t* uid, int rank, int nranks, NvshmemInfo* info) { return unsupported("joinNvshmem"); }
  // The pool of PE `pe` of this job as a peer (copyPeerPages, LayerSend). direct: reached by
  // load/store through nvshmem_ptr (same GPU or NVLink), else by nvshmemx_putmem_on_stream.
  virtual Status openNvshmemPeer(int pe, int* peerId, bool* direct) { return unsupported("openNvshmemPeer"); }

 protected:
  Status unsupported(const char* what) const {
    return Status::Error(Code::NO_DEVICE, std::string(what) + " is not supported by " + deviceName());
  }
};

// CPU kernel sets (cpu/kernels.h): kAuto picks the widest this CPU runs.
enum class CpuIsa : int { kAuto = 0, kBase = 1, kAvx2 = 2, kAvx512 = 3 };

// Everything a backend may be told besides the model and the pool: filled once, by the addon from
// what TypeScript passes (common/env.ts is where the defaults can be overridden), before the backend
// is built, and never read from the environment. A backend keeps its copy for its whole life, so
// a captured CUDA graph and an eager step always run the same kernels. Shown in the engine status.
struct BackendOptions {
  std::string device = "cpu";  // "cpu" or "cuda:N"
  int numThreads = 0;          // cpu: 0 = hardware concurrency
  int maxBatchTokens = 8192;   // tokens per step the plan holds
  int maxNumSeqs = 256;        // sequences per step the plan holds
  double gpuMemoryUtilization = 0.9;  // cuda, kvPages auto: share of the device's total memory this engine may use
  CpuIsa cpuIsa = CpuIsa::kAuto;  // cpu: kernel set; a set this CPU lacks falls back to a narrower one
  bool cudaGraphs = true;      // cuda: replay captured graphs for pure-decode steps
  bool pdl = true;             // cuda: programmatic dependent launch between kernels
  int decodeClusterCap = 16;   // cuda: largest thread-block cluster of decode attention; < 8 = fixed splits
  bool nvshmemPut = false;     // cuda: NVSHMEM peers by one-sided puts even where a direct pointer exists
};

// A fresh NVSHMEM unique id (kNvshmemUidBytes) for a new job; the calling process must join it
// as rank 0 (the id names a bootstrap socket of this process). NO_DEVICE without NVSHMEM.
Status nvshmemUniqueId(uint8_t* out);

// Page-locked host memory for the loader's staging buffers (copies from it to the device are DMA
// at the link's rate, no driver bounce): cudaHostAlloc (portable) with `device` current on the
// calling thread, so no other GPU gets a context; null when that fails (the caller then uses
// ordinary memory). Defined where built with CUDA; freed with freePinnedHost.
void* allocPinnedHost(size_t bytes, int device);
void freePinnedHost(void* p);

std::unique_ptr<Backend> makeCpuBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, Status* st);
// Defined only when built with CUDA (MS_WITH_CUDA); otherwise the addon answers NO_DEVICE.
std::unique_ptr<Backend> makeCudaBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, Status* st);

}  // namespace ms
