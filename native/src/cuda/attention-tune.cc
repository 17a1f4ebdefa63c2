// CudaBackend::tuneDecodeAttention: the decode attention split plan of every batch bucket from
// kMinTunedDecodeBatch up and every context bucket from kMinGraphCtx to 2048 keys, chosen by
// measurement at engine start (DecodeChoice, cuda-backend.h).
// The candidates: planDecodeSplits' waves (kDecodeWaves: one wave of the longest splits the bound
// allows, or more, shorter splits per query) and split length bound (kDecodeSplitLens: fewer,
// longer ones at large batches), the contexts spread evenly over a graph's splits or not, two or
// three K/V tiles in flight per block; the default (two waves, fixed splits, two tiles) is always
// one of them and is kept unless another is kMinGain faster. Timed with the graphs' grids over
// kTuneLayers layers of the pool, at two contexts in each context bucket C: C / 2 + 1 (just past
// the bucket below, the worst case for fixed splits) and 3C / 4. Without the fused RoPE (the
// graphs' only other difference: a few sincos per block), so the pool is only read: its pages may
// hold KV already (written before finalize, or an NVSHMEM pool). Writes only the arena, whose
// partials planArena sized for every candidate.
#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "check.h"
#include "cuda-backend.h"
#include "forward-plan.h"

namespace ms::cuda {
namespace {

// Smaller buckets keep the default: their clusters' gain is in the overlap with the o product,
// which a lone timing does not see (bench/results/engine-gpu.md).
constexpr int kMinTunedDecodeBatch = 8;
constexpr int kTuneLayers = 4;     // layers per timed call: four different regions of the pool
constexpr float kMinGain = 0.97f;  // another choice replaces the default when at least 3% faster

}  // namespace

void CudaBackend::tuneDecodeAttention() {
  for (auto& row : decodeChoice_)
    for (DecodeChoice& c : row) c = DecodeChoice();
  if (!pool_ || kv_.numPages <= 0 || maxGraphBatch_ < kMinTunedDecodeBatch) return;
  const int ps = kv_.pageSize, hd = m_.headDim, qDim = m_.heads * hd;
  const int kvDim = m_.kvHeads * hd, qkvDim = qDim + 2 * kvDim;
  const int layers = std::min(kTuneLayers, m_.layers);
  randomNormalBf16(arena_.qkv, size_t(maxGraphBatch_) * qkvDim, 7, 5, 0.f, 1.f, stream_);

  auto timeIt = [&](auto&& fn) { return medianEventMs(fn, 1, 3); };

  for (int bi = 0; bi < kNumGraphBuckets; bi++)
    for (int ci = 0; ci < kNumTunedCtx; ci++) {
      const int b = kGraphBuckets[bi], ctxB = kMinGraphCtx << ci;
      if (b < kMinTunedDecodeBatch || b > maxGraphBatch_ || ctxB > maxGraphCtx_) continue;
      const int ptStride = (ctxB + ps - 1) / ps;
      const MetaLayout lay = graphLayout(b, ptStride);
      if (lay.total > arena_.capMeta || size_t(b) > size_t(arena_.capTokens)) continue;
      // The candidates, each once by the launch it makes at ctxB; the default first.
      std::vector<DecodeChoice> cands;
      std::vector<std::tuple<int, int, int, bool, int>> seen;
      auto consider = [&](const DecodeChoice& c) {
        DecodeAttentionArgs d;
        planDecodeSplits(b, m_.kvHeads, ctxB, numSms_, &d.splitLen, &d.maxSplits, c.waves, c.maxSplitLen);
        planDecodeCluster(d, std::min(opts_.decodeClusterCap, decodeMaxCluster()));
        const bool fixed = d.clusterSize == 0;
        auto key = std::make_tuple(d.splitLen, d.maxSplits, d.clusterSize, fixed && d.maxSplits > 1 && c.evenSplits,
                                   fixed ? c.stages : 0);
        if (std::find(seen.begin(), seen.end(), key) != seen.end()) return;
        seen.push_back(key);
        cands.push_back(c);
      };
      consider(DecodeChoice());
      for (int maxLen : kDecodeSplitLens)
        for (int waves : kDecodeWaves)
          for (bool even : {false, true})
            for (int stages : {2, 3}) {
              DecodeChoice c;
              c.waves = waves, c.evenSplits = even, c.stages = stages, c.maxSplitLen = maxLen;
              consider(c);
            }
      std::vector<float> total(cands.size(), 0.f);
      for (int ctx : {ctxB / 2 + 1, ctxB * 3 / 4}) {
        const int need = (ctx + ps - 1) / ps;
        std::vector<int32_t> tokens(b, 0), startPos(b, ctx - 1), tables(size_t(b) * need);
        for (size_t i = 0; i < tables.size(); i++) tables[i] = int32_t(i % size_t(kv_.numPages));
        Batch bt;
        bt.tokens = tokens.data(), bt.numTokens = b, bt.numSeqs = b, bt.startPos = startPos.data();
        bt.pageTables = tables.data(), bt.maxPagesPerSeq = need;
        MS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // hostMeta_ may still feed the last copy
        packGraph(bt, b, ptStride, ps, kv_.numPages, hostMeta_);
        MS_CUDA_CHECK(
            cudaMemcpyAsync(arena_.meta, hostMeta_, lay.total * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
        const DeviceMeta dm = deviceMeta(lay, arena_.meta);
        for (size_t k = 0; k < cands.size(); k++) {
          DecodeAttentionArgs d;
          d.q = arena_.qkv;
          d.qStride = qkvDim;
          d.out = arena_.attn;
          d.outStride = qDim;
          d.queries = dm.decode;
          d.numQueries = b;
          d.meta = dm.token;
          d.heads = m_.heads;
          d.scale = 1.f / std::sqrt(float(hd));
          planDecodeSplits(b, m_.kvHeads, ctxB, numSms_, &d.splitLen, &d.maxSplits, cands[k].waves,
                           cands[k].maxSplitLen);
          d.evenSplits = cands[k].evenSplits;
          d.stages = cands[k].stages;
          d.partO = arena_.partO;
          d.partML = arena_.partML;
          d.counters = arena_.counters;
          d.clusterCap = opts_.decodeClusterCap;
          total[k] += timeIt([&] {
            for (int l = 0; l < layers; l++) {
              d.kv = layerKv(l);
              d.kvMap = kvMap(l);
              decodeAttention(d, stream_);
            }
          });
        }
      }
      // cands[0] is the default (waves 2, fixed splits, two tiles).
      size_t best = 0;
      for (size_t k = 1; k < cands.size(); k++)
        if (total[k] < total[best]) best = k;
      if (total[best] >= kMinGain * total[0]) best = 0;
      DecodeChoice& out = decodeChoice_[bi][ci];
      out = cands[best];
      out.ms = total[best] / float(2 * layers);
      out.defaultMs = total[0] / float(2 * layers);
    }
  MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace ms::cuda
