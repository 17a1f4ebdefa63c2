#include "model-weights.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <sys/mman.h>

#include "../common/half.h"
#include "../common/model-util.h"
#include "kernels.h"

namespace ms::cpu {

namespace {


// splitmix64: a tiny, good-enough generator; one stream per (tensor, chunk) so the result does
// not depend on the thread count.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

constexpr size_t kChunk = size_t(1) << 18;

}  // namespace

void Matrix::allocate(int rows, int cols, bool isBf16) {
  size_t panels = (size_t(rows) + kPanel - 1) / kPanel;
  size_t elem = isBf16 ? 2 : 4, panelBytes = size_t(cols) * kPanel * elem;
  // Big matrices on 2 MiB-aligned transparent huge pages: fewer TLB misses while streaming them.
  constexpr size_t kHuge = size_t(2) << 20;
  size_t align = panels * panelBytes >= kHuge ? kHuge : 64;
  size_t bytes = (panels * panelBytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  std::memset(static_cast<uint8_t*>(p) + (panels - 1) * panelBytes, 0, panelBytes);  // zero padding rows
  data_.reset(static_cast<uint8_t*>(p));
  rows_ = rows;
  cols_ = cols;
  isBf16_ = isBf16;
}

size_t Matrix::index(int r, int c) const {
  return (size_t(r) / kPanel) * cols_ * kPanel + size_t(c) * kPanel + r % kPanel;
}

void Matrix::widen() {
  if (!isBf16_) return;
  Matrix wide;
  wide.allocate(rows_, cols_, false);
  size_t n = (size_t(rows_) + kPanel - 1) / kPanel * kPanel * cols_;
  const uint16_t* src = bf16();
  float* dst = wide.f32();
  for (size_t i = 0; i < n; i++) dst[i] = bf16ToF32(src[i]);
  *this = std::move(wide);
}

void Matrix::setRows(int row0, int numRows, DType dtype, const void* data) {
  for (int r = 0; r < numRows; r++) {
    size_t src = size_t(r) * cols_;
    if (isBf16_) {  // only ever called with bf16 data (else widen() ran first)
      const uint16_t* s = static_cast<const uint16_t*>(data) + src;
      uint16_t* d = bf16() + index(row0 + r, 0);
      for (int c = 0; c < cols_; c++) d[size_t(c) * kPanel] = s[c];
    } else {
      float* d = f32() + index(row0 + r, 0);
      for (int c = 0; c < cols_; c++) d[size_t(c) * kPanel] = toF32(dtype, data, src + c);
    }
  }
}

void Matrix::rowToF32(int r, float* out) const {
  size_t off = index(r, 0);
  if (isBf16_)
    for (int c = 0; c < cols_; c++) out[c] = bf16ToF32(bf16()[off + size_t(c) * kPanel]);
  else
    for (int c = 0; c < cols_; c++) out[c] = f32()[off + size_t(c) * kPanel];
}

void Matrix::matmul(const Kernels& k, ThreadPool& pool, const float* X, int T, int ldx, float* Y, int ldy,
                    bool accumulate) const {
  // Tasks are runs of 4 panels or more (the register tiles take up to 4); small products run alone.
  double work = double(rows_) * cols_ * T;
  int numPanels = (rows_ + kPanel - 1) / kPanel;
  int maxTasks = work < 65536 ? 1 : pool.size() * 4;
  int numBlocks = (numPanels + 3) / 4;
  int numTasks = numBlocks < maxTasks ? numBlocks : maxTasks;
  int blocksPerTask = (numBlocks + numTasks - 1) / numTasks;
  pool.run(numTasks, [&](int task, int) {
    int p0 = task * blocksPerTask * 4, p1 = p0 + blocksPerTask * 4;
    if (p1 > numPanels) p1 = numPanels;
    if (p0 >= p1) return;
    if (isBf16_)
      k.gemmBf16(X, T, ldx, bf16(), cols_, rows_, Y, ldy, p0, p1, accumulate);
    else
      k.gemmF32(X, T, ldx, f32(), cols_, rows_, Y, ldy, p0, p1, accumulate);
  });
}

ModelWeights::ModelWeights(const ModelConfig& m) : layers(m.layers), m_(m) {
  int q = m.heads * m.headDim, kv = m.kvHeads * m.headDim;
  auto addMatrix = [&](const std::string& name, Matrix* mat, int row0, int totalRows, int rows, int cols) {
    names_.push_back(name);
    Slot s;
    s.matrix = mat;
    s.row0 = row0;
    s.totalRows = totalRows;
    s.rows = rows;
    s.cols = cols;
    slots_[name] = s;
  };
  auto addVector = [&](const std::string& name, std::vector<float>* v, int row0, int totalRows, int rows, bool isBias) {
    names_.push_back(name);
    Slot s;
    s.norm = v;
    s.row0 = row0;
    s.totalRows = totalRows;
    s.rows = rows;
    s.isBias = isBias;
    v->assign(size_t(totalRows), 0.f);
    slots_[name] = s;
  };
  auto addNorm = [&](const std::string& name, std::vector<float>* v) { addVector(name, v, 0, m.hidden, m.hidden, false); };
  addMatrix("model.embed_tokens.weight", &embed, 0, m.vocab, m.vocab, m.hidden);
  for (int l = 0; l < m.layers; l++) {
    LayerWeights& L = layers[l];
    std::string p = "model.layers." + std::to_string(l) + ".";
    addNorm(p + "input_layernorm.weight", &L.attnNorm);
    addMatrix(p + "self_attn.q_proj.weight", &L.qkv, 0, q + 2 * kv, q, m.hidden);
    addMatrix(p + "self_attn.k_proj.weight", &L.qkv, q, q + 2 * kv, kv, m.hidden);
    addMatrix(p + "self_attn.v_proj.weight", &L.qkv, q + kv, q + 2 * kv, kv, m.hidden);
    if (m.qkvBias) {
      addVector(p + "self_attn.q_proj.bias", &L.qkvBias, 0, q + 2 * kv, q, true);
      addVector(p + "self_attn.k_proj.bias", &L.qkvBias, q, q + 2 * kv, kv, true);
      addVector(p + "self_attn.v_proj.bias", &L.qkvBias, q + kv, q + 2 * kv, kv, true);
    }
    if (m.qkNorm) {
      addVector(p + "self_attn.q_norm.weight", &L.qNorm, 0, m.headDim, m.headDim, false);
      addVector(p + "self_attn.k_norm.weight", &L.kNorm, 0, m.headDim, m.headDim, false);
    }
    addMatrix(p + "self_attn.o_proj.weight", &L.o, 0, m.hidden, m.hidden, q);
    addNorm(p + "post_attention_layernorm.weight", &L.mlpNorm);
    addMatrix(p + "mlp.gate_proj.weight", &L.gateUp, 0, 2 * m.intermediate, m.intermediate, m.hidden);
    addMatrix(p + "mlp.up_proj.weight", &L.gateUp, m.intermediate, 2 * m.intermediate, m.intermediate, m.hidden);
    addMatrix(p + "mlp.down_proj.weight", &L.down, 0, m.hidden, m.hidden, m.intermediate);
  }
  addNorm("model.norm.weight", &finalNorm);
  if (!m.tiedEmbeddings) addMatrix("lm_head.weight", &lmHead, 0, m.vocab, m.vocab, m.hidden);
}

Status ModelWeights::loadRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                              int64_t rowBegin, const void* data, size_t numBytes) {
  auto it = slots_.find(name);
  if (it == slots_.end()) return Status::Error(Code::BAD_CHECKPOINT, "unknown tensor '" + name + "'");
  Slot& s = it->second;
  std::vector<int64_t> want = s.norm ? std::vector<int64_t>{s.rows} : std::vector<int64_t>{s.rows, s.cols};
  int64_t numRows = 0;
  Status st = checkRowPart(name, want, shape, dtype, rowBegin, numBytes, &numRows);
  if (!st.ok()) return st;
  bool isComplete = false;
  st = ledger_.add(name, rowBegin, rowBegin + numRows, s.rows, &isComplete);
  if (!st.ok()) return st;
  if (s.norm) {
    for (int64_t i = 0; i < numRows; i++) (*s.norm)[s.row0 + rowBegin + i] = toF32(dtype, data, size_t(i));
  } else {
    Matrix& mat = *s.matrix;
    if (mat.empty())
      mat.allocate(s.totalRows, int(s.cols), dtype == DType::BF16);
    else if (mat.isBf16() && dtype != DType::BF16)
      mat.widen();
    if (!mat.isBf16() || dtype == DType::BF16) {
      mat.setRows(s.row0 + int(rowBegin), int(numRows), dtype, data);
    } else {  // bf16 storage, f32/f16 data: impossible after widen(); kept for clarity
      return Status::Error(Code::NATIVE_ERROR, "tensor '" + name + "': dtype mix");
    }
  }
  if (isComplete) loaded_.insert(name);
  return Status::Ok();
}

Status ModelWeights::randomInit(ThreadPool& pool, uint64_t seed, float std) {
  // Every matrix bf16 (like the fixtures' bf16 checkpoints); norms 1 + N(0, 0.2*std/0.08) rounded to bf16.
  for (auto& [name, s] : slots_)
    if (s.matrix && (s.matrix->empty() || !s.matrix->isBf16())) s.matrix->allocate(s.totalRows, int(s.cols), true);
  struct Job {
    Slot* slot;
    size_t tensor, begin, end;
  };
  std::vector<Job> jobs;
  for (size_t t = 0; t < names_.size(); t++) {
    Slot& s = slots_[names_[t]];
    size_t numel = s.norm ? size_t(s.rows) : size_t(s.rows) * s.cols;
    for (size_t b = 0; b < numel; b += kChunk) jobs.push_back({&s, t, b, b + kChunk < numel ? b + kChunk : numel});
  }
  pool.run(int(jobs.size()), [&](int j, int) {
    const Job& job = jobs[j];
    Slot& slot = *job.slot;
    Rng rng{seed * 0xD1B54A32D192ED03ull + job.tensor * 0x9E3779B97F4A7C15ull + job.begin / kChunk};
    rng.next();
    bool isNorm = slot.norm != nullptr;
    float sd = isNorm ? 0.2f * std / 0.08f : std, mean = isNorm && !slot.isBias ? 1.f : 0.f;
    size_t cols = isNorm ? size_t(slot.rows) : size_t(slot.cols);
    size_t r = job.begin / cols, c = job.begin % cols;  // element (r, c) of the tensor's view
    uint16_t* row = isNorm ? nullptr : slot.matrix->bf16() + slot.matrix->index(slot.row0 + int(r), 0);
    float z[2];
    for (size_t i = job.begin; i < job.end; i++) {
      if ((i - job.begin) % 2 == 0) {  // Box-Muller: two normals per pair of uniforms
        float u1 = float((rng.next() >> 40) + 1) * 0x1.0p-24f, u2 = float(rng.next() >> 40) * 0x1.0p-24f;
        float rad = std::sqrt(-2.f * std::log(u1)), a = 6.2831853f * u2;
        z[0] = rad * std::cos(a);
        z[1] = rad * std::sin(a);
      }
      uint16_t h = f32ToBf16(z[(i - job.begin) % 2] * sd + mean);
      if (isNorm) {
        (*slot.norm)[slot.row0 + i] = bf16ToF32(h);
      } else {
        row[c * kPanel] = h;
        if (++c == cols && i + 1 < job.end) {
          c = 0;
          row = slot.matrix->bf16() + slot.matrix->index(slot.row0 + int(++r), 0);
        }
      }
    }
  });
  for (auto& n : names_) loaded_.insert(n);
  return Status::Ok();
}

Status ModelWeights::finalize() const {
  for (const auto& n : names_)
    if (!loaded_.count(n)) return Status::Error(Code::BAD_CHECKPOINT, "missing tensor '" + n + "'");
  return Status::Ok();
}

}  // namespace ms::cpu
