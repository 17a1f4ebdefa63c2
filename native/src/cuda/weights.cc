#include "weights.h"

#include <sstream>

#include "../common/half.h"
#include "../common/model-util.h"
#include "check.h"

namespace ms::cuda {
namespace {


}  // namespace

DeviceWeights::DeviceWeights(const ModelConfig& m) : layers(m.layers) {
  const int64_t H = m.hidden, q = int64_t(m.heads) * m.headDim, kv = int64_t(m.kvHeads) * m.headDim;
  const int64_t I = m.intermediate;
  // First pass lays out offsets (256-byte aligned), second pass fills pointers.
  struct Pending {
    std::string name;
    size_t offset;
    Slot slot;
    void** target;  // where the buffer's base pointer goes (first tensor of a fused buffer)
  };
  std::vector<Pending> pend;
  size_t off = 0;
  auto buffer = [&](size_t bytes) {
    size_t at = off;
    off += (bytes + 255) / 256 * 256;
    return at;
  };
  auto matrix = [&](const std::string& name, size_t base, int64_t row0, int64_t rows, int64_t cols, void** target,
                    int rowStep = 1) {
    Slot s;
    s.rows = rows;
    s.cols = cols;
    s.rowStep = rowStep;
    pend.push_back({name, base + size_t(row0 * cols) * 2, s, row0 == 0 ? target : nullptr});
  };
  // f32 vectors: a norm weight, or part [row0, row0 + rows) of a fused bias at `base`.
  auto vector = [&](const std::string& name, size_t base, int64_t row0, int64_t rows, void** target, bool isBias) {
    Slot s;
    s.isNorm = true;
    s.isBias = isBias;
    s.rows = rows;
    pend.push_back({name, base + size_t(row0) * 4, s, row0 == 0 ? target : nullptr});
  };
  auto norm = [&](const std::string& name, void** target, int64_t n) { vector(name, buffer(size_t(n) * 4), 0, n, target, false); };
  matrix("model.embed_tokens.weight", buffer(size_t(m.vocab * H) * 2), 0, m.vocab, H, reinterpret_cast<void**>(&embed));
  for (int l = 0; l < m.layers; l++) {
    LayerWeights& L = layers[l];
    std::string p = "model.layers." + std::to_string(l) + ".";
    norm(p + "input_layernorm.weight", reinterpret_cast<void**>(&L.attnNorm), H);
    size_t qkvBuf = buffer(size_t((q + 2 * kv) * H) * 2);
    matrix(p + "self_attn.q_proj.weight", qkvBuf, 0, q, H, reinterpret_cast<void**>(&L.qkv));
    matrix(p + "self_attn.k_proj.weight", qkvBuf, q, kv, H, nullptr);
    matrix(p + "self_attn.v_proj.weight", qkvBuf, q + kv, kv, H, nullptr);
    if (m.qkvBias) {
      size_t biasBuf = buffer(size_t(q + 2 * kv) * 4);
      vector(p + "self_attn.q_proj.bias", biasBuf, 0, q, reinterpret_cast<void**>(&L.qkvBias), true);
      vector(p + "self_attn.k_proj.bias", biasBuf, q, kv, nullptr, true);
      vector(p + "self_attn.v_proj.bias", biasBuf, q + kv, kv, nullptr, true);
    }
    if (m.qkNorm) {
      norm(p + "self_attn.q_norm.weight", reinterpret_cast<void**>(&L.qNorm), m.headDim);
      norm(p + "self_attn.k_norm.weight", reinterpret_cast<void**>(&L.kNorm), m.headDim);
    }
    matrix(p + "self_attn.o_proj.weight", buffer(size_t(H * q) * 2), 0, H, q, reinterpret_cast<void**>(&L.o));
    norm(p + "post_attention_layernorm.weight", reinterpret_cast<void**>(&L.mlpNorm), H);
    size_t guBuf = buffer(size_t(2 * I * H) * 2);
    matrix(p + "mlp.gate_proj.weight", guBuf, 0, I, H, reinterpret_cast<void**>(&L.gateUp), 2);
    matrix(p + "mlp.up_proj.weight", guBuf, 1, I, H, nullptr, 2);
    matrix(p + "mlp.down_proj.weight", buffer(size_t(H * I) * 2), 0, H, I, reinterpret_cast<void**>(&L.down));
  }
  norm("model.norm.weight", reinterpret_cast<void**>(&finalNorm), H);
  if (!m.tiedEmbeddings)
    matrix("lm_head.weight", buffer(size_t(m.vocab * H) * 2), 0, m.vocab, H, reinterpret_cast<void**>(&head));

  bytes_ = off;
  MS_CUDA_CHECK(cudaMalloc(&mem_, bytes_));
  for (Pending& p : pend) {
    p.slot.dst = static_cast<char*>(mem_) + p.offset;
    if (p.target) *p.target = p.slot.dst;
    names_.push_back(p.name);
    slots_[p.name] = p.slot;
  }
  if (m.tiedEmbeddings) head = embed;
}

DeviceWeights::~DeviceWeights() {
  if (mem_) cudaFree(mem_);
}

Status DeviceWeights::loadRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                               int64_t rowBegin, const void* data, size_t numBytes) {
  auto it = slots_.find(name);
  if (it == slots_.end()) return Status::Error(Code::BAD_CHECKPOINT, "unknown tensor '" + name + "'");
  const Slot& s = it->second;
  std::vector<int64_t> want = s.isNorm ? std::vector<int64_t>{s.rows} : std::vector<int64_t>{s.rows, s.cols};
  int64_t numRows = 0;
  Status st = checkRowPart(name, want, shape, dtype, rowBegin, numBytes, &numRows);
  if (!st.ok()) return st;
  bool isComplete = false;
  st = ledger_.add(name, rowBegin, rowBegin + numRows, s.rows, &isComplete);
  if (!st.ok()) return st;
  const size_t numel = s.isNorm ? size_t(numRows) : size_t(numRows * s.cols);
  if (s.isNorm) {
    std::vector<float> v(numel);
    for (size_t i = 0; i < numel; i++) v[i] = toF32(dtype, data, i);
    MS_CUDA_CHECK(cudaMemcpy(static_cast<float*>(s.dst) + rowBegin, v.data(), numel * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> v;
    const void* src = data;
    if (dtype != DType::BF16) {
      v.resize(numel);
      for (size_t i = 0; i < numel; i++) v[i] = f32ToBf16(toF32(dtype, data, i));
      src = v.data();
    }
    const size_t rowBytes = size_t(s.cols) * 2;
    char* dst = static_cast<char*>(s.dst) + size_t(rowBegin) * s.rowStep * rowBytes;
    MS_CUDA_CHECK(cudaMemcpy2D(dst, rowBytes * s.rowStep, src, rowBytes, rowBytes, size_t(numRows),
                               cudaMemcpyHostToDevice));
  }
  if (isComplete) loaded_.insert(name);
  return Status::Ok();
}

void DeviceWeights::randomInit(uint64_t seed, float std, cudaStream_t st) {
  bf16* tmp = nullptr;  // interleaved tensors are drawn here, then spread to their rows
  for (size_t t = 0; t < names_.size(); t++) {
    const Slot& s = slots_[names_[t]];
    if (s.isNorm) {
      randomNormalF32(static_cast<float*>(s.dst), size_t(s.rows), seed, t, s.isBias ? 0.f : 1.f, 0.2f * std / 0.08f, st);
    } else if (s.rowStep == 1) {
      randomNormalBf16(static_cast<bf16*>(s.dst), size_t(s.rows * s.cols), seed, t, 0.f, std, st);
    } else {
      if (!tmp) MS_CUDA_CHECK(cudaMalloc(&tmp, size_t(s.rows * s.cols) * 2));
      randomNormalBf16(tmp, size_t(s.rows * s.cols), seed, t, 0.f, std, st);
      const size_t rowBytes = size_t(s.cols) * 2;
      MS_CUDA_CHECK(cudaMemcpy2DAsync(s.dst, rowBytes * s.rowStep, tmp, rowBytes, rowBytes, size_t(s.rows),
                                      cudaMemcpyDeviceToDevice, st));
    }
  }
  MS_CUDA_CHECK(cudaStreamSynchronize(st));
  if (tmp) cudaFree(tmp);
  for (auto& n : names_) loaded_.insert(n);
}

Status DeviceWeights::finalize() const {
  for (const auto& n : names_)
    if (!loaded_.count(n)) return Status::Error(Code::BAD_CHECKPOINT, "missing tensor '" + n + "'");
  return Status::Ok();
}

}  // namespace ms::cuda
