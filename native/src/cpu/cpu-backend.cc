// The CPU backend: f32 compute of Hugging Face LlamaForCausalLM (and the Mistral, Qwen2, Qwen3
// variants: ModelConfig::qkvBias, qkNorm) over a paged KV pool.
//
// KV pool layout equals the wire layout, so readPages/writePages are plain copies:
//   kvPool_: (numPages, layers, 2 [K, V], pageSize, kvHeads, headDim) f32
// Memory plan (host): the step scratch below is sized at construction for the largest step the
// caps allow (BackendOptions maxBatchTokens / maxNumSeqs) and only reused by forward; a larger
// step is refused with OVER_PLAN. (The attention kernels' own panels are still per call.)
#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <climits>
#include <cstring>
#include <new>
#include <thread>

#include "../backend.h"
#include "attention.h"
#include "kernels.h"
#include "model-weights.h"
#include "thread-pool.h"
#include "../common/model-util.h"
#include "../common/logit-processing.h"
#include "../common/sampling.h"
#include "../common/step-plan.h"

namespace ms {
namespace cpu {
namespace {

// x (hidden,) -> out = x * rsqrt(mean(x^2) + eps) * w
void rmsNorm(const float* x, const float* w, int n, float eps, float* out) {
  double ss = 0;
  for (int i = 0; i < n; i++) ss += double(x[i]) * x[i];
  float r = 1.f / std::sqrt(float(ss / n) + eps);
  for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

// Rotate-half RoPE on one head: pairs (i, i + headDim/2).
void rope(float* v, const float* cosT, const float* sinT, int half) {
  for (int i = 0; i < half; i++) {
    float a = v[i], b = v[i + half];
    v[i] = a * cosT[i] - b * sinT[i];
    v[i + half] = b * cosT[i] + a * sinT[i];
  }
}

size_t matrixBytes(const Matrix& w) {
  return w.empty() ? 0 : size_t((w.rows() + kPanel - 1) / kPanel) * kPanel * w.cols() * (w.isBf16() ? 2 : 4);
}

// Per-step buffers, sized once for (maxTokens, maxSeqs); forward only reuses them.
struct StepScratch {
  std::vector<float> x, xb;      // (maxTokens, hidden) residual stream, normed block input
  std::vector<float> qkv;        // (maxTokens, q | k | v)
  std::vector<float> att;        // (maxTokens, heads*headDim)
  std::vector<float> gu;         // (maxTokens, gate | up)
  std::vector<float> hid;        // (maxTokens, intermediate)
  std::vector<float> cosT, sinT; // (maxTokens, headDim/2)
  std::vector<float> xf;         // (maxTokens, hidden) final-normed rows that need logits
  std::vector<float> logits;     // (maxSeqs, vocab) when only tokens are wanted
  std::vector<int> rows;         // (maxTokens,)
  std::vector<PenaltyState*> rowStates;  // (maxSeqs,) each row's penalty state or null
  std::vector<std::vector<uint32_t>> sampleScratch;  // per thread, (vocab,)
  std::vector<std::vector<int32_t>> logprobScratch;  // per thread, (vocab,) ids for the top-n sort
  BatchIndex idx;                // (maxTokens,) / (maxSeqs,) capacity

  void plan(const ModelConfig& m, int maxTokens, int maxSeqs, int numThreads) {
    const size_t T = maxTokens, H = m.hidden, q = size_t(m.heads) * m.headDim, kvd = size_t(m.kvHeads) * m.headDim;
    x.resize(T * H), xb.resize(T * H), qkv.resize(T * (q + 2 * kvd)), att.resize(T * q);
    gu.resize(T * 2 * m.intermediate), hid.resize(T * m.intermediate);
    cosT.resize(T * (m.headDim / 2)), sinT.resize(T * (m.headDim / 2)), xf.resize(T * H);
    logits.resize(size_t(maxSeqs) * m.vocab);
    rows.reserve(T);
    rowStates.reserve(size_t(maxSeqs));
    sampleScratch.assign(numThreads, {});
    for (auto& v : sampleScratch) v.reserve(m.vocab);
    logprobScratch.assign(numThreads, {});
    for (auto& v : logprobScratch) v.reserve(m.vocab);
    idx.seqOf.reserve(T), idx.posOf.reserve(T), idx.firstToken.reserve(maxSeqs);
  }
  size_t bytes() const {
    size_t f = x.size() + xb.size() + qkv.size() + att.size() + gu.size() + hid.size() + cosT.size() + sinT.size() +
               xf.size() + logits.size();
    size_t n = f * 4 + (rows.capacity() + idx.seqOf.capacity() + idx.posOf.capacity() + idx.firstToken.capacity()) * 4;
    for (auto& v : sampleScratch) n += v.capacity() * 4;
    for (auto& v : logprobScratch) n += v.capacity() * 4;
    return n;
  }
};

class CpuBackend : public Backend {
 public:
  CpuBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, int numThreads)
      : m_(m), kv_(kv), k_(kernelsFor(o.cpuIsa)), threads_(numThreads), weights_(m), invFreq_(ropeInvFreq(m)) {
    if (kv_.numPages == 0) kv_.numPages = kCpuAutoPages;
    pageFloats_ = size_t(m.layers) * 2 * kv_.pageSize * m.kvHeads * m.headDim;
    size_t bytes = size_t(kv_.numPages) * pageFloats_ * 4;
    kvPool_ = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!kvPool_) throw std::bad_alloc();
    // Zeroed (and so first touched) in finalize, with the step scratch: this constructor runs on
    // the JS event loop, finalize on the addon's worker thread. Touching a pool of GBs here
    // blocked the loop for seconds (the engine's control connection missed its heartbeats).
    plan_.maxBatchTokens = o.maxBatchTokens;
    plan_.maxNumSeqs = plannedNumSeqs(o);
    plan_.maxContext = m.maxPositions > 0 ? m.maxPositions : INT_MAX;
    plan_.numPages = kv_.numPages;
    plan_.pageSize = kv_.pageSize;
    plan_.kvTokens = int64_t(kv_.numPages) * kv_.pageSize;
    plan_.maxRequestTokens = std::min<int64_t>(plan_.maxContext, plan_.kvTokens);
    plan_.kvBytes = bytes;
    plan_.isHost = true;
  }
  ~CpuBackend() override { std::free(kvPool_); }

  Status loadTensorRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape, int64_t rowBegin,
                        const void* data, size_t numBytes) override {
    return guarded([&] { return weights_.loadRows(name, dtype, shape, rowBegin, data, numBytes); });
  }
  Status randomInit(uint64_t seed, float std) override {
    return guarded([&] { return weights_.randomInit(threads_, seed, std); });
  }
  Status finalize() override {
    Status st = weights_.finalize();
    if (!st.ok()) return st;
    if (!isPlanned_) {
      st = guarded([&] {
        scratch_.plan(m_, plan_.maxBatchTokens, plan_.maxNumSeqs, int(threads_.size()));
        plan_.arenaBytes = scratch_.bytes();
        zeroPool();
        return Status::Ok();
      });
      if (!st.ok()) return st;
      isPlanned_ = true;
    }
    size_t w = matrixBytes(weights_.embed) + matrixBytes(weights_.lmHead) + weights_.finalNorm.size() * 4;
    for (const LayerWeights& L : weights_.layers)
      w += matrixBytes(L.qkv) + matrixBytes(L.o) + matrixBytes(L.gateUp) + matrixBytes(L.down) +
           (L.attnNorm.size() + L.mlpNorm.size() + L.qkvBias.size() + L.qNorm.size() + L.kNorm.size()) * 4;
    plan_.weightsBytes = w;
    return Status::Ok();
  }
  Status forward(const Batch& b, float* logitsOut) override {
    Status st = checkStepPlan(b, plan_);
    if (!st.ok()) return st;
    st = checkBatchSampling(b, logitsOut);
    if (!st.ok()) return st;
    std::string e = b.tokensOut ? samplingExtrasError(b, m_.vocab) : "";
    if (e.empty()) e = promptLogprobsError(b, m_.vocab);
    if (!e.empty()) return Status::Error(Code::BAD_ARGUMENT, e);
    return guarded([&] { return run(b, logitsOut); });
  }
  DType kvDType() const override { return DType::F32; }
  size_t pageBytes() const override { return pageFloats_ * 4; }
  Status readPages(const int32_t* ids, int n, uint8_t* out) override {
    for (int i = 0; i < n; i++) std::memcpy(out + size_t(i) * pageBytes(), page(ids[i]), pageBytes());
    return Status::Ok();
  }
  Status writePages(const int32_t* ids, int n, const uint8_t* in) override {
    for (int i = 0; i < n; i++) std::memcpy(page(ids[i]), in + size_t(i) * pageBytes(), pageBytes());
    return Status::Ok();
  }
  std::string deviceName() const override {
    return "cpu (" + std::to_string(threads_.size()) + " threads, " + k_.name + ")";
  }
  MemoryPlan memoryPlan() const override { return plan_; }

 private:
  template <class F>
  Status guarded(F&& f) {
    try {
      return f();
    } catch (const std::bad_alloc&) {
      return Status::Error(Code::OUT_OF_MEMORY, "out of host memory");
    } catch (const std::exception& e) {
      return Status::Error(Code::NATIVE_ERROR, e.what());
    }
  }
  float* page(int id) { return kvPool_ + size_t(id) * pageFloats_; }
  // The whole pool to 0, in page ranges over the thread pool (first touch: the OS maps it here).
  void zeroPool() {
    const size_t numPages = size_t(kv_.numPages);
    const int numTasks = int(std::min<size_t>(numPages, size_t(threads_.size()) * 8));
    threads_.run(numTasks, [&](int task, int) {
      const size_t begin = numPages * task / numTasks, end = numPages * (task + 1) / numTasks;
      std::memset(page(int(begin)), 0, (end - begin) * pageFloats_ * 4);
    });
  }
  Status run(const Batch& b, float* logitsOut);
  Status sampleWithExtras(const Batch& b, float* logits);
  void promptLogprobs(const Batch& b);

  ModelConfig m_;
  KvConfig kv_;
  const Kernels& k_;  // the instruction set chosen at construction (BackendOptions::cpuIsa)
  ThreadPool threads_;
  ModelWeights weights_;
  std::vector<float> invFreq_;  // (headDim/2,)
  size_t pageFloats_ = 0;
  float* kvPool_ = nullptr;    // see the layout at the top of the file
  bool isPlanned_ = false;     // finalize sized the scratch and zeroed the pool (once)
  MemoryPlan plan_;
  StepScratch scratch_;
  std::vector<PenaltyState> penalties_;  // by SamplingExtras::slot, grown to the largest slot seen
};

Status CpuBackend::run(const Batch& b, float* logitsOut) {
  const int N = b.numTokens, H = m_.hidden, hd = m_.headDim, half = hd / 2, I = m_.intermediate;
  const int qDim = m_.heads * hd, kvDim = m_.kvHeads * hd, qkvDim = qDim + 2 * kvDim;
  const size_t layerFloats = size_t(2) * kv_.pageSize * kvDim;  // one layer of one page

  // Per token: its sequence and position (resizes stay within the planned capacity).
  StepScratch& w = scratch_;
  BatchIndex& idx = w.idx;
  idx.maxLen = 0;
  idx.seqOf.resize(N);
  idx.posOf.resize(N);
  idx.firstToken.resize(b.numSeqs);
  for (int s = 0, i = 0; s < b.numSeqs; s++) {
    idx.firstToken[s] = i;
    for (int j = 0; j < b.seqLens[s]; j++, i++) {
      idx.seqOf[i] = s;
      idx.posOf[i] = b.startPos[s] + j;
      if (idx.posOf[i] + 1 > idx.maxLen) idx.maxLen = idx.posOf[i] + 1;
    }
  }
  const std::vector<int>& seqOf = idx.seqOf;
  const std::vector<int>& posOf = idx.posOf;
  AttentionShape shape;
  shape.heads = m_.heads;
  shape.kvHeads = m_.kvHeads;
  shape.headDim = hd;
  shape.pageSize = kv_.pageSize;
  shape.pageFloats = pageFloats_;
  shape.layerFloats = layerFloats;

  // Views of the planned scratch, (N, ...) each (StepScratch has the shapes).
  float* x = w.x.data();
  float* xb = w.xb.data();
  float* qkv = w.qkv.data();
  float* att = w.att.data();
  float* gu = w.gu.data();
  float* hid = w.hid.data();
  float* cosT = w.cosT.data();
  float* sinT = w.sinT.data();

  for (int i = 0; i < N; i++) {
    weights_.embed.rowToF32(b.tokens[i], &x[size_t(i) * H]);
    for (int j = 0; j < half; j++) {
      float a = float(posOf[i]) * invFreq_[j];  // f32 product, as transformers computes it
      cosT[size_t(i) * half + j] = float(std::cos(double(a)));
      sinT[size_t(i) * half + j] = float(std::sin(double(a)));
    }
  }

  for (int l = 0; l < m_.layers; l++) {
    const LayerWeights& L = weights_.layers[l];
    // Attention block: norm, q/k/v, RoPE, KV into pages, attention, o_proj + residual.
    for (int i = 0; i < N; i++) rmsNorm(&x[size_t(i) * H], L.attnNorm.data(), H, m_.rmsEps, &xb[size_t(i) * H]);
    L.qkv.matmul(k_, threads_, xb, N, H, qkv, qkvDim, false);
    for (int i = 0; i < N; i++) {
      float* row = &qkv[size_t(i) * qkvDim];
      const float* c = &cosT[size_t(i) * half];
      const float* sn = &sinT[size_t(i) * half];
      if (!L.qkvBias.empty())  // Qwen2: q/k/v biases
        for (int j = 0; j < qkvDim; j++) row[j] += L.qkvBias[j];
      if (!L.qNorm.empty()) {  // Qwen3: RMSNorm of each q and k head, before RoPE
        for (int h = 0; h < m_.heads; h++) rmsNorm(row + h * hd, L.qNorm.data(), hd, m_.rmsEps, row + h * hd);
        for (int h = 0; h < m_.kvHeads; h++)
          rmsNorm(row + qDim + h * hd, L.kNorm.data(), hd, m_.rmsEps, row + qDim + h * hd);
      }
      for (int h = 0; h < m_.heads + m_.kvHeads; h++) rope(row + h * hd, c, sn, half);
      int p = posOf[i];
      float* dst = page(b.pageTables[size_t(seqOf[i]) * b.maxPagesPerSeq + p / kv_.pageSize]) + l * layerFloats +
                   size_t(p % kv_.pageSize) * kvDim;
      std::memcpy(dst, row + qDim, kvDim * 4);                                  // K
      std::memcpy(dst + size_t(kv_.pageSize) * kvDim, row + qDim + kvDim, kvDim * 4);  // V
    }
    attendLayer(k_, threads_, shape, b, idx, kvPool_, l, qkv, qkvDim, att);
    L.o.matmul(k_, threads_, att, N, qDim, x, H, true);

    // MLP block: norm, gate/up, silu(gate) * up, down + residual.
    for (int i = 0; i < N; i++) rmsNorm(&x[size_t(i) * H], L.mlpNorm.data(), H, m_.rmsEps, &xb[size_t(i) * H]);
    L.gateUp.matmul(k_, threads_, xb, N, H, gu, 2 * I, false);
    for (int i = 0; i < N; i++) {
      const float* g = &gu[size_t(i) * 2 * I];
      float* h = &hid[size_t(i) * I];
      for (int j = 0; j < I; j++) h[j] = g[j] / (1.f + std::exp(-g[j])) * g[I + j];
    }
    L.down.matmul(k_, threads_, hid, N, I, x, H, true);
  }

  // Final norm on the rows that need logits, then the LM head.
  std::vector<int>& rows = w.rows;
  rows.clear();
  if (b.allLogits) {
    for (int i = 0; i < N; i++) rows.push_back(i);
  } else {
    for (int s = 0, end = 0; s < b.numSeqs; s++) rows.push_back((end += b.seqLens[s]) - 1);
  }
  float* xf = w.xf.data();  // (rows, hidden)
  for (size_t r = 0; r < rows.size(); r++)
    rmsNorm(&x[size_t(rows[r]) * H], weights_.finalNorm.data(), H, m_.rmsEps, &xf[r * H]);
  float* logits = logitsOut ? logitsOut : w.logits.data();  // planned (numSeqs, vocab) when only tokens are wanted
  weights_.head().matmul(k_, threads_, xf, int(rows.size()), H, logits, m_.vocab, false);
  if (b.maskGate) {  // the masks come now (computed while the layers ran), then sampling as with them up front
    const uint32_t* masks = nullptr;
    Status st = b.maskGate->wait(&masks);
    if (!st.ok()) return st;
    SamplingExtras x = *b.extras;
    x.allowedMask = masks;
    x.maskWords = (m_.vocab + 31) / 32;
    Batch gated = b;
    gated.extras = &x;
    st = sampleWithExtras(gated, logits);
    if (!st.ok()) return st;
  } else if (b.tokensOut && b.extras) {
    Status st = sampleWithExtras(b, logits);
    if (!st.ok()) return st;
  } else if (b.tokensOut) {  // one row per task; each thread keeps its own scratch
    threads_.run(b.numSeqs, [&](int s, int t) {
      b.tokensOut[s] = sampleRow(logits + size_t(s) * m_.vocab, m_.vocab, b.temperature[s], b.topP[s], b.seed[s],
                                 b.step[s], w.sampleScratch[t]);
    });
  }
  if (b.promptLogprobs) promptLogprobs(b);
  return Status::Ok();
}

// Prompt logprobs: the rows that ask for them, maxSeqs at a time through the planned logits, from
// the final hidden states the layers left in x.
void CpuBackend::promptLogprobs(const Batch& b) {
  const PromptLogprobs& p = *b.promptLogprobs;
  StepScratch& w = scratch_;
  const int H = m_.hidden, V = m_.vocab, chunk = plan_.maxNumSeqs;
  std::vector<int>& rows = w.rows;
  rows.clear();
  for (int t = 0; t < b.numTokens; t++)
    if (p.targets[t] >= 0) rows.push_back(t);
  for (size_t r0 = 0; r0 < rows.size(); r0 += size_t(chunk)) {
    const int n = int(std::min(rows.size() - r0, size_t(chunk)));
    for (int j = 0; j < n; j++)
      rmsNorm(&w.x[size_t(rows[r0 + j]) * H], weights_.finalNorm.data(), H, m_.rmsEps, &w.xf[size_t(j) * H]);
    weights_.head().matmul(k_, threads_, w.xf.data(), n, H, w.logits.data(), V, false);
    threads_.run(n, [&](int j, int t) {
      const int tok = rows[r0 + size_t(j)];
      rowLogprobs(w.logits.data() + size_t(j) * V, V, 1.f, p.targets[tok], p.numTop[w.idx.seqOf[tok]],
                  p.logprobsOut + size_t(tok) * (1 + kMaxLogprobs), p.topIdsOut + size_t(tok) * kMaxLogprobs,
                  w.logprobScratch[t]);
    });
  }
}

// Sampling with SamplingExtras (common/logit-processing.h): slots rebuilt where asked, rows
// processed and sampled in parallel (each row owns its slot), then each slot counts its token.
Status CpuBackend::sampleWithExtras(const Batch& b, float* logits) {
  const SamplingExtras& x = *b.extras;
  StepScratch& w = scratch_;
  std::vector<PenaltyState*>& st = w.rowStates;
  st.assign(size_t(b.numSeqs), nullptr);
  // Grow the slot table first: a resize moves the states, so no row may hold a pointer before it.
  for (int s = 0; s < b.numSeqs; s++)
    if (x.slot && x.slot[s] >= 0 && size_t(x.slot[s]) >= penalties_.size()) penalties_.resize(size_t(x.slot[s]) + 1);
  for (int s = 0; s < b.numSeqs; s++) {
    const int slot = x.slot ? x.slot[s] : -1;
    if (slot < 0) continue;
    PenaltyState& p = penalties_[size_t(slot)];
    if (x.reset && x.reset[s])
      p.rebuild(x.histTokens + x.histOffsets[s], x.histOffsets[s + 1] - x.histOffsets[s], x.histNumOutput[s]);
    st[size_t(s)] = &p;
  }
  threads_.run(b.numSeqs, [&](int s, int t) {
    float* z = logits + size_t(s) * m_.vocab;
    const int32_t tok = sampleRowExtras(z, m_.vocab, b.temperature[s], b.topP[s], b.seed[s], b.step[s], x, s,
                                        st[size_t(s)], w.sampleScratch[t]);
    b.tokensOut[s] = tok;
    const int n = x.numLogprobs ? x.numLogprobs[s] : -1;
    if (n >= 0 && x.logprobsOut)
      rowLogprobs(z, m_.vocab, b.temperature[s], tok, n, x.logprobsOut + size_t(s) * (1 + kMaxLogprobs),
                  x.topIdsOut + size_t(s) * kMaxLogprobs, w.logprobScratch[t]);
  });
  for (int s = 0; s < b.numSeqs; s++)
    if (st[size_t(s)]) st[size_t(s)]->add(b.tokensOut[s]);
  return Status::Ok();
}

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> makeCpuBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o,
                                        Status* st) {
  if (m.vocab <= 0 || m.hidden <= 0 || m.intermediate <= 0 || m.layers <= 0 || m.heads <= 0 || m.kvHeads <= 0 ||
      m.headDim <= 0 || m.headDim % 2 != 0 || m.heads % m.kvHeads != 0) {
    *st = Status::Error(Code::BAD_ARGUMENT, "invalid model config (sizes must be positive, headDim even, heads % kvHeads == 0)");
    return nullptr;
  }
  if (kv.numPages < 0 || kv.pageSize <= 0) {
    *st = Status::Error(Code::BAD_ARGUMENT, "numPages must be >= 0 (0 = auto) and pageSize positive");
    return nullptr;
  }
  *st = checkPlanOptions(o);
  if (!st->ok()) return nullptr;
  int threads = o.numThreads > 0 ? o.numThreads : int(std::thread::hardware_concurrency());
  try {
    auto b = std::make_unique<cpu::CpuBackend>(m, kv, o, threads > 0 ? threads : 1);
    *st = Status::Ok();
    return b;
  } catch (const std::bad_alloc&) {
    *st = Status::Error(Code::OUT_OF_MEMORY, "cannot allocate the KV pool (" + std::to_string(kv.numPages) +
                                               " pages) or the step scratch (maxBatchTokens " +
                                               std::to_string(o.maxBatchTokens) + ")");
    return nullptr;
  }
}

}  // namespace ms
