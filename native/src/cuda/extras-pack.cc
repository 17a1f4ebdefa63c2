#include "extras-pack.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "check.h"
#include "sampling.h"

namespace ms::cuda {
namespace {

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// Carves `sizes` out of `base` (256-byte aligned each) into `ptrs`; returns the bytes used.
template <size_t N>
size_t carve(char* base, const size_t (&sizes)[N], void** const (&ptrs)[N]) {
  size_t off = 0;
  for (size_t i = 0; i < N; i++) {
    if (base) *ptrs[i] = base + off;
    off += align256(sizes[i]);
  }
  return off;
}

void putF(int32_t* dst, float v) { std::memcpy(dst, &v, 4); }

}  // namespace

void DeviceExtras::allocate(const ExtrasCaps& caps) {
  release();
  caps_ = caps;
  maskWords_ = (caps.vocab + 31) / 32;
  const size_t R = size_t(caps.capRows);
  const size_t devSizes[] = {size_t(caps.numSlots) * caps.vocab * 4, R * kExtraInts * 4, size_t(caps.biasCap) * 4,
                             size_t(caps.biasCap) * 4, R * maskWords_ * 4, R * kLogprobInts * 4, R * 8,
                             size_t(caps.histCap) * 2 * 4};
  void** const devPtrs[] = {reinterpret_cast<void**>(&counts_), reinterpret_cast<void**>(&params_),
                            reinterpret_cast<void**>(&biasTok_), reinterpret_cast<void**>(&biasVal_),
                            reinterpret_cast<void**>(&mask_), reinterpret_cast<void**>(&out_),
                            reinterpret_cast<void**>(&lse_), reinterpret_cast<void**>(&hist_)};
  deviceBytes_ = carve<8>(nullptr, devSizes, devPtrs);
  MS_CUDA_CHECK(cudaMalloc(&dev_, deviceBytes_));
  carve<8>(static_cast<char*>(dev_), devSizes, devPtrs);
  MS_CUDA_CHECK(cudaMemset(counts_, 0, devSizes[0]));
  const size_t hostSizes[] = {devSizes[1], devSizes[2], devSizes[3], devSizes[4], devSizes[5], devSizes[7]};
  void** const hostPtrs[] = {reinterpret_cast<void**>(&hParams_), reinterpret_cast<void**>(&hBiasTok_),
                             reinterpret_cast<void**>(&hBiasVal_), reinterpret_cast<void**>(&hMask_),
                             reinterpret_cast<void**>(&hOut_), reinterpret_cast<void**>(&hHist_)};
  const size_t hostBytes = carve<6>(nullptr, hostSizes, hostPtrs);
  MS_CUDA_CHECK(cudaMallocHost(&host_, hostBytes));
  carve<6>(static_cast<char*>(host_), hostSizes, hostPtrs);
}

void DeviceExtras::release() {
  if (dev_) cudaFree(dev_);
  if (host_) cudaFreeHost(host_);
  dev_ = host_ = nullptr;
  deviceBytes_ = 0;
}

std::string DeviceExtras::check(const Batch& b) const {
  if (!dev_) return "sampling extras before the memory plan";
  if (b.numSeqs > caps_.capRows) return "more sequences than the plan's " + std::to_string(caps_.capRows);
  const SamplingExtras& x = *b.extras;
  if (!x.slot) return "";
  std::vector<char> used(size_t(caps_.numSlots), 0);
  for (int s = 0; s < b.numSeqs; s++) {
    const int slot = x.slot[s];
    if (slot < 0) continue;
    if (slot >= caps_.numSlots)
      return "sequence " + std::to_string(s) + ": penalty slot " + std::to_string(slot) + " is past the plan's " +
             std::to_string(caps_.numSlots) + " slots (maxNumSeqs)";
    if (used[size_t(slot)]++) return "sequence " + std::to_string(s) + ": penalty slot " + std::to_string(slot) + " is used twice";
  }
  return "";
}

void DeviceExtras::rebuildSlots(const Batch& b, cudaStream_t s) {
  const SamplingExtras& x = *b.extras;
  if (!x.slot || !x.reset) return;
  const int V = caps_.vocab;
  int n = 0;
  auto flush = [&] {
    if (!n) return;
    MS_CUDA_CHECK(cudaMemcpyAsync(hist_, hHist_, size_t(n) * 8, cudaMemcpyHostToDevice, s));
    rebuildPenaltySlots(counts_, V, hist_, n, s);
    n = 0;
  };
  for (int r = 0; r < b.numSeqs; r++) {
    if (!x.reset[r] || x.slot[r] < 0) continue;
    const int slot = x.slot[r];
    MS_CUDA_CHECK(cudaMemsetAsync(counts_ + size_t(slot) * V, 0, size_t(V) * 4, s));
    const int h0 = x.histOffsets[r], h1 = x.histOffsets[r + 1], firstOutput = h1 - x.histNumOutput[r];
    for (int i = h0; i < h1; i++) {
      if (n == caps_.histCap) {  // a full chunk: copy and count it, and wait before reusing the staging
        flush();
        MS_CUDA_CHECK(cudaStreamSynchronize(s));
      }
      hHist_[2 * n] = slot * 2 + (i >= firstOutput ? 1 : 0);
      hHist_[2 * n + 1] = x.histTokens[i];
      n++;
    }
  }
  flush();
}

PackedExtras DeviceExtras::pack(const Batch& b, int numRows, cudaStream_t s) {
  const SamplingExtras& x = *b.extras;
  if (numRows > caps_.capRows || b.numSeqs > numRows)
    throw CudaError("extras of " + std::to_string(numRows) + " rows past the plan's " + std::to_string(caps_.capRows), false);
  PackedExtras p;
  p.numRows = numRows;
  stagedWindow_ = -1;
  // The bias list, each row's entries sorted by token (stable: one token's values in order).
  const int numBias = x.biasOffsets ? x.biasOffsets[b.numSeqs] : 0;
  order_.resize(size_t(numBias));
  std::iota(order_.begin(), order_.end(), 0);
  sortedTok_.resize(size_t(numBias));
  sortedVal_.resize(size_t(numBias));
  for (int r = 0; x.biasOffsets && r < b.numSeqs; r++) {
    auto first = order_.begin() + x.biasOffsets[r], last = order_.begin() + x.biasOffsets[r + 1];
    std::stable_sort(first, last, [&](int i, int j) { return x.biasTokens[i] < x.biasTokens[j]; });
  }
  for (int i = 0; i < numBias; i++) sortedTok_[size_t(i)] = x.biasTokens[order_[size_t(i)]], sortedVal_[size_t(i)] = x.biasValues[order_[size_t(i)]];
  p.numBias = numBias;
  const int fullWords = caps_.vocab / 32, tailBits = caps_.vocab % 32;
  const uint32_t tailMask = tailBits ? (1u << tailBits) - 1u : 0u;
  for (int r = 0; r < numRows; r++) {
    int32_t* e = hParams_ + size_t(r) * kExtraInts;
    const bool real = r < b.numSeqs;
    e[kTopK] = real && x.topK ? x.topK[r] : 0;
    putF(&e[kMinP], real && x.minP ? x.minP[r] : 0.f);
    putF(&e[kRepetition], real && x.repetitionPenalty ? x.repetitionPenalty[r] : 1.f);
    putF(&e[kPresence], real && x.presencePenalty ? x.presencePenalty[r] : 0.f);
    putF(&e[kFrequency], real && x.frequencyPenalty ? x.frequencyPenalty[r] : 0.f);
    e[kSlot] = real && x.slot ? x.slot[r] : -1;
    e[kNumLogprobs] = real && x.numLogprobs && x.logprobsOut ? x.numLogprobs[r] : -1;
    e[kBiasBegin] = real && x.biasOffsets ? x.biasOffsets[r] : 0;
    e[kBiasEnd] = real && x.biasOffsets ? x.biasOffsets[r + 1] : 0;
    e[kMaskRow] = -1;
    p.hasLogprobs = p.hasLogprobs || e[kNumLogprobs] >= 0;
    if (!real || !x.allowedMask) continue;
    // A row whose mask allows every token needs no pass.
    const uint32_t* m = x.allowedMask + size_t(r) * x.maskWords;
    bool isAll = !tailBits || (m[fullWords] & tailMask) == tailMask;
    for (int w = 0; isAll && w < fullWords; w++) isAll = m[w] == 0xffffffffu;
    if (isAll) continue;
    std::memcpy(hMask_ + size_t(p.numMaskRows) * maskWords_, m, size_t(maskWords_) * 4);
    e[kMaskRow] = p.numMaskRows++;
  }
  packed_ = p;
  MS_CUDA_CHECK(cudaMemcpyAsync(params_, hParams_, size_t(numRows) * kExtraInts * 4, cudaMemcpyHostToDevice, s));
  if (p.numMaskRows)
    MS_CUDA_CHECK(cudaMemcpyAsync(mask_, hMask_, size_t(p.numMaskRows) * maskWords_ * 4, cudaMemcpyHostToDevice, s));
  if (numBias) stageBiasWindow(0, s);
  return p;
}

void DeviceExtras::stageBiasWindow(int window, cudaStream_t s) {
  if (stagedWindow_ == window) return;
  if (stagedWindow_ >= 0) MS_CUDA_CHECK(cudaStreamSynchronize(s));  // the staging's last copy has landed
  const int from = window * caps_.biasCap, n = std::min(packed_.numBias - from, caps_.biasCap);
  std::memcpy(hBiasTok_, sortedTok_.data() + from, size_t(n) * 4);
  std::memcpy(hBiasVal_, sortedVal_.data() + from, size_t(n) * 4);
  MS_CUDA_CHECK(cudaMemcpyAsync(biasTok_, hBiasTok_, size_t(n) * 4, cudaMemcpyHostToDevice, s));
  MS_CUDA_CHECK(cudaMemcpyAsync(biasVal_, hBiasVal_, size_t(n) * 4, cudaMemcpyHostToDevice, s));
  stagedWindow_ = window;
}

ExtrasArgs DeviceExtras::args(float* logits, int row0, int rows, const int32_t* sampleParams, const int32_t* tokens) const {
  ExtrasArgs a;
  a.logits = logits;
  a.vocab = caps_.vocab;
  a.rows = rows;
  a.sampleParams = sampleParams;
  a.extras = params_ + size_t(row0) * kExtraInts;
  a.biasTokens = biasTok_;
  a.biasValues = biasVal_;
  a.biasFrom = 0;
  a.biasTo = caps_.biasCap;  // the first window (a graph's, fixed); rows' ranges bound the reads
  a.mask = mask_;
  a.maskWords = maskWords_;
  a.counts = counts_;
  a.numSlots = caps_.numSlots;
  a.lse = lse_ + row0;
  a.out = out_ + size_t(row0) * kLogprobInts;
  a.tokens = tokens;
  return a;
}

void DeviceExtras::applyBiasWindows(ExtrasArgs a, cudaStream_t s) {
  const int n = packed_.numBias, cap = caps_.biasCap;
  if (n <= cap) {
    if (n) applyBias(a, s);
    return;
  }
  for (int w = 0; w * cap < n; w++) {
    stageBiasWindow(w, s);
    a.biasFrom = w * cap;
    a.biasTo = std::min(n, (w + 1) * cap);
    applyBias(a, s);
  }
}

void DeviceExtras::downloadLogprobs(const Batch& b, cudaStream_t s) {
  if (!packed_.hasLogprobs) return;
  MS_CUDA_CHECK(cudaMemcpyAsync(hOut_, out_, size_t(b.numSeqs) * kLogprobInts * 4, cudaMemcpyDeviceToHost, s));
}

void DeviceExtras::finishLogprobs(const Batch& b) const {
  const SamplingExtras& x = *b.extras;
  if (!packed_.hasLogprobs) return;
  for (int r = 0; r < b.numSeqs; r++) {
    if (x.numLogprobs[r] < 0) continue;
    const int32_t* o = hOut_ + size_t(r) * kLogprobInts;
    std::memcpy(x.logprobsOut + size_t(r) * (1 + kMaxLogprobs), o, size_t(1 + kMaxLogprobs) * 4);
    std::memcpy(x.topIdsOut + size_t(r) * kMaxLogprobs, o + 1 + kMaxLogprobs, size_t(kMaxLogprobs) * 4);
  }
}

}  // namespace ms::cuda
