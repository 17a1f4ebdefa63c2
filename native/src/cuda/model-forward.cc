// CudaBackend's forward pass: the layer loop, eager and graph paths, logits to the host, and the
// choice between the skinny kernel and cuBLASLt for few-token products (measured in autotune.cc).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "../common/logit-processing.h"
#include "../common/sampling.h"
#include "../common/step-plan.h"
#include "check.h"
#include "cuda-backend.h"
#include "logit-processing.h"
#include "sampling.h"

namespace ms::cuda {
namespace {

constexpr size_t kParallelCopyBytes = size_t(4) << 20;  // logits at least this big are copied out in parts

enum Stage { kEmbed, kNorm, kQkvGemm, kRope, kAttention, kOGemm, kGateUpGemm, kSilu, kDownGemm, kHeadStage, kNumStages };
const char* const kStageNames[kNumStages] = {"embed", "rmsnorm", "qkv gemm", "rope+append", "attention",
                                             "o gemm", "gate_up gemm", "silu_mul", "down gemm", "head"};

int graphBucket(int n) {
  for (int b : kGraphBuckets)
    if (b >= n) return b;
  return -1;
}

int ctxBucket(int ctx) {
  int c = kMinGraphCtx;
  while (c < ctx) c *= 2;
  return c;
}

// Samples `rows` rows of logits (overwriting them, but for rows with logprobs) into tokens, with
// params from the metadata and extras (or null) from the extras buffer.
void launchSampler(const Arena& arena, int rows, int vocab, const int32_t* params, int32_t* tokens,
                   const int32_t* extras, cudaStream_t s) {
  SamplingArgs a;
  a.extras = extras;
  a.logits = arena.logits;
  a.partV = arena.argmaxV;
  a.partI = arena.argmaxI;
  a.vocab = vocab;
  a.rows = rows;
  a.params = params;
  a.tokens = tokens;
  sampleTokens(a, s);
}

}  // namespace

bool CudaBackend::usesSkinny(int kind, int T) const {
  return T >= 1 && T <= kSkinnyMaxTokens && useSkinny_[kind][T];
}

void CudaBackend::linear(int kind, const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode,
                         cudaStream_t s) {
  if (usesSkinny(kind, T))
    skinnyGemm(X, T, W, O, K, Y, mode, s);
  else
    gemm_->run(X, T, W, O, K, Y, mode, s);
}

DecodeSplits CudaBackend::decodeSplits(int numQueries, int maxCtx) const {
  DecodeChoice choice;
  int ci = 0;
  for (int c = kMinGraphCtx; c < maxCtx && ci < kNumTunedCtx - 1; c *= 2) ci++;
  for (int i = 0; i < kNumGraphBuckets; i++)
    if (kGraphBuckets[i] >= numQueries) {
      choice = decodeChoice_[i][ci];
      break;
    }
  DecodeSplits ds;
  planDecodeSplits(numQueries, m_.kvHeads, maxCtx, numSms_, &ds.splitLen, &ds.maxSplits, choice.waves,
                   choice.maxSplitLen);
  ds.evenSplits = choice.evenSplits;
  ds.stages = choice.stages;
  return ds;
}

KvLayer CudaBackend::layerKv(int l) const {
  KvLayer kv;
  kv.base = pool_ + int64_t(l) * 2 * kv_.pageSize * m_.kvHeads * m_.headDim;
  kv.pageStride = pageElems_;
  kv.pageSize = kv_.pageSize;
  kv.kvHeads = m_.kvHeads;
  kv.headDim = m_.headDim;
  kv.numPages = kv_.numPages > 0 ? kv_.numPages + 1 : 0;  // with the graphs' padding page
  return kv;
}

const KvTensorMap* CudaBackend::kvMap(int l) {
  if (kvMapsPool_ != pool_) {
    PrefillAttentionArgs p;
    p.kv = layerKv(0);
    p.heads = m_.heads;
    kvMaps_.clear();
    if (prefillAttentionWgmmaFits(p) || decodeAttentionTensorCopies(p.kv))
      for (int i = 0; i < m_.layers; i++) kvMaps_.push_back(kvTensorMap(layerKv(i)));
    kvMapsPool_ = pool_;
  }
  return kvMaps_.empty() ? nullptr : &kvMaps_[l];
}

void CudaBackend::runLayers(const DeviceMeta& dm, Arena& a, const DecodeSplits& ds, cudaStream_t s) {
  const int N = dm.lay.numTokens, H = m_.hidden, hd = m_.headDim, I = m_.intermediate;
  const int qDim = m_.heads * hd, kvDim = m_.kvHeads * hd, qkvDim = qDim + 2 * kvDim;
  const float scale = 1.f / std::sqrt(float(hd));
  embedGather(dm.tokens, N, weights_->embed, H, a.x, s);
  mark(kEmbed, s);
  // Pure-decode layers: RoPE and the KV append run inside the decode attention kernel (no
  // ropeAppend launch).
  const bool fuseRope = dm.lay.numTiles == 0 && dm.lay.numDecode > 0;
  for (int l = 0; l < m_.layers; l++) {
    const LayerWeights& L = weights_->layers[l];
    const KvLayer kv = layerKv(l);

    rmsNorm(a.x, nullptr, N, H, L.attnNorm, m_.rmsEps, a.xn, s);
    mark(kNorm, s);
    linear(kQkv, a.xn, N, L.qkv, qkvDim, H, a.qkv, OutMode::Bf16, s);
    mark(kQkvGemm, s);
    qkvBiasNorm(a.qkv, N, m_.heads, m_.kvHeads, hd, L.qkvBias, L.qNorm, L.kNorm, m_.rmsEps, s);  // Qwen2 / Qwen3
    if (!fuseRope) ropeAppend(a.qkv, dm.token, m_.heads, invFreq_, kv, s);
    mark(kRope, s);
    if (dm.lay.numDecode > 0) {
      DecodeAttentionArgs d;
      d.q = a.qkv;
      d.qStride = qkvDim;
      d.out = a.attn;
      d.outStride = qDim;
      d.queries = dm.decode;
      d.numQueries = dm.lay.numDecode;
      d.meta = dm.token;
      d.kv = kv;
      d.heads = m_.heads;
      d.scale = scale;
      d.splitLen = ds.splitLen;
      d.maxSplits = ds.maxSplits;
      d.evenSplits = ds.evenSplits;
      d.stages = ds.stages;
      d.partO = a.partO;
      d.partML = a.partML;
      d.counters = a.counters;
      d.clusterCap = opts_.decodeClusterCap;
      d.ropeInvFreq = fuseRope ? invFreq_ : nullptr;
      d.kvMap = kvMap(l);
      decodeAttention(d, s);
    }
    if (dm.lay.numTiles > 0) {
      PrefillAttentionArgs p;
      p.q = a.qkv;
      p.qStride = qkvDim;
      p.out = a.attn;
      p.outStride = qDim;
      p.tiles = dm.tiles;
      p.numTiles = dm.lay.numTiles;
      p.pageTable = dm.token.pageTable;
      p.ptStride = dm.token.ptStride;
      p.kv = kv;
      p.heads = m_.heads;
      p.scale = scale;
      p.kvMap = kvMap(l);
      prefillAttention(p, s);
    }
    mark(kAttention, s);
    linear(kO, a.attn, N, L.o, H, qDim, a.x, OutMode::F32Add, s);
    mark(kOGemm, s);

    rmsNorm(a.x, nullptr, N, H, L.mlpNorm, m_.rmsEps, a.xn, s);
    mark(kNorm, s);
    if (usesSkinny(kGateUp, N)) {  // silu.mul in the product's epilogue
      linear(kGateUp, a.xn, N, L.gateUp, 2 * I, H, a.act, OutMode::SiluPairBf16, s);
      mark(kGateUpGemm, s);
    } else {
      linear(kGateUp, a.xn, N, L.gateUp, 2 * I, H, a.gu, OutMode::Bf16, s);
      mark(kGateUpGemm, s);
      siluMul(a.gu, N, I, a.act, s);
      mark(kSilu, s);
    }
    linear(kDown, a.act, N, L.down, H, I, a.x, OutMode::F32Add, s);
    mark(kDownGemm, s);
    afterLayer(l, s);
  }
}

void CudaBackend::runHead(const int32_t* rows, int n, Arena& a, cudaStream_t s) {
  rmsNorm(a.x, rows, n, m_.hidden, weights_->finalNorm, m_.rmsEps, a.xn, s);
  linear(kHead, a.xn, n, weights_->head, m_.vocab, m_.hidden, a.logits, OutMode::F32, s);
  mark(kHeadStage, s);
}

void CudaBackend::setProfile(bool on) {
  profiling_ = on;
  profMs_.assign(kNumStages, 0.0);
}

std::vector<std::pair<std::string, double>> CudaBackend::profile() const {
  std::vector<std::pair<std::string, double>> out;
  for (int i = 0; i < kNumStages && i < int(profMs_.size()); i++) out.emplace_back(kStageNames[i], profMs_[i]);
  return out;
}

void CudaBackend::mark(int stage, cudaStream_t s) {
  if (!profiling_) return;
  size_t i = profStages_.size() + 1;  // event 0 is the start
  while (profEvents_.size() <= i) {
    cudaEvent_t e;
    MS_CUDA_CHECK(cudaEventCreate(&e));
    profEvents_.push_back(e);
  }
  MS_CUDA_CHECK(cudaEventRecord(profEvents_[i], s));
  profStages_.push_back(stage);
}

void CudaBackend::collectProfile() {
  MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < profStages_.size(); i++) {
    float ms = 0;
    MS_CUDA_CHECK(cudaEventElapsedTime(&ms, profEvents_[i], profEvents_[i + 1]));
    profMs_[profStages_[i]] += ms;
  }
  profStages_.clear();
}

// Device logits -> pinned staging (planned: arena_.capRows rows) -> the caller's buffer. Large outputs go in kCopyParts parts:
// each part's device copy is followed by an event, and one host thread per part waits for it and
// copies it out, so the host copies overlap each other and the remaining device copies.
void CudaBackend::copyLogits(const float* dev, int rows, float* out) {
  const size_t total = size_t(rows) * m_.vocab * sizeof(float);
  if (stagingBytes_ < total) throw CudaError("logits staging smaller than the plan said", false);
  const char* src = reinterpret_cast<const char*>(dev);
  char* stage = reinterpret_cast<char*>(staging_);
  char* dst = reinterpret_cast<char*>(out);
  if (total < kParallelCopyBytes) {
    MS_CUDA_CHECK(cudaMemcpyAsync(stage, src, total, cudaMemcpyDeviceToHost, stream_));
    MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(dst, stage, total);
    return;
  }
  const size_t part = (total / kCopyParts + 4095) / 4096 * 4096;
  for (int i = 0; i < kCopyParts; i++) {
    const size_t off = std::min(total, i * part), len = std::min(part, total - off);
    if (len) MS_CUDA_CHECK(cudaMemcpyAsync(stage + off, src + off, len, cudaMemcpyDeviceToHost, stream_));
    MS_CUDA_CHECK(cudaEventRecord(evCopy_[i], stream_));
  }
  auto copyPart = [&](int i) {
    const size_t off = std::min(total, i * part), len = std::min(part, total - off);
    if (cudaEventSynchronize(evCopy_[i]) != cudaSuccess) return false;
    std::memcpy(dst + off, stage + off, len);
    return true;
  };
  std::vector<std::thread> helpers;
  std::vector<char> okPart(kCopyParts, 1);
  for (int i = 1; i < kCopyParts; i++) helpers.emplace_back([&, i] { okPart[i] = copyPart(i); });
  okPart[0] = copyPart(0);
  for (auto& t : helpers) t.join();
  for (char ok : okPart)
    if (!ok) MS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // reports the device error
}

Status CudaBackend::checkForward(const Batch& b, const float* logitsOut) const {
  if (!finalized_) return Status::Error(Code::NATIVE_ERROR, "forward before finalize");
  Status st = checkStepPlan(b, plan_);
  if (!st.ok()) return st;
  st = checkBatchSampling(b, logitsOut);
  if (!st.ok()) return st;
  std::string e = b.tokensOut && (b.extras || b.maskGate) ? samplingExtrasError(b, m_.vocab) : "";
  if (e.empty() && b.tokensOut && b.extras) e = extras_.check(b);
  if (e.empty()) e = promptLogprobsError(b, m_.vocab);
  if (!e.empty()) return Status::Error(Code::BAD_ARGUMENT, e);
  return Status::Ok();
}

Status CudaBackend::forward(const Batch& b, float* logitsOut) {
  return guarded([&] {
    Status st = checkForward(b, logitsOut);
    if (!st.ok()) return st;
    // A graph's sampler overwrites the logits it would return: logits and tokens together run eagerly.
    if (graphEligible(b) && !(b.tokensOut && logitsOut))
      forwardGraph(b, logitsOut);
    else
      forwardEager(b, logitsOut);
    return Status::Ok();
  });
}

void CudaBackend::processExtras(float* logits, int row0, int n, const int32_t* params, int32_t* tokens, bool isGraph) {
  ExtrasArgs a = extras_.args(logits, row0, n, params, tokens);
  if (isGraph)
    applyBias(a, stream_);
  else
    extras_.applyBiasWindows(a, stream_);
  applyMaskPenalties(a, stream_);
  if (!isGraph && !extras_.packed().hasLogprobs) return;
  LogprobArgs l;
  l.logits = logits;
  l.vocab = m_.vocab;
  l.rows = n;
  l.sampleParams = params;
  l.numTop = a.extras + kNumLogprobs;
  l.numTopStride = kExtraInts;
  l.lse = a.lse;
  l.out = a.out;
  computeLogprobs(l, stream_);
}

void CudaBackend::sampleRows(Arena& ar, int row0, int n, const int32_t* params, int32_t* tokens, bool extras) {
  if (!extras) {
    launchSampler(ar, n, m_.vocab, params, tokens, nullptr, stream_);
    return;
  }
  ExtrasArgs a = extras_.args(ar.logits, row0, n, params, tokens);
  launchSampler(ar, n, m_.vocab, params, tokens, a.extras, stream_);
  afterSample(a, stream_);
}

void CudaBackend::forwardEager(const Batch& b, float* out) {
  lastUsedGraph_ = false;
  EagerPlan p = planEager(b, kv_.pageSize);
  DecodeSplits ds;
  if (p.lay.numDecode > 0) ds = decodeSplits(p.lay.numDecode, p.maxDecodeCtx);
  size_t partial = size_t(p.lay.numDecode) * m_.heads * ds.maxSplits * m_.headDim;
  int rows = std::min(p.lay.numRows, kHeadChunk);
  // The plan (checkStepPlan) bounds every one of these; nothing grows here.
  Arena& eager = arena_;
  if (eager.capTokens < b.numTokens || eager.capRows < rows || eager.capPartial < partial || eager.capMeta < p.lay.total)
    throw CudaError("step exceeds the planned arena (tokens " + std::to_string(b.numTokens) + ", partial " +
                        std::to_string(partial) + ", meta " + std::to_string(p.lay.total) + ")",
                    false);
  packEager(b, p, hostMeta_);
  if (timing_) MS_CUDA_CHECK(cudaEventRecord(evStart_, stream_));
  if (profiling_) {
    if (profEvents_.empty()) {
      profEvents_.resize(1);
      MS_CUDA_CHECK(cudaEventCreate(&profEvents_[0]));
    }
    MS_CUDA_CHECK(cudaEventRecord(profEvents_[0], stream_));
  }
  MS_CUDA_CHECK(cudaMemcpyAsync(eager.meta, hostMeta_, p.lay.total * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  const bool sampling = b.tokensOut != nullptr, hasExtras = sampling && b.extras;
  if (hasExtras) {  // penalty slots rebuilt where asked, the rows' extras on the device (a gated step's after its gate)
    extras_.rebuildSlots(b, stream_);
    if (!b.maskGate) extras_.pack(b, b.numSeqs, stream_);
  }
  DeviceMeta dm = deviceMeta(p.lay, eager.meta);
  runLayers(dm, eager, ds, stream_);
  for (int r0 = 0; r0 < p.lay.numRows; r0 += kHeadChunk) {
    int n = std::min(kHeadChunk, p.lay.numRows - r0);
    runHead(dm.rows + r0, n, eager, stream_);
    if (sampling) {
      const int32_t* params = eager.meta + p.lay.sampleParams + size_t(r0) * kSampleParamInts;
      int32_t* tokens = eager.meta + p.lay.sampled + r0;
      if (b.maskGate && r0 == 0) packGatedExtras(b, b.numSeqs);
      if (hasExtras) processExtras(eager.logits, r0, n, params, tokens, false);
      if (out) copyLogits(eager.logits, n, out + size_t(r0) * m_.vocab);  // before the sampler overwrites them
      sampleRows(eager, r0, n, params, tokens, hasExtras);
    }
    if (timing_ && r0 == 0) MS_CUDA_CHECK(cudaEventRecord(evStop_, stream_));
    if (!sampling) copyLogits(eager.logits, n, out + size_t(r0) * m_.vocab);
  }
  // Prompt logprobs: the rows that ask for them through the head, a head chunk at a time, after
  // the sampled rows (the logits buffer is theirs until then).
  for (int r0 = 0; r0 < p.lay.numPromptRows; r0 += kHeadChunk) {
    const int n = std::min(kHeadChunk, p.lay.numPromptRows - r0);
    runHead(eager.meta + p.lay.promptRows + r0, n, eager, stream_);
    LogprobArgs l;
    l.logits = eager.logits;
    l.vocab = m_.vocab;
    l.rows = n;
    l.numTop = eager.meta + p.lay.promptTop + r0;
    l.targets = eager.meta + p.lay.promptTargets + r0;
    l.out = eager.meta + p.lay.promptOut + size_t(r0) * kLogprobInts;
    computeLogprobs(l, stream_);
  }
  if (sampling) {  // numSeqs int32 back through the pinned staging of the metadata
    MS_CUDA_CHECK(cudaMemcpyAsync(hostMeta_ + p.lay.sampled, eager.meta + p.lay.sampled, size_t(b.numSeqs) * 4,
                                  cudaMemcpyDeviceToHost, stream_));
    if (p.lay.numPromptRows)
      MS_CUDA_CHECK(cudaMemcpyAsync(hostMeta_ + p.lay.promptOut, eager.meta + p.lay.promptOut,
                                    size_t(p.lay.numPromptRows) * kLogprobInts * 4, cudaMemcpyDeviceToHost, stream_));
    if (hasExtras) extras_.downloadLogprobs(b, stream_);
    MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(b.tokensOut, hostMeta_ + p.lay.sampled, size_t(b.numSeqs) * 4);
    if (hasExtras) extras_.finishLogprobs(b);
    if (p.lay.numPromptRows) unpackPromptLogprobs(b, p.lay, hostMeta_);
  }
  if (profiling_) collectProfile();
  if (timing_) {
    float ms = 0;
    MS_CUDA_CHECK(cudaEventElapsedTime(&ms, evStart_, evStop_));
    lastGpuMs_ = ms;
  }
}

// Graphs exist for the planned buckets only (captured at finalize); anything else runs eagerly.
bool CudaBackend::graphEligible(const Batch& b) const {
  if (!graphsEnabled_ || profiling_ || b.numSeqs > maxGraphBatch_ || b.numTokens != b.numSeqs || b.promptLogprobs)
    return false;
  for (int s = 0; s < b.numSeqs; s++)
    if (b.startPos[s] + 1 > maxGraphCtx_) return false;
  return true;
}

void CudaBackend::captureGraph(int bucket, int ctxB, bool sampling, bool extras) {
  auto key = std::make_tuple(bucket, ctxB, sampling, extras);
  auto it = graphs_.find(key);
  const bool isNew = it == graphs_.end();
  Graph g = isNew ? Graph() : it->second;
  const int ptStride = (ctxB + kv_.pageSize - 1) / kv_.pageSize;
  g.lay = graphLayout(bucket, ptStride, sampling);
  const DecodeSplits ds = decodeSplits(bucket, ctxB);
  if (arena_.capPartial < size_t(bucket) * m_.heads * ds.maxSplits * m_.headDim || arena_.capTokens < bucket)
    throw CudaError("step arena too small for graph bucket " + std::to_string(bucket), false);
  if (isNew) {
    MS_CUDA_CHECK(cudaMallocHost(&g.hostMeta, g.lay.total * sizeof(int32_t)));
    std::memset(g.hostMeta, 0, g.lay.total * sizeof(int32_t));
    MS_CUDA_CHECK(cudaMalloc(&g.devMeta, g.lay.total * sizeof(int32_t)));
  }
  cudaGraph_t graph = nullptr;
  MS_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  try {
    MS_CUDA_CHECK(cudaMemcpyAsync(g.devMeta, g.hostMeta, g.lay.total * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    DeviceMeta dm = deviceMeta(g.lay, g.devMeta);
    runLayers(dm, arena_, ds, stream_);
    runHead(dm.rows, bucket, arena_, stream_);
    if (sampling) {  // the sampler and the copy of its tokens to the pinned metadata are graph nodes
      const int32_t* params = g.devMeta + g.lay.sampleParams;
      int32_t* tokens = g.devMeta + g.lay.sampled;
      if (extras) processExtras(arena_.logits, 0, bucket, params, tokens, true);
      sampleRows(arena_, 0, bucket, params, tokens, extras);
      MS_CUDA_CHECK(cudaMemcpyAsync(g.hostMeta + g.lay.sampled, g.devMeta + g.lay.sampled, size_t(bucket) * 4,
                                    cudaMemcpyDeviceToHost, stream_));
    }
  } catch (...) {
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    if (isNew) {
      cudaFreeHost(g.hostMeta);
      cudaFree(g.devMeta);
    }
    throw;
  }
  MS_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  // Re-captured (new pool address, new kernel settings): update the executable in place; a
  // topology change that cannot be updated is instantiated again.
  cudaError_t e = cudaSuccess;
  if (g.exec) {
    cudaGraphExecUpdateResultInfo info;
    if (cudaGraphExecUpdate(g.exec, graph, &info) != cudaSuccess) {
      cudaGetLastError();  // clear the update's error
      cudaGraphExecDestroy(g.exec);
      g.exec = nullptr;
    }
  }
  if (!g.exec) e = cudaGraphInstantiate(&g.exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess && isNew) {
    cudaFreeHost(g.hostMeta);
    cudaFree(g.devMeta);
  }
  MS_CUDA_CHECK(e);
  MS_CUDA_CHECK(cudaGraphUpload(g.exec, stream_));  // the first launch allocates nothing
  graphs_[key] = g;
}

void CudaBackend::forwardGraph(const Batch& b, float* out) {
  int maxCtx = 1;
  for (int s = 0; s < b.numSeqs; s++) maxCtx = std::max(maxCtx, b.startPos[s] + 1);
  const int bucket = graphBucket(b.numSeqs), ctxB = ctxBucket(maxCtx);
  const bool sampling = b.tokensOut != nullptr, hasExtras = sampling && b.extras;
  // A graph applies one window of bias entries; a longer list runs eagerly.
  const bool isBiasLong = hasExtras && b.extras->biasOffsets && b.extras->biasOffsets[b.numSeqs] > extras_.caps().biasCap;
  // A gated step replays the bucket's logits graph and samples after it (forwardGraphGated).
  const bool isGated = b.maskGate != nullptr;
  auto it = graphs_.find(std::make_tuple(bucket, ctxB, sampling && !isGated, hasExtras && !isGated));
  if (it == graphs_.end() || (isBiasLong && !isGated)) {  // not planned (graphs were off at finalize): eager, nothing captured here
    forwardEager(b, out);
    return;
  }
  Graph& g = it->second;
  if (isGated) {
    forwardGraphGated(b, g, bucket);
    return;
  }
  packGraph(b, bucket, g.lay.ptStride, kv_.pageSize, kv_.numPages, g.hostMeta);
  if (timing_) MS_CUDA_CHECK(cudaEventRecord(evStart_, stream_));
  if (hasExtras) {  // eager copies before the replay; padding rows get no extras
    extras_.rebuildSlots(b, stream_);
    extras_.pack(b, bucket, stream_);
  }
  MS_CUDA_CHECK(cudaGraphLaunch(g.exec, stream_));
  if (timing_) MS_CUDA_CHECK(cudaEventRecord(evStop_, stream_));
  if (sampling) {
    if (hasExtras) extras_.downloadLogprobs(b, stream_);
    MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(b.tokensOut, g.hostMeta + g.lay.sampled, size_t(b.numSeqs) * 4);
    if (hasExtras) extras_.finishLogprobs(b);
  } else {
    copyLogits(arena_.logits, b.numSeqs, out);
  }
  lastUsedGraph_ = true;
  if (timing_) {
    float ms = 0;
    MS_CUDA_CHECK(cudaEventElapsedTime(&ms, evStart_, evStop_));
    lastGpuMs_ = ms;
  }
}

void CudaBackend::packGatedExtras(const Batch& b, int numRows) {
  const uint32_t* masks = nullptr;
  Status st = b.maskGate->wait(&masks);
  if (!st.ok()) throw StatusError(st.code, st.message);
  SamplingExtras x = *b.extras;
  x.allowedMask = masks;  // null: no masks (rows sampled unmasked)
  x.maskWords = (m_.vocab + 31) / 32;
  Batch gated = b;
  gated.extras = &x;
  gated.maskGate = nullptr;
  extras_.pack(gated, numRows, stream_);  // copies the non-trivial mask rows into the pinned staging, then to the device
}

void CudaBackend::forwardGraphGated(const Batch& b, const Graph& g, int bucket) {
  Batch head = b;
  head.tokensOut = nullptr;  // the logits graph's layout: no sampling part
  packGraph(head, bucket, g.lay.ptStride, kv_.pageSize, kv_.numPages, g.hostMeta);
  // The sampling parameters and ids in the eager metadata, which the graph does not use.
  const MetaLayout sl = packSamplingOnly(b, hostMeta_);
  const int32_t* params = arena_.meta + sl.sampleParams;
  int32_t* tokens = arena_.meta + sl.sampled;
  if (timing_) MS_CUDA_CHECK(cudaEventRecord(evStart_, stream_));
  extras_.rebuildSlots(b, stream_);
  MS_CUDA_CHECK(cudaMemcpyAsync(arena_.meta, hostMeta_, sl.total * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  MS_CUDA_CHECK(cudaGraphLaunch(g.exec, stream_));
  packGatedExtras(b, b.numSeqs);
  processExtras(arena_.logits, 0, b.numSeqs, params, tokens, false);
  sampleRows(arena_, 0, b.numSeqs, params, tokens, true);
  if (timing_) MS_CUDA_CHECK(cudaEventRecord(evStop_, stream_));
  MS_CUDA_CHECK(cudaMemcpyAsync(hostMeta_ + sl.sampled, tokens, size_t(b.numSeqs) * 4, cudaMemcpyDeviceToHost, stream_));
  extras_.downloadLogprobs(b, stream_);
  MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::memcpy(b.tokensOut, hostMeta_ + sl.sampled, size_t(b.numSeqs) * 4);
  extras_.finishLogprobs(b);
  lastUsedGraph_ = true;
  if (timing_) {
    float ms = 0;
    MS_CUDA_CHECK(cudaEventElapsedTime(&ms, evStart_, evStop_));
    lastGpuMs_ = ms;
  }
}

}  // namespace ms::cuda
