// Weights of the CPU backend: storage, loading from checkpoint tensors, seeded random init.
// Matrices keep the checkpoint's bf16 bits when it has them (exact, half the memory traffic of
// f32) and are f32 otherwise (f16 and f32 checkpoints); compute is always f32.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../backend.h"
#include "../common/model-util.h"
#include "kernels.h"
#include "thread-pool.h"

namespace ms::cpu {

// A (rows, cols) weight, f32 or bf16 bits, packed in panels of kPanel rows (kernels.h):
//   (ceil(rows / kPanel), cols, kPanel), rows past `rows` zero.
class Matrix {
 public:
  void allocate(int rows, int cols, bool isBf16);
  bool empty() const { return !data_; }
  bool isBf16() const { return isBf16_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  const float* f32() const { return reinterpret_cast<const float*>(data_.get()); }
  const uint16_t* bf16() const { return reinterpret_cast<const uint16_t*>(data_.get()); }
  float* f32() { return reinterpret_cast<float*>(data_.get()); }
  uint16_t* bf16() { return reinterpret_cast<uint16_t*>(data_.get()); }
  // Converts bf16 storage to f32 in place (when parts of one fused matrix differ in dtype).
  void widen();
  // Copies `numRows` rows of a checkpoint tensor into rows [row0, row0 + numRows).
  void setRows(int row0, int numRows, DType dtype, const void* data);
  // Offset of element (r, c) in the packed storage.
  size_t index(int r, int c) const;
  // Row r as f32 into out (cols,).
  void rowToF32(int r, float* out) const;
  // Y[t, :] (+)= X[t, :] . this^T over all rows, panels split across the pool.
  void matmul(const Kernels& k, ThreadPool& pool, const float* X, int T, int ldx, float* Y, int ldy,
              bool accumulate) const;

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  int rows_ = 0, cols_ = 0;
  bool isBf16_ = false;
};

struct LayerWeights {
  std::vector<float> attnNorm;  // (hidden,)
  std::vector<float> mlpNorm;   // (hidden,)
  Matrix qkv;                   // (heads*headDim + 2*kvHeads*headDim, hidden): q, k, v rows stacked
  std::vector<float> qkvBias;   // (heads*headDim + 2*kvHeads*headDim,) q, k, v biases; empty: none (Qwen2 only)
  std::vector<float> qNorm;     // (headDim,) per-head RMSNorm of q before RoPE; empty: none (Qwen3 only)
  std::vector<float> kNorm;     // (headDim,) the same for k
  Matrix o;                     // (hidden, heads*headDim)
  Matrix gateUp;                // (2*intermediate, hidden): gate rows then up rows
  Matrix down;                  // (hidden, intermediate)
};

class ModelWeights {
 public:
  explicit ModelWeights(const ModelConfig& m);
  // Rows [rowBegin, ...) of one checkpoint tensor (Backend::loadTensorRows).
  Status loadRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape, int64_t rowBegin,
                  const void* data, size_t numBytes);
  Status randomInit(ThreadPool& pool, uint64_t seed, float std);
  Status finalize() const;

  Matrix embed;                 // (vocab, hidden)
  Matrix lmHead;                // (vocab, hidden); empty when tied (use embed)
  std::vector<float> finalNorm; // (hidden,)
  std::vector<LayerWeights> layers;
  const Matrix& head() const { return lmHead.empty() ? embed : lmHead; }

 private:
  // Where a checkpoint tensor goes: rows [row0, row0 + rows) of a matrix, or elements
  // [row0, row0 + rows) of a vector (a norm weight, or one part of the fused q|k|v bias).
  struct Slot {
    Matrix* matrix = nullptr;
    int row0 = 0, totalRows = 0;
    std::vector<float>* norm = nullptr;
    bool isBias = false;  // random init: N(0, ...) instead of 1 + N(0, ...)
    int64_t rows = 0, cols = 0;  // expected [out, in] (cols 0 for a norm)
  };
  ModelConfig m_;
  std::vector<std::string> names_;  // load order, for finalize and randomInit
  std::map<std::string, Slot> slots_;
  std::set<std::string> loaded_;
  RowLedger ledger_;  // rows of each tensor loaded so far
};

}  // namespace ms::cpu
