// The CPU backend: f32 compute of Hugging Face LlamaForCausalLM over a paged KV pool.
//
// KV pool layout equals the wire layout, so readPages/writePages are plain copies:
//   threads_: (numPages, layers, 2 [K, V], pageSize, kvHeads, headDim) f32
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include "../backend.h"
#include "attention.h"
#include "kernels.h"
#include "model-weights.h"
#include "thread-pool.h"
#include "../common/model-util.h"
#include "../common/sampling.h"

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

class CpuBackend : public Backend {
 public:
  CpuBackend(const ModelConfig& m, const KvConfig& kv, int numThreads, CpuIsa isa)
      : m_(m), kv_(kv), k_(kernelsFor(isa)), threads_(numThreads), weights_(m), invFreq_(ropeInvFreq(m)) {
    pageFloats_ = size_t(m.layers) * 2 * kv.pageSize * m.kvHeads * m.headDim;
    size_t bytes = size_t(kv.numPages) * pageFloats_ * 4;
    kvPool_ = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!kvPool_) throw std::bad_alloc();
    std::memset(kvPool_, 0, bytes);
  }
  ~CpuBackend() override { std::free(kvPool_); }

  Status loadTensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                    size_t numBytes) override {
    return guarded([&] { return weights_.load(name, dtype, shape, data, numBytes); });
  }
  Status randomInit(uint64_t seed, float std) override {
    return guarded([&] { return weights_.randomInit(threads_, seed, std); });
  }
  Status finalize() override { return weights_.finalize(); }
  Status forward(const Batch& b, float* logitsOut) override {
    Status st = checkBatchSampling(b, logitsOut);
    if (!st.ok()) return st;
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
  Status run(const Batch& b, float* logitsOut);

  ModelConfig m_;
  KvConfig kv_;
  const Kernels& k_;  // the instruction set chosen at construction (BackendOptions::cpuIsa)
  ThreadPool threads_;
  ModelWeights weights_;
  std::vector<float> invFreq_;  // (headDim/2,)
  size_t pageFloats_ = 0;
  float* kvPool_ = nullptr;    // see the layout at the top of the file
};

Status CpuBackend::run(const Batch& b, float* logitsOut) {
  const int N = b.numTokens, H = m_.hidden, hd = m_.headDim, half = hd / 2, I = m_.intermediate;
  const int qDim = m_.heads * hd, kvDim = m_.kvHeads * hd, qkvDim = qDim + 2 * kvDim;
  const size_t layerFloats = size_t(2) * kv_.pageSize * kvDim;  // one layer of one page

  // Per token: its sequence and position.
  BatchIndex idx;
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

  std::vector<float> x(size_t(N) * H);         // (N, hidden) residual stream
  std::vector<float> xb(size_t(N) * H);        // (N, hidden) normed input of a block
  std::vector<float> qkv(size_t(N) * qkvDim); // (N, q | k | v)
  std::vector<float> att(size_t(N) * qDim);    // (N, heads*headDim)
  std::vector<float> gu(size_t(N) * 2 * I);    // (N, gate | up)
  std::vector<float> hid(size_t(N) * I);       // (N, intermediate)
  std::vector<float> cosT(size_t(N) * half), sinT(size_t(N) * half);  // (N, headDim/2)

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
    L.qkv.matmul(k_, threads_, xb.data(), N, H, qkv.data(), qkvDim, false);
    for (int i = 0; i < N; i++) {
      float* row = &qkv[size_t(i) * qkvDim];
      const float* c = &cosT[size_t(i) * half];
      const float* sn = &sinT[size_t(i) * half];
      for (int h = 0; h < m_.heads + m_.kvHeads; h++) rope(row + h * hd, c, sn, half);
      int p = posOf[i];
      float* dst = page(b.pageTables[size_t(seqOf[i]) * b.maxPagesPerSeq + p / kv_.pageSize]) + l * layerFloats +
                   size_t(p % kv_.pageSize) * kvDim;
      std::memcpy(dst, row + qDim, kvDim * 4);                                  // K
      std::memcpy(dst + size_t(kv_.pageSize) * kvDim, row + qDim + kvDim, kvDim * 4);  // V
    }
    attendLayer(k_, threads_, shape, b, idx, kvPool_, l, qkv.data(), qkvDim, att.data());
    L.o.matmul(k_, threads_, att.data(), N, qDim, x.data(), H, true);

    // MLP block: norm, gate/up, silu(gate) * up, down + residual.
    for (int i = 0; i < N; i++) rmsNorm(&x[size_t(i) * H], L.mlpNorm.data(), H, m_.rmsEps, &xb[size_t(i) * H]);
    L.gateUp.matmul(k_, threads_, xb.data(), N, H, gu.data(), 2 * I, false);
    for (int i = 0; i < N; i++) {
      const float* g = &gu[size_t(i) * 2 * I];
      float* h = &hid[size_t(i) * I];
      for (int j = 0; j < I; j++) h[j] = g[j] / (1.f + std::exp(-g[j])) * g[I + j];
    }
    L.down.matmul(k_, threads_, hid.data(), N, I, x.data(), H, true);
  }

  // Final norm on the rows that need logits, then the LM head.
  std::vector<int> rows;
  if (b.allLogits) {
    for (int i = 0; i < N; i++) rows.push_back(i);
  } else {
    for (int s = 0, end = 0; s < b.numSeqs; s++) rows.push_back((end += b.seqLens[s]) - 1);
  }
  std::vector<float> xf(rows.size() * H);  // (rows, hidden)
  for (size_t r = 0; r < rows.size(); r++)
    rmsNorm(&x[size_t(rows[r]) * H], weights_.finalNorm.data(), H, m_.rmsEps, &xf[r * H]);
  std::vector<float> ownLogits;  // (numSeqs, vocab) when only tokens are wanted
  float* logits = logitsOut;
  if (!logits) {
    ownLogits.resize(rows.size() * size_t(m_.vocab));
    logits = ownLogits.data();
  }
  weights_.head().matmul(k_, threads_, xf.data(), int(rows.size()), H, logits, m_.vocab, false);
  if (b.tokensOut) {  // one row per task; each thread keeps its own weights scratch
    std::vector<std::vector<uint32_t>> scratch(threads_.size());
    threads_.run(b.numSeqs, [&](int s, int t) {
      b.tokensOut[s] = sampleRow(logits + size_t(s) * m_.vocab, m_.vocab, b.temperature[s], b.topP[s], b.seed[s],
                                 b.step[s], scratch[t]);
    });
  }
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
  if (kv.numPages <= 0 || kv.pageSize <= 0) {
    *st = Status::Error(Code::BAD_ARGUMENT, "numPages and pageSize must be positive");
    return nullptr;
  }
  int threads = o.numThreads > 0 ? o.numThreads : int(std::thread::hardware_concurrency());
  try {
    auto b = std::make_unique<cpu::CpuBackend>(m, kv, threads > 0 ? threads : 1, o.cpuIsa);
    *st = Status::Ok();
    return b;
  } catch (const std::bad_alloc&) {
    *st = Status::Error(Code::OUT_OF_MEMORY, "cannot allocate the KV pool (" + std::to_string(kv.numPages) + " pages)");
    return nullptr;
  }
}

}  // namespace ms
