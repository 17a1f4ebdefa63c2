#include "attention.h"

#include <cmath>
#include <cstring>

namespace ms::cpu {

namespace {

// Chunks at least this long take the GEMM path.
constexpr int kMinGemmLen = 8;
// Query rows per GEMM task.
constexpr int kQueryBlock = 64;

// Softmax of s[0, valid) in place (f32, max subtracted, as torch does); s[valid, len) = 0.
void softmaxRow(float* s, int valid, int len) {
  float m = s[0];
  for (int t = 1; t < valid; t++) m = s[t] > m ? s[t] : m;
  float sum = 0.f;
  for (int t = 0; t < valid; t++) {
    s[t] = std::exp(s[t] - m);
    sum += s[t];
  }
  float inv = 1.f / sum;
  for (int t = 0; t < valid; t++) s[t] *= inv;
  for (int t = valid; t < len; t++) s[t] = 0.f;
}

// One sequence's K and V for one KV head, gathered from the pages into GEMM panels:
//   k: (ceil(len / kPanel), headDim, kPanel)  — rows are positions, so scores = Q . k^T
//   v: (ceil(headDim / kPanel), len, kPanel)  — rows are head dims, so out = P . v^T
struct PackedKv {
  std::vector<float> k, v;
  int len = 0;
};

void packKv(const AttentionShape& s, const float* kBase, const float* vBase, const int32_t* table, int len,
            PackedKv& out) {
  const int hd = s.headDim, kvDim = s.kvHeads * s.headDim;
  const int kPanels = (len + kPanel - 1) / kPanel, vPanels = (hd + kPanel - 1) / kPanel;
  out.len = len;
  out.k.assign(size_t(kPanels) * hd * kPanel, 0.f);
  out.v.assign(size_t(vPanels) * len * kPanel, 0.f);
  for (int t = 0; t < len; t++) {
    size_t off = size_t(table[t / s.pageSize]) * s.pageFloats + size_t(t % s.pageSize) * kvDim;
    const float* k = kBase + off;
    const float* v = vBase + off;
    float* pk = &out.k[size_t(t / kPanel) * hd * kPanel + t % kPanel];
    for (int d = 0; d < hd; d++) pk[size_t(d) * kPanel] = k[d];
    for (int d = 0; d < hd; d++) out.v[size_t(d / kPanel) * len * kPanel + size_t(t) * kPanel + d % kPanel] = v[d];
  }
}

}  // namespace

void attendLayer(const Kernels& K, ThreadPool& pool, const AttentionShape& s, const Batch& b, const BatchIndex& idx, const float* kvPool,
                 int layer, const float* qkv, int qkvDim, float* att) {
  const int hd = s.headDim, rep = s.heads / s.kvHeads, qDim = s.heads * hd, kvDim = s.kvHeads * hd;
  const float scale = 1.f / std::sqrt(float(hd));
  const float* kLayer = kvPool + size_t(layer) * s.layerFloats;
  const float* vLayer = kLayer + size_t(s.pageSize) * kvDim;
  auto table = [&](int seq) { return b.pageTables + size_t(seq) * b.maxPagesPerSeq; };

  // Direct path: every token of a short chunk, one task per (token, KV head).
  std::vector<int> directTokens;
  std::vector<int> gemmSeqs;
  for (int q = 0; q < b.numSeqs; q++) {
    if (b.seqLens[q] >= kMinGemmLen) {
      gemmSeqs.push_back(q);
    } else {
      for (int j = 0; j < b.seqLens[q]; j++) directTokens.push_back(idx.firstToken[q] + j);
    }
  }
  if (!directTokens.empty()) {
    std::vector<float> scores(size_t(pool.size()) * rep * idx.maxLen);  // (threads, rep, maxLen)
    pool.run(int(directTokens.size()) * s.kvHeads, [&](int task, int thread) {
      int i = directTokens[task / s.kvHeads], g = task % s.kvHeads;
      KvView v;
      v.pageTable = table(idx.seqOf[i]);
      v.pageSize = s.pageSize;
      v.pageStride = s.pageFloats;
      v.rowStride = kvDim;
      v.kBase = kLayer + g * hd;
      v.vBase = vLayer + g * hd;
      K.attention(qkv + size_t(i) * qkvDim + size_t(g) * rep * hd, rep, hd, v, idx.posOf[i] + 1, scale,
                  &scores[size_t(thread) * rep * idx.maxLen], att + size_t(i) * qDim + size_t(g) * rep * hd);
    });
  }
  if (gemmSeqs.empty()) return;

  // GEMM path: pack each (sequence, KV head), then one task per (sequence, KV head, query block).
  std::vector<PackedKv> packed(gemmSeqs.size() * s.kvHeads);
  pool.run(int(packed.size()), [&](int task, int) {
    int q = gemmSeqs[task / s.kvHeads], g = task % s.kvHeads;
    int len = b.startPos[q] + b.seqLens[q];
    packKv(s, kLayer + g * hd, vLayer + g * hd, table(q), len, packed[task]);
  });
  struct Task {
    int packedIdx, seq, row0, numRows;
  };
  std::vector<Task> tasks;
  for (size_t n = 0; n < gemmSeqs.size(); n++)
    for (int g = 0; g < s.kvHeads; g++)
      for (int r0 = 0; r0 < b.seqLens[gemmSeqs[n]]; r0 += kQueryBlock)
        tasks.push_back({int(n) * s.kvHeads + g, gemmSeqs[n], r0,
                         b.seqLens[gemmSeqs[n]] - r0 < kQueryBlock ? b.seqLens[gemmSeqs[n]] - r0 : kQueryBlock});
  std::vector<float> scores(size_t(pool.size()) * kQueryBlock * idx.maxLen);  // (threads, block, maxLen)
  pool.run(int(tasks.size()), [&](int ti, int thread) {
    const Task& t = tasks[ti];
    const PackedKv& kv = packed[t.packedIdx];
    int g = t.packedIdx % s.kvHeads, len = kv.len;
    int first = idx.firstToken[t.seq] + t.row0;  // batch index of the block's first token
    float* S = &scores[size_t(thread) * kQueryBlock * idx.maxLen];  // (numRows, len)
    for (int r = 0; r < rep; r++) {
      int head = g * rep + r;
      // S = Q K^T over all `len` positions, then scale, causal mask and softmax per row.
      K.gemmF32(qkv + size_t(first) * qkvDim + size_t(head) * hd, t.numRows, qkvDim, kv.k.data(), hd, len, S, len, 0,
                (len + kPanel - 1) / kPanel, false);
      for (int i = 0; i < t.numRows; i++) {
        float* row = S + size_t(i) * len;
        int valid = idx.posOf[first + i] + 1;
        for (int j = 0; j < valid; j++) row[j] *= scale;
        softmaxRow(row, valid, len);
      }
      // out = P V, straight into this head's columns of att.
      K.gemmF32(S, t.numRows, len, kv.v.data(), len, hd, att + size_t(first) * qDim + size_t(head) * hd, qDim, 0,
                (hd + kPanel - 1) / kPanel, false);
    }
  });
}

}  // namespace ms::cpu
