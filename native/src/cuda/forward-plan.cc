#include "forward-plan.h"

#include <cstring>

#include "logit-processing.h"
#include "sampling.h"

namespace ms::cuda {

MetaLayout metaLayout(int numTokens, int numSeqs, int ptStride, int numRows, int numDecode, int numTiles,
                      int numSampled, int numPromptRows) {
  MetaLayout l;
  l.numTokens = numTokens;
  l.numSeqs = numSeqs;
  l.ptStride = ptStride;
  l.numRows = numRows;
  l.numDecode = numDecode;
  l.numTiles = numTiles;
  size_t off = 0;
  l.tokens = off, off += numTokens;
  l.pos = off, off += numTokens;
  l.seqOf = off, off += numTokens;
  l.rows = off, off += numRows;
  l.pageTable = off, off += size_t(numSeqs) * ptStride;
  l.decode = off, off += numDecode;
  off = (off + 3) / 4 * 4;
  l.tiles = off, off += size_t(numTiles) * 4;
  l.numSampled = numSampled;
  l.sampleParams = off, off += size_t(numSampled) * kSampleParamInts;
  l.sampled = off, off += numSampled;
  l.numPromptRows = numPromptRows;
  l.promptRows = off, off += numPromptRows;
  l.promptTargets = off, off += numPromptRows;
  l.promptTop = off, off += numPromptRows;
  l.promptOut = off, off += size_t(numPromptRows) * kLogprobInts;
  l.total = off;
  return l;
}

DeviceMeta deviceMeta(const MetaLayout& lay, const int32_t* base) {
  DeviceMeta d;
  d.lay = lay;
  d.tokens = base + lay.tokens;
  d.rows = base + lay.rows;
  d.decode = base + lay.decode;
  d.tiles = reinterpret_cast<const PrefillTile*>(base + lay.tiles);
  d.token.pos = base + lay.pos;
  d.token.seqOf = base + lay.seqOf;
  d.token.pageTable = base + lay.pageTable;
  d.token.ptStride = lay.ptStride;
  d.token.numTokens = lay.numTokens;
  return d;
}

// Rows [0, numSeqs) get the batch's parameters; padding rows (graphs) temperature 0: greedy.
static void packSampleParams(const Batch& b, const MetaLayout& l, int32_t* dst) {
  int32_t* prm = dst + l.sampleParams;
  for (int s = 0; s < l.numSampled; s++, prm += kSampleParamInts) {
    const bool real = s < b.numSeqs;
    const float t = real ? b.temperature[s] : 0.f, p = real ? b.topP[s] : 1.f;
    std::memcpy(&prm[0], &t, 4);
    std::memcpy(&prm[1], &p, 4);
    prm[2] = real ? int32_t(b.seed[s]) : 0;
    prm[3] = real ? int32_t(b.step[s]) : 0;
  }
}

EagerPlan planEager(const Batch& b, int pageSize) {
  EagerPlan p;
  int numDecode = 0, numTiles = 0, ptStride = 1;
  for (int s = 0; s < b.numSeqs; s++) {
    const int need = (b.startPos[s] + b.seqLens[s] + pageSize - 1) / pageSize;
    if (need > ptStride) ptStride = need;
    if (b.seqLens[s] == 1) {
      numDecode++;
      if (b.startPos[s] + 1 > p.maxDecodeCtx) p.maxDecodeCtx = b.startPos[s] + 1;
    } else {
      numTiles += (b.seqLens[s] + kPrefillTileRows - 1) / kPrefillTileRows;
    }
  }
  int numRows = b.allLogits ? b.numTokens : b.numSeqs, numPrompt = 0;
  if (b.promptLogprobs)
    for (int t = 0; t < b.numTokens; t++) numPrompt += b.promptLogprobs->targets[t] >= 0;
  p.lay = metaLayout(b.numTokens, b.numSeqs, ptStride, numRows, numDecode, numTiles,
                     b.tokensOut ? b.numSeqs : 0, numPrompt);
  return p;
}

void packEager(const Batch& b, const EagerPlan& p, int32_t* dst) {
  const MetaLayout& l = p.lay;
  int32_t* decode = dst + l.decode;
  PrefillTile* tiles = reinterpret_cast<PrefillTile*>(dst + l.tiles);
  int t = 0, r = 0;
  for (int s = 0; s < b.numSeqs; s++) {
    const int len = b.seqLens[s], start = b.startPos[s];
    if (len == 1) *decode++ = t;
    for (int i = 0; i < len; i += kPrefillTileRows)
      if (len > 1) *tiles++ = PrefillTile{s, t + i, len - i < kPrefillTileRows ? len - i : kPrefillTileRows, start + i};
    for (int i = 0; i < len; i++, t++) {
      dst[l.tokens + t] = b.tokens[t];
      dst[l.pos + t] = start + i;
      dst[l.seqOf + t] = s;
      if (b.allLogits) dst[l.rows + r++] = t;
    }
    if (!b.allLogits) dst[l.rows + r++] = t - 1;
  }
  // Entries past a sequence's own need are never read: 0 keeps them in range.
  for (int s = 0; s < b.numSeqs; s++)
    for (int i = 0; i < l.ptStride; i++)
      dst[l.pageTable + size_t(s) * l.ptStride + i] = i < b.maxPagesPerSeq ? b.pageTables[size_t(s) * b.maxPagesPerSeq + i] : 0;
  packSampleParams(b, l, dst);
  for (int s = 0, t = 0, r = 0; s < b.numSeqs && l.numPromptRows; s++)
    for (int i = 0; i < b.seqLens[s]; i++, t++) {
      const int32_t target = b.promptLogprobs->targets[t];
      if (target < 0) continue;
      dst[l.promptRows + r] = t;
      dst[l.promptTargets + r] = target;
      dst[l.promptTop + r] = b.promptLogprobs->numTop[s];
      r++;
    }
}

void unpackPromptLogprobs(const Batch& b, const MetaLayout& l, const int32_t* src) {
  const PromptLogprobs& p = *b.promptLogprobs;
  for (int r = 0; r < l.numPromptRows; r++) {
    const int t = src[l.promptRows + r];
    const int32_t* o = src + l.promptOut + size_t(r) * kLogprobInts;
    std::memcpy(p.logprobsOut + size_t(t) * (1 + kMaxLogprobs), o, size_t(1 + kMaxLogprobs) * 4);
    std::memcpy(p.topIdsOut + size_t(t) * kMaxLogprobs, o + 1 + kMaxLogprobs, size_t(kMaxLogprobs) * 4);
  }
}

MetaLayout graphLayout(int bucket, int ptStride, bool sampling) {
  return metaLayout(bucket, bucket, ptStride, bucket, bucket, 0, sampling ? bucket : 0);
}

void packGraph(const Batch& b, int bucket, int ptStride, int pageSize, int dummyPage, int32_t* dst) {
  const MetaLayout l = graphLayout(bucket, ptStride, b.tokensOut != nullptr);
  for (int s = 0; s < bucket; s++) {
    const bool real = s < b.numSeqs;
    dst[l.tokens + s] = real ? b.tokens[s] : 0;
    dst[l.pos + s] = real ? b.startPos[s] : 0;
    dst[l.seqOf + s] = s;
    dst[l.rows + s] = s;
    dst[l.decode + s] = s;
    int32_t* row = dst + l.pageTable + size_t(s) * ptStride;
    int need = real ? (b.startPos[s] + pageSize) / pageSize : 0;  // pages covering [0, pos]
    for (int i = 0; i < ptStride; i++) row[i] = i < need ? b.pageTables[size_t(s) * b.maxPagesPerSeq + i] : dummyPage;
  }
  packSampleParams(b, l, dst);
}

MetaLayout packSamplingOnly(const Batch& b, int32_t* dst) {
  const MetaLayout l = metaLayout(0, 0, 0, 0, 0, 0, b.numSeqs);
  packSampleParams(b, l, dst);
  return l;
}

}  // namespace ms::cuda
