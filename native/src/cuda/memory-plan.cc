// CudaBackend's memory plan, made once at finalize (vLLM / SGLang do the same at start):
//   1. the step arena for the largest step the caps allow (activations for maxBatchTokens tokens,
//      logits and sampling scratch for a head chunk, decode split partials for maxNumSeqs
//      sequences at the longest context, packed metadata), its pinned host staging, and the
//      sampling extras (extras-pack.h: a penalty-state row of vocab int32 per slot, maxNumSeqs
//      slots — 128 MiB at a 128k vocabulary and 256 sequences —, per-row inputs, bias windows,
//      mask rows, logprob outputs); counted in arenaBytes;
//   2. autotune (times products in the arena; the cuBLASLt workspace, split-K partials included,
//      is the fixed one Gemm allocated at construction, already counted as held);
//   3. every decode CUDA graph (batch bucket up to maxNumSeqs, context bucket up to the model's
//      max positions; logits, sampling, sampling with extras), captured and uploaded; their device
//      bytes are measured with cudaMemGetInfo;
//   4. the KV pool: its fixed size, or (numPages 0, auto) what gpuMemoryUtilization of the
//      device's total leaves after everything this backend holds; a pool that does not fit is
//      refused with DEVICE_MEMORY and the numbers, never at a busy step;
//   5. the decode attention split plans are tuned over the pool's pages (attention-tune.cc: reads
//      only, in the arena's partials, which 1. sized for every candidate), then the graphs are
//      captured again over the real pool with them (cudaGraphExecUpdate: same executables).
#include <algorithm>
#include <climits>
#include <cstdio>

#include "check.h"
#include "cuda-backend.h"
#include "sampling.h"

namespace ms::cuda {
namespace {

constexpr size_t kMiB = size_t(1) << 20;
// Free device memory an auto pool leaves untouched (driver, cuBLASLt's lazily loaded kernels).
constexpr size_t kAutoReserveBytes = 512 * kMiB;

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MiB", double(bytes) / double(kMiB));
  return buf;
}

int ceilDiv(int64_t a, int64_t b) { return int((a + b - 1) / b); }

}  // namespace

void CudaBackend::planArena() {
  const int T = opts_.maxBatchTokens, S = plan_.maxNumSeqs, C = plan_.maxContext;
  // Graph buckets: every bucket up to the one holding min(maxNumSeqs, kMaxGraphBatch) sequences.
  maxGraphBatch_ = 0;
  for (int b : kGraphBuckets)
    if (maxGraphBatch_ < std::min(S, kMaxGraphBatch)) maxGraphBatch_ = b;
  maxGraphCtx_ = kMinGraphCtx;
  while (maxGraphCtx_ < std::min(C, kMaxGraphCtx)) maxGraphCtx_ *= 2;
  const int capTokens = std::max({T, maxGraphBatch_, kSkinnyMaxTokens});  // autotune runs 1..8 rows
  const int capRows = std::min(kHeadChunk, capTokens);
  // Decode split partials: planDecodeSplits gives maxSplits <= max(ceil(waves SMs / (n kvHeads)),
  // ceil(ctx / maxLen)) for n queries, so this bounds every eager step under any choice the
  // attention tuning may make (waves <= kMaxDecodeWaves, maxLen >= kDefaultSplitLen); graphs
  // exactly, for every candidate (longer splits only make fewer).
  size_t partial = 0;
  for (int n = 1; n <= S; n++) {
    const int splits = std::max(ceilDiv(int64_t(kMaxDecodeWaves) * numSms_, int64_t(n) * m_.kvHeads),
                                ceilDiv(C, kDefaultSplitLen));
    partial = std::max(partial, size_t(n) * m_.heads * splits * m_.headDim);
  }
  for (int b : kGraphBuckets) {
    if (b > maxGraphBatch_) break;
    for (int c = kMinGraphCtx; c <= maxGraphCtx_; c *= 2)
      for (int waves : kDecodeWaves) {
        int splitLen, maxSplits;
        planDecodeSplits(b, m_.kvHeads, c, numSms_, &splitLen, &maxSplits, waves);
        partial = std::max(partial, size_t(b) * m_.heads * maxSplits * m_.headDim);
      }
  }
  // Metadata of the largest eager step; page tables are packed tight (pages the context needs).
  const int ptCap = ceilDiv(C, kv_.pageSize);
  const MetaLayout meta = metaLayout(T, S, ptCap, T, S, T / kPrefillTileRows + S, S, T);
  allocArena(arena_, capTokens, capRows, partial, meta.total);
  MS_CUDA_CHECK(cudaMallocHost(&hostMeta_, meta.total * sizeof(int32_t)));
  stagingBytes_ = size_t(capRows) * m_.vocab * sizeof(float);
  MS_CUDA_CHECK(cudaMallocHost(&staging_, stagingBytes_));
  for (cudaEvent_t& e : evCopy_)
    if (!e) MS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  ExtrasCaps caps;
  caps.capRows = std::max(S, maxGraphBatch_);  // a graph packs its whole bucket (padding rows too)
  caps.vocab = m_.vocab;
  caps.numSlots = S;
  extras_.allocate(caps);
  ipc();  // the transfer stream and its events: a forwardWithSend creates nothing either
}

void CudaBackend::captureAllGraphs() {
  for (int b : kGraphBuckets) {
    if (b > maxGraphBatch_) break;
    for (int c = kMinGraphCtx; c <= maxGraphCtx_; c *= 2)
      for (int kind = 0; kind < 3; kind++) captureGraph(b, c, kind > 0, kind == 2);  // logits, tokens, tokens + extras
  }
  MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// Bytes an auto pool may take: gpuMemoryUtilization of the device's total, less what this backend
// already holds (measured since construction), within what is free less a reserve.
size_t CudaBackend::autoKvBytes(size_t freeNow) const {
  const double budget = opts_.gpuMemoryUtilization * double(plan_.deviceTotal);
  const double held = double(freeAtStart_ > freeNow ? freeAtStart_ - freeNow : 0);
  double bytes = std::min(budget - held, double(freeNow) - double(kAutoReserveBytes));
  return bytes > 0 ? size_t(bytes) : 0;
}

std::string CudaBackend::planNumbers(size_t kvBytes, size_t freeNow) const {
  return "weights " + mib(plan_.weightsBytes) + ", step arena " + mib(plan_.arenaBytes) + ", CUDA graphs " +
         mib(plan_.graphBytes) + ", KV " + mib(kvBytes) + " vs " + mib(freeNow) + " free of " + mib(plan_.deviceTotal) +
         " (gpuMemoryUtilization " + std::to_string(opts_.gpuMemoryUtilization).substr(0, 4) + ", maxBatchTokens " +
         std::to_string(opts_.maxBatchTokens) + ", maxNumSeqs " + std::to_string(plan_.maxNumSeqs) + ")";
}

void CudaBackend::planMemory() {
  size_t freeBytes = 0, total = 0;
  plan_.weightsBytes = weights_->bytes();
  MS_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &total));
  const size_t beforeArena = freeBytes;
  planArena();
  MS_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &total));
  plan_.arenaBytes = beforeArena > freeBytes ? beforeArena - freeBytes : 0;
  autotune();
  // Graphs bake the pool's address in: without a pool yet they are captured over a stand-in
  // address (never launched), measured, then captured again over the real pool.
  const bool hadPool = pool_ != nullptr;
  if (!hadPool) pool_ = reinterpret_cast<bf16*>(arena_.mem);
  try {
    MS_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &total));
    const size_t beforeGraphs = freeBytes;
    if (graphsEnabled_) captureAllGraphs();
    MS_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &total));
    plan_.graphBytes = beforeGraphs > freeBytes ? beforeGraphs - freeBytes : 0;
    plan_.numGraphs = int(graphs_.size());
  } catch (...) {
    if (!hadPool) pool_ = nullptr;  // the stand-in is the arena's: never freed as a pool
    throw;
  }
  if (!hadPool) {
    pool_ = nullptr;
    if (kv_.numPages == 0) {
      const size_t bytes = autoKvBytes(freeBytes);
      const int64_t pages = int64_t(bytes / pageBytes_) - 1;  // less the graphs' padding page
      const int need = ceilDiv(opts_.maxBatchTokens, kv_.pageSize);
      if (pages < need)
        throw DeviceMemoryError("kvPages auto: the device has room for " + std::to_string(std::max<int64_t>(pages, 0)) +
                                " KV pages, fewer than one step of maxBatchTokens needs (" + std::to_string(need) +
                                "): " + planNumbers(bytes, freeBytes));
      kv_.numPages = int(std::min<int64_t>(pages, INT_MAX / 2));
    }
    const size_t kvBytes = size_t(kv_.numPages + 1) * pageBytes_;
    if (kvBytes > freeBytes)
      throw DeviceMemoryError("kvPages " + std::to_string(kv_.numPages) + " do not fit: " + planNumbers(kvBytes, freeBytes));
    ensureKvPool();
  }
  tuneDecodeAttention();
  if (graphsEnabled_) captureAllGraphs();
  MS_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &total));
  plan_.numPages = kv_.numPages;
  plan_.kvTokens = int64_t(kv_.numPages) * kv_.pageSize;
  plan_.maxRequestTokens = std::min<int64_t>(plan_.maxContext, plan_.kvTokens);
  plan_.kvBytes = size_t(kv_.numPages + 1) * pageBytes_;
  plan_.deviceFree = freeBytes;
}

}  // namespace ms::cuda
