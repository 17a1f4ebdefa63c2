// Causal grouped-query attention of one layer over the paged KV pool, for a ragged batch.
// Short chunks (decode steps) use the direct kernel; longer prefill chunks gather their
// sequence's K and V into GEMM panels and run scores = Q K^T and out = P V as two GEMMs.
#pragma once
#include <cstdint>
#include <vector>

#include "../backend.h"
#include "kernels.h"
#include "thread-pool.h"

namespace ms::cpu {

struct AttentionShape {
  int heads = 0, kvHeads = 0, headDim = 0, pageSize = 0;
  size_t pageFloats = 0;   // floats of one page (all layers)
  size_t layerFloats = 0;  // floats of one layer of one page: K then V, each (pageSize, kvHeads, headDim)
};

// Per-token bookkeeping of the batch, shared by every layer.
struct BatchIndex {
  std::vector<int> seqOf, posOf;  // (numTokens,)
  std::vector<int> firstToken;    // (numSeqs,) index of each sequence's first token
  int maxLen = 0;                 // longest attended length (max pos + 1)
};

// qkv: (numTokens, qkvDim) with RoPE applied, K/V of these tokens already in their pages;
// att: (numTokens, heads * headDim) output. pool: the KV pool; layer selects the layer.
void attendLayer(const Kernels& K, ThreadPool& pool, const AttentionShape& s, const Batch& b, const BatchIndex& idx, const float* kvPool,
                 int layer, const float* qkv, int qkvDim, float* att);

}  // namespace ms::cpu
