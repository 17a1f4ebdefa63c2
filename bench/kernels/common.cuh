// Shared by the kernel-variant benches of this folder (llm.c's dev/cuda style: each .cu is one
// operation's losing variants next to the shipped kernel, with a CPU reference check and a timing
// loop). A paged attention problem on the device, its float64 reference, and the timers.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../../native/src/common/half.h"
#include "cuda/check.h"
#include "cuda/kernels.h"

namespace bench {

using ms::cuda::bf16;

inline std::mt19937_64& rng() {
  static std::mt19937_64 r(12345);
  return r;
}
inline int& numFailed() {
  static int n = 0;
  return n;
}

// v rounded to bf16 (in place), uploaded.
inline bf16* uploadBf16(std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); i++) h[i] = ms::f32ToBf16(v[i]), v[i] = ms::bf16ToF32(h[i]);
  void* d;
  MS_CUDA_CHECK(cudaMalloc(&d, h.size() * 2 + 16));
  MS_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  return static_cast<bf16*>(d);
}
template <class T>
T* upload(const std::vector<T>& v) {
  void* d;
  MS_CUDA_CHECK(cudaMalloc(&d, v.size() * sizeof(T) + 16));
  MS_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(d);
}
inline std::vector<float> downloadBf16(const bf16* d, size_t n) {
  std::vector<uint16_t> h(n);
  MS_CUDA_CHECK(cudaDeviceSynchronize());
  MS_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; i++) v[i] = ms::bf16ToF32(h[i]);
  return v;
}
inline std::vector<float> randn(size_t n) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}

// Max |got - ref| / (max |ref| + 1e-6); prints a PASS/FAIL line.
inline void check(const std::string& name, const std::vector<float>& got, const std::vector<double>& ref, double tol) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    mag = std::max(mag, std::fabs(ref[i]));
    err = std::max(err, std::isfinite(got[i]) ? std::fabs(got[i] - ref[i]) : 1e30);
  }
  const bool ok = err / (mag + 1e-6) <= tol;
  if (!ok) numFailed()++;
  std::printf("%-64s rel err %.2e %s\n", name.c_str(), err / (mag + 1e-6), ok ? "PASS" : "FAIL");
}

// SMs of the current device.
inline int numSms() {
  int dev = 0, v = 0;
  MS_CUDA_CHECK(cudaGetDevice(&dev));
  MS_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
  return v;
}

// Median ms of `iters` runs of f on stream 0 after `warmup`.
inline double timeMs(const std::function<void()>& f, int warmup = 3, int iters = 20) {
  cudaEvent_t a, b;
  MS_CUDA_CHECK(cudaEventCreate(&a));
  MS_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; i++) f();
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; i++) {
    MS_CUDA_CHECK(cudaEventRecord(a, 0));
    f();
    MS_CUDA_CHECK(cudaEventRecord(b, 0));
    MS_CUDA_CHECK(cudaEventSynchronize(b));
    MS_CUDA_CHECK(cudaEventElapsedTime(&ms[i], a, b));
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  return ms[iters / 2];
}

// ms per call of f over `seconds` of back-to-back calls (the board at its power cap, as in a long
// prefill), from the calls' count estimated by one call's time `once`.
inline double sustainedMs(const std::function<void()>& f, double once, double seconds) {
  const int n = std::max(20, int(seconds * 1e3 / once));
  cudaEvent_t a, b;
  MS_CUDA_CHECK(cudaEventCreate(&a));
  MS_CUDA_CHECK(cudaEventCreate(&b));
  MS_CUDA_CHECK(cudaEventRecord(a, 0));
  for (int i = 0; i < n; i++) f();
  MS_CUDA_CHECK(cudaEventRecord(b, 0));
  MS_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  MS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a), cudaEventDestroy(b);
  return ms / n;
}

// numSeqs sequences of ctx keys each in a paged pool (one layer), one query row per token of the
// last `queryLen` positions of each sequence (queryLen 1: decode), q already rotated.
//   pool: (numPages, 2 [K, V], pageSize, kvHeads, D) bf16; q: (numSeqs * queryLen, heads * D) bf16
struct PagedProblem {
  int numSeqs, ctx, queryLen, heads, kvHeads, D, pageSize, maxPages;
  std::vector<float> pool, q;
  std::vector<int32_t> pageTable, pos, seqOf;
  bf16 *dPool = nullptr, *dQ = nullptr, *dOut = nullptr;
  int32_t *dPageTable = nullptr, *dPos = nullptr, *dSeqOf = nullptr;

  PagedProblem(int numSeqs_, int ctx_, int queryLen_, int heads_, int kvHeads_, int D_, int pageSize_)
      : numSeqs(numSeqs_), ctx(ctx_), queryLen(queryLen_), heads(heads_), kvHeads(kvHeads_), D(D_), pageSize(pageSize_) {
    maxPages = (ctx + pageSize - 1) / pageSize;
    const int numPages = numSeqs * maxPages;
    std::vector<int32_t> perm(numPages);
    for (int i = 0; i < numPages; i++) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng());
    pageTable = perm;
    pool = randn(size_t(numPages) * pageElems());
    q = randn(size_t(numTokens()) * heads * D);
    for (int s = 0; s < numSeqs; s++)
      for (int i = 0; i < queryLen; i++) pos.push_back(ctx - queryLen + i), seqOf.push_back(s);
    dPool = uploadBf16(pool);
    dQ = uploadBf16(q);
    MS_CUDA_CHECK(cudaMalloc(&dOut, size_t(numTokens()) * heads * D * 2));
    dPageTable = upload(pageTable), dPos = upload(pos), dSeqOf = upload(seqOf);
  }
  ~PagedProblem() { cudaFree(dPool), cudaFree(dQ), cudaFree(dOut), cudaFree(dPageTable), cudaFree(dPos), cudaFree(dSeqOf); }
  PagedProblem(const PagedProblem&) = delete;

  int numTokens() const { return numSeqs * queryLen; }
  int64_t pageElems() const { return int64_t(2) * pageSize * kvHeads * D; }
  ms::cuda::KvLayer kv() const {
    ms::cuda::KvLayer k;
    k.base = dPool, k.pageStride = pageElems(), k.pageSize = pageSize, k.kvHeads = kvHeads, k.headDim = D;
    k.numPages = numSeqs * maxPages;
    return k;
  }
  ms::cuda::TokenMeta meta() const {
    ms::cuda::TokenMeta m;
    m.pos = dPos, m.seqOf = dSeqOf, m.pageTable = dPageTable, m.ptStride = maxPages, m.numTokens = numTokens();
    return m;
  }
  // Causal attention of every query token over keys [0, pos], float64.
  std::vector<double> reference() const {
    std::vector<double> out(size_t(numTokens()) * heads * D);
    const int kvDim = kvHeads * D, rep = heads / kvHeads;
    for (int t = 0; t < numTokens(); t++) {
      const int s = seqOf[t], n = pos[t] + 1;
      for (int h = 0; h < heads; h++) {
        const int g = h / rep;
        std::vector<double> sc(n);
        double mx = -1e300;
        for (int j = 0; j < n; j++) {
          const int64_t off = int64_t(pageTable[size_t(s) * maxPages + j / pageSize]) * pageElems() + int64_t(j % pageSize) * kvDim + g * D;
          double d = 0;
          for (int i = 0; i < D; i++) d += double(q[(size_t(t) * heads + h) * D + i]) * pool[off + i];
          mx = std::max(mx, sc[j] = d / std::sqrt(double(D)));
        }
        double sum = 0;
        for (int j = 0; j < n; j++) sum += (sc[j] = std::exp(sc[j] - mx));
        for (int j = 0; j < n; j++) {
          const int64_t off = int64_t(pageTable[size_t(s) * maxPages + j / pageSize]) * pageElems() +
                              int64_t(pageSize) * kvDim + int64_t(j % pageSize) * kvDim + g * D;
          for (int i = 0; i < D; i++) out[(size_t(t) * heads + h) * D + i] += sc[j] / sum * pool[off + i];
        }
      }
    }
    return out;
  }
};

// Prefill attention arguments for p: each sequence's queries (its last queryLen positions) in tiles
// of kPrefillTileRows rows, as the engine's forward plan cuts them.
struct PrefillTiles {
  ms::cuda::PrefillAttentionArgs a;
  ms::cuda::PrefillTile* d = nullptr;
  explicit PrefillTiles(const PagedProblem& p) {
    using ms::cuda::kPrefillTileRows;
    std::vector<ms::cuda::PrefillTile> t;
    for (int s = 0; s < p.numSeqs; s++)
      for (int i = 0; i < p.queryLen; i += kPrefillTileRows)
        t.push_back({s, s * p.queryLen + i, std::min(kPrefillTileRows, p.queryLen - i), p.ctx - p.queryLen + i});
    d = upload(t);
    a.q = p.dQ, a.qStride = p.heads * p.D, a.out = p.dOut, a.outStride = p.heads * p.D;
    a.tiles = d, a.numTiles = int(t.size()), a.pageTable = p.dPageTable, a.ptStride = p.maxPages;
    a.kv = p.kv(), a.heads = p.heads, a.scale = 1.f / std::sqrt(float(p.D));
  }
  ~PrefillTiles() { cudaFree(d); }
  PrefillTiles(const PrefillTiles&) = delete;
};

}  // namespace bench
