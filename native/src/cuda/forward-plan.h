// Host side of one forward: which token goes where, packed into one int32 buffer that a single
// copy moves to the device. The layout depends only on the counts, so a CUDA graph captured for
// a (batch, context) bucket keeps valid pointers when later batches are packed into it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../backend.h"
#include "kernels.h"

namespace ms::cuda {

// Offsets (in int32 elements) of the arrays in the packed buffer.
struct MetaLayout {
  int numTokens = 0, numSeqs = 0, ptStride = 0, numRows = 0, numDecode = 0, numTiles = 0;
  size_t tokens = 0;     // (numTokens,) token ids
  size_t pos = 0;        // (numTokens,) absolute positions
  size_t seqOf = 0;      // (numTokens,) sequence of each token
  size_t rows = 0;       // (numRows,) tokens whose logits are returned
  size_t pageTable = 0;  // (numSeqs, ptStride)
  size_t decode = 0;     // (numDecode,) tokens attended by the decode kernel
  size_t tiles = 0;      // (numTiles, 4) PrefillTile, 16-byte aligned
  int numSampled = 0;    // rows sampled on the device: 0, or numRows (Batch::tokensOut)
  size_t sampleParams = 0;  // (numSampled, kSampleParamInts) see cuda/sampling.h
  size_t sampled = 0;       // (numSampled,) sampled token ids, written by the device
  int numPromptRows = 0;    // tokens with prompt logprobs (Batch::promptLogprobs targets >= 0)
  size_t promptRows = 0;    // (numPromptRows,) their token indexes
  size_t promptTargets = 0; // (numPromptRows,) the ids whose logprobs they give
  size_t promptTop = 0;     // (numPromptRows,) top entries of each
  size_t promptOut = 0;     // (numPromptRows, kLogprobInts) written by the device
  size_t total = 0;
};
MetaLayout metaLayout(int numTokens, int numSeqs, int ptStride, int numRows, int numDecode, int numTiles,
                      int numSampled = 0, int numPromptRows = 0);

// Device pointers into a packed buffer.
struct DeviceMeta {
  MetaLayout lay;
  const int32_t* tokens = nullptr;
  const int32_t* rows = nullptr;
  const int32_t* decode = nullptr;
  const PrefillTile* tiles = nullptr;
  TokenMeta token;
};
DeviceMeta deviceMeta(const MetaLayout& lay, const int32_t* base);

// Eager plan of any batch: tokens of one-token sequences go to the decode kernel, longer
// sequences to the prefill kernel in tiles of kPrefillTileRows. Page tables are packed tight:
// ptStride is the most pages any sequence's context needs (not the caller's maxPagesPerSeq), so
// the metadata is bounded by the memory plan.
struct EagerPlan {
  MetaLayout lay;
  int maxDecodeCtx = 0;  // longest context among decode tokens
};
EagerPlan planEager(const Batch& b, int pageSize);
void packEager(const Batch& b, const EagerPlan& p, int32_t* dst);
// After the step: the device's prompt logprob rows (in the packed buffer `src`, back on the host)
// into b.promptLogprobs' outputs.
void unpackPromptLogprobs(const Batch& b, const MetaLayout& l, const int32_t* src);

// Graph plan: a pure-decode batch (every seqLen 1) padded to `bucket` sequences. Padding rows
// decode token 0 at position 0 into `dummyPage`; page tables are (bucket, ptStride), padded
// with dummyPage. With b.tokensOut the layout has sampling parameters (padding rows greedy).
MetaLayout graphLayout(int bucket, int ptStride, bool sampling = false);
// The sampling part alone (parameters of rows [0, numSeqs), then the sampled ids): a gated step on
// a graph (the logits graph has none) packs it into the eager metadata.
MetaLayout packSamplingOnly(const Batch& b, int32_t* dst);
void packGraph(const Batch& b, int bucket, int ptStride, int pageSize, int dummyPage, int32_t* dst);

}  // namespace ms::cuda
