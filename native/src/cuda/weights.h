// Device weights of the CUDA backend: one allocation, bf16 matrices (q|k|v and gate|up fused,
// Hugging Face [out, in] rows), f32 norm vectors. Loading converts any checkpoint dtype on the host.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../backend.h"
#include "../common/model-util.h"
#include "kernels.h"

namespace ms::cuda {

struct LayerWeights {
  float* attnNorm = nullptr;  // (hidden,)
  float* mlpNorm = nullptr;   // (hidden,)
  bf16* qkv = nullptr;        // (heads*headDim + 2*kvHeads*headDim, hidden): q, k, v rows
  float* qkvBias = nullptr;   // (heads*headDim + 2*kvHeads*headDim,) q, k, v biases; null: none (Qwen2)
  float* qNorm = nullptr;     // (headDim,) per-head q RMSNorm before RoPE; null: none (Qwen3)
  float* kNorm = nullptr;     // (headDim,) the same for k
  bf16* o = nullptr;          // (hidden, heads*headDim)
  bf16* gateUp = nullptr;     // (2*intermediate, hidden): rows interleaved, gate_j at 2j, up_j at 2j + 1
  bf16* down = nullptr;       // (hidden, intermediate)
};

class DeviceWeights {
 public:
  // Allocates every tensor (throws CudaError on failure).
  explicit DeviceWeights(const ModelConfig& m);
  ~DeviceWeights();
  DeviceWeights(const DeviceWeights&) = delete;
  DeviceWeights& operator=(const DeviceWeights&) = delete;

  // Rows [rowBegin, ...) of one checkpoint tensor (Backend::loadTensorRows): converted on the host
  // when not bf16 (norms and biases: to f32), then one (strided, for gate|up) copy to the device.
  // From page-locked memory (allocPinnedHost) the copy is DMA at the link's rate.
  Status loadRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape, int64_t rowBegin,
                  const void* data, size_t numBytes);
  // Matrices N(0, std), norms 1 + N(0, 0.2 * std / 0.08), each rounded to bf16; one counter-based
  // stream per tensor, so the weights depend on the seed alone.
  void randomInit(uint64_t seed, float std, cudaStream_t s);
  Status finalize() const;
  size_t bytes() const { return bytes_; }

  bf16* embed = nullptr;       // (vocab, hidden)
  bf16* head = nullptr;        // (vocab, hidden): lm_head, or embed when tied
  float* finalNorm = nullptr;  // (hidden,)
  std::vector<LayerWeights> layers;

 private:
  struct Slot {
    void* dst = nullptr;     // first element of this tensor in its (fused) buffer
    bool isNorm = false;         // an f32 vector (norm weight or bias)
    bool isBias = false;         // random init: N(0, ...) instead of 1 + N(0, ...)
    int64_t rows = 0, cols = 0;  // expected [out, in]; cols 0 for a norm
    int rowStep = 1;             // rows of the buffer from one tensor row to the next (2: interleaved)
  };
  std::vector<std::string> names_;  // checkpoint order: randomInit streams, finalize
  std::map<std::string, Slot> slots_;
  std::set<std::string> loaded_;
  RowLedger ledger_;  // rows of each tensor loaded so far
  void* mem_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace ms::cuda
