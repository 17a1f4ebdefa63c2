// Checks every CUDA kernel of the backend against a float64 CPU reference on fresh random data
// (head dims 16/32/64/128, GQA 1/2/4/8, ragged batches with prefixes in the pages, odd sizes).
// Built on the GPU host by bench/gpu/run.sh (target microserve_kernels_check); prints one line
// per check and exits 1 if any fails. The sampling extras' checks are in extras-check.cu.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "../../native/src/common/half.h"
#include "cuda/check.h"
#include "cuda/gemm.h"
#include "cuda/kernels.h"
#include "cuda/sampling.h"
#include "common/sampling.h"
#include "check-device.h"

using namespace ms::cuda;
using ms::check::download;
using ms::check::medianEventUs;
using ms::check::upload;
using ms::bf16ToF32;
using ms::f32ToBf16;

int checkSamplingExtras();  // extras-check.cu: returns the number of failed checks

namespace {

std::mt19937_64 rng(12345);
int numFailed = 0;

std::vector<float> randn(size_t n, float mean = 0.f, float sd = 1.f) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
// Rounds to bf16 in place and returns the bits.
std::vector<uint16_t> toBf16(std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    h[i] = f32ToBf16(v[i]);
    v[i] = bf16ToF32(h[i]);
  }
  return h;
}
std::vector<float> bf16Vec(const std::vector<uint16_t>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); i++) v[i] = bf16ToF32(h[i]);
  return v;
}
int clusterChecks = 0;  // decode attention checks run in clusters (some must run where clusters exist)
void check(const std::string& name, const std::vector<float>& got, const std::vector<double>& ref, double tol) {
  double num = 0, den = 0;
  bool finite = true;
  for (size_t i = 0; i < ref.size(); i++) {
    finite = finite && std::isfinite(got[i]);
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  double err = std::sqrt(num / (den > 0 ? den : 1));
  bool ok = finite && err <= tol;
  if (!ok) numFailed++;
  std::printf("%-58s rel err %.2e (tol %.0e) %s\n", name.c_str(), err, tol, ok ? "PASS" : "FAIL");
  if (!ok) {  // where: the first few elements off by more than the tolerance (or not finite)
    const double scale = std::sqrt(den / std::max<size_t>(ref.size(), 1));
    int shown = 0, bad = 0;
    for (size_t i = 0; i < ref.size(); i++)
      if (!std::isfinite(got[i]) || std::fabs(got[i] - ref[i]) > tol * scale) {
        if (shown < 4) std::printf("    [%zu] got %g, want %g\n", i, double(got[i]), ref[i]), shown++;
        bad++;
      }
    std::printf("    %d of %zu elements off\n", bad, ref.size());
  }
}

void checkRmsNormSilu() {
  const int H = 4096, n = 3;
  auto x = randn(size_t(n) * H, 0.f, 2.f), w = randn(H, 1.f, 0.2f);
  float *dx = upload(x), *dw = upload(w);
  std::vector<int32_t> rows = {2, 0};
  int32_t* drows = upload(rows);
  bf16* dout;
  MS_CUDA_CHECK(cudaMalloc(&dout, size_t(n) * H * 2));
  rmsNorm(dx, drows, 2, H, dw, 1e-5f, dout, 0);
  auto got = bf16Vec(download<uint16_t>(dout, size_t(2) * H));
  std::vector<double> ref(size_t(2) * H);
  for (int r = 0; r < 2; r++) {
    const float* xr = &x[size_t(rows[r]) * H];
    double ss = 0;
    for (int i = 0; i < H; i++) ss += double(xr[i]) * xr[i];
    double inv = 1.0 / std::sqrt(ss / H + 1e-5);
    for (int i = 0; i < H; i++) ref[size_t(r) * H + i] = w[i] * xr[i] * inv;
  }
  check("rmsNorm (row gather)", got, ref, 1e-2);

  for (int inter : {200, 256}) {
    auto gu = randn(size_t(n) * 2 * inter, 0.f, 2.f);
    auto guh = toBf16(gu);
    uint16_t* dgu = upload(guh);
    siluMul(reinterpret_cast<bf16*>(dgu), n, inter, dout, 0);
    auto g2 = bf16Vec(download<uint16_t>(dout, size_t(n) * inter));
    std::vector<double> r2(size_t(n) * inter);
    for (int t = 0; t < n; t++)
      for (int j = 0; j < inter; j++) {
        double g = gu[size_t(t) * 2 * inter + 2 * j], u = gu[size_t(t) * 2 * inter + 2 * j + 1];
        r2[size_t(t) * inter + j] = g / (1 + std::exp(-g)) * u;
      }
    check("siluMul inter=" + std::to_string(inter), g2, r2, 1e-2);
    cudaFree(dgu);
  }
  // Embedding gather: exact.
  auto table = randn(size_t(50) * 64);
  auto th = toBf16(table);
  uint16_t* dt = upload(th);
  std::vector<int32_t> toks = {3, 49, 0};
  int32_t* dtok = upload(toks);
  embedGather(dtok, 3, reinterpret_cast<bf16*>(dt), 64, dx, 0);
  auto e = download<float>(dx, 3 * 64);
  std::vector<double> er(3 * 64);
  for (int t = 0; t < 3; t++)
    for (int i = 0; i < 64; i++) er[t * 64 + i] = table[size_t(toks[t]) * 64 + i];
  check("embedGather", e, er, 0);
  cudaFree(dx), cudaFree(dw), cudaFree(drows), cudaFree(dout), cudaFree(dt), cudaFree(dtok);
}

// (T, O) = x (T, K) . w (O, K)^T in float64.
std::vector<double> productRef(const std::vector<float>& x, const std::vector<float>& w, int T, int O, int K) {
  std::vector<double> prod(size_t(T) * O);
  for (int t = 0; t < T; t++)
    for (int o = 0; o < O; o++) {
      double s = 0;
      for (int k = 0; k < K; k++) s += double(x[size_t(t) * K + k]) * w[size_t(o) * K + k];
      prod[size_t(t) * O + o] = s;
    }
  return prod;
}

// silu(gate) * up of each gate/up row pair (rows 2j, 2j + 1 of prod (T, O)) for the first `pairs`
// pairs, gate and up rounded to bf16 first as the kernels do.
std::vector<double> siluPairRef(const std::vector<double>& prod, int T, int O, int pairs) {
  std::vector<double> ref(size_t(T) * pairs);
  for (int t = 0; t < T; t++)
    for (int j = 0; j < pairs; j++) {
      const double g = bf16ToF32(f32ToBf16(float(prod[size_t(t) * O + 2 * j])));
      const double u = bf16ToF32(f32ToBf16(float(prod[size_t(t) * O + 2 * j + 1])));
      ref[size_t(t) * pairs + j] = g / (1 + std::exp(-g)) * u;
    }
  return ref;
}

// One product in each output mode (bf16, f32, f32 +=) against its float64 reference prod (T, O):
// run(Y, mode) writes Y; with poison Y starts as NaN but for += (every element must be written).
void checkModes(const std::string& name, int T, int O, const std::vector<double>& prod, bool poison,
                const std::function<void(float*, OutMode)>& run) {
  for (OutMode mode : {OutMode::Bf16, OutMode::F32, OutMode::F32Add}) {
    auto y0 = randn(size_t(T) * O);
    float* dy = upload(y0);
    if (poison && mode != OutMode::F32Add) MS_CUDA_CHECK(cudaMemset(dy, 0xff, size_t(T) * O * 4));
    run(dy, mode);
    std::vector<float> got;
    std::vector<double> ref = prod;
    if (mode == OutMode::Bf16) {
      got = bf16Vec(download<uint16_t>(dy, size_t(T) * O));
    } else {
      got = download<float>(dy, size_t(T) * O);
      if (mode == OutMode::F32Add)
        for (size_t i = 0; i < ref.size(); i++) ref[i] += y0[i];
    }
    const char* mname = mode == OutMode::Bf16 ? "bf16" : mode == OutMode::F32 ? "f32" : "f32 add";
    check(name + " " + mname, got, ref, mode == OutMode::Bf16 ? 1e-2 : 1e-4);
    cudaFree(dy);
  }
}

void checkGemms() {
  Gemm gemm;
  const int O = 300, K = 512;
  auto w = randn(size_t(O) * K);
  auto wh = toBf16(w);
  bf16* dw = reinterpret_cast<bf16*>(upload(wh));
  for (int T : {1, 2, 3, 5, 8, 70}) {
    auto x = randn(size_t(T) * K);
    auto xh = toBf16(x);
    bf16* dx = reinterpret_cast<bf16*>(upload(xh));
    const std::vector<double> prod = productRef(x, w, T, O, K);
    for (int impl = 0; impl < 2; impl++) {
      if (impl == 0 && T > kSkinnyMaxTokens) continue;
      checkModes(std::string(impl == 0 ? "skinnyGemm" : "cuBLASLt") + " T=" + std::to_string(T), T, O, prod, false,
                 [&](float* dy, OutMode mode) {
                   if (impl == 0)
                     skinnyGemm(dx, T, dw, O, K, dy, mode, 0);
                   else
                     gemm.run(dx, T, dw, O, K, dy, mode, 0);
                 });
    }
    cudaFree(dx);
  }
  // SiluPairBf16: rows 2j, 2j + 1 of W are a gate/up pair; Y (T, O / 2) = silu(gate) * up.
  for (int T : {1, 3, 8}) {
    auto x = randn(size_t(T) * K);
    auto xh = toBf16(x);
    bf16* dx = reinterpret_cast<bf16*>(upload(xh));
    const std::vector<double> ref = siluPairRef(productRef(x, w, T, O, K), T, O, O / 2);
    bf16* dy;
    MS_CUDA_CHECK(cudaMalloc(&dy, size_t(T) * O));
    skinnyGemm(dx, T, dw, O, K, dy, OutMode::SiluPairBf16, 0);
    check("skinnyGemm silu pair T=" + std::to_string(T), bf16Vec(download<uint16_t>(dy, size_t(T) * O / 2)), ref, 1e-2);
    cudaFree(dy), cudaFree(dx);
  }
  cudaFree(dw);
  // Tails and the fixture's shapes at 2..8 tokens: rows not a multiple of 16 and K not a multiple
  // of 128 (the tensor-core form at 2..4 tokens, the FMA form at 7..8), every mode, outputs
  // poisoned but for +=; gate/up pairs not a multiple of 8.
  for (const auto& shape : {std::array<int, 3>{77, 520, 74}, {128, 64, 128}, {64, 192, 64}, {1024, 64, 384}}) {
    const int O3 = shape[0], K3 = shape[1], P3 = shape[2];
    auto w3 = randn(size_t(O3) * K3);
    auto w3h = toBf16(w3);
    bf16* dw3 = reinterpret_cast<bf16*>(upload(w3h));
    for (int T : {2, 4, 7, 8}) {
      auto x = randn(size_t(T) * K3);
      auto xh = toBf16(x);
      bf16* dx = reinterpret_cast<bf16*>(upload(xh));
      const std::vector<double> prod = productRef(x, w3, T, O3, K3);
      checkModes("skinnyGemm T=" + std::to_string(T) + " O=" + std::to_string(O3) + " K=" + std::to_string(K3), T, O3,
                 prod, true, [&](float* dy, OutMode mode) { skinnyGemm(dx, T, dw3, O3, K3, dy, mode, 0); });
      const std::vector<double> ref = siluPairRef(prod, T, O3, P3 / 2);
      bf16* dy;
      MS_CUDA_CHECK(cudaMalloc(&dy, size_t(T) * P3));
      MS_CUDA_CHECK(cudaMemset(dy, 0xff, size_t(T) * P3));
      skinnyGemm(dx, T, dw3, P3, K3, dy, OutMode::SiluPairBf16, 0);  // the first P3 rows of W
      check("skinnyGemm silu pair T=" + std::to_string(T) + " pairs=" + std::to_string(P3 / 2) + " K=" +
                std::to_string(K3),
            bf16Vec(download<uint16_t>(dy, size_t(T) * P3 / 2)), ref, 1e-2);
      cudaFree(dy), cudaFree(dx);
    }
    cudaFree(dw3);
  }
  // T = 1 over long rows (K >= 8192: one row per warp, 8 blocks per SM).
  {
    const int O2 = 301, K2 = 10240;
    auto w2 = randn(size_t(O2) * K2), x2 = randn(K2);
    auto w2h = toBf16(w2), x2h = toBf16(x2);
    bf16 *dw2 = reinterpret_cast<bf16*>(upload(w2h)), *dx2 = reinterpret_cast<bf16*>(upload(x2h));
    checkModes("skinnyGemm T=1 K=10240", 1, O2, productRef(x2, w2, 1, O2, K2), true,
               [&](float* dy, OutMode mode) { skinnyGemm(dx2, 1, dw2, O2, K2, dy, mode, 0); });
    cudaFree(dw2), cudaFree(dx2);
  }
}

// Every cuBLASLt candidate the autotune may time (the heuristic's algorithms and their split-K
// variants, gemm.cc) against the float64 reference: a (T, O, K) product for each T of Ts in each
// of modes, on numCols output columns spread over O (0: all), where the engine's shapes make a full
// reference too slow. Each candidate runs twice from the same inputs and must give the same bits
// (split-K reduces its f32 parts in a fixed order).
void checkGemmCandidates(const char* name, int O, int K, std::initializer_list<int> Ts,
                         std::initializer_list<OutMode> modes, int numCols) {
  Gemm gemm;
  auto w = randn(size_t(O) * K, 0.f, 0.05f);
  auto wh = toBf16(w);
  bf16* dw = reinterpret_cast<bf16*>(upload(wh));
  std::vector<int> cols;
  for (int i = 0; i < (numCols ? numCols : O); i++) cols.push_back(numCols ? int(int64_t(i) * O / numCols + i % 7) % O : i);
  for (int T : Ts) {
    auto x = randn(size_t(T) * K);
    auto xh = toBf16(x);
    bf16* dx = reinterpret_cast<bf16*>(upload(xh));
    std::vector<double> prod(size_t(T) * cols.size());  // (T, cols)
    for (int t = 0; t < T; t++)
      for (size_t j = 0; j < cols.size(); j++) {
        double acc = 0;
        const float *xr = &x[size_t(t) * K], *wr = &w[size_t(cols[j]) * K];
        for (int k = 0; k < K; k++) acc += double(xr[k]) * wr[k];
        prod[size_t(t) * cols.size() + j] = acc;
      }
    for (OutMode mode : modes) {
      const int n = gemm.numCandidates(T, O, K, mode);
      int ran = 0, splitK = 0, bad = 0, unstable = 0;
      double worst = 0;
      const double tol = mode == OutMode::Bf16 ? 1e-2 : 1e-4;
      auto y0 = randn(size_t(T) * O);
      float* dy = upload(y0);
      const size_t words = mode == OutMode::Bf16 ? (size_t(T) * O + 1) / 2 : size_t(T) * O;
      for (int i = 0; i < n; i++) {
        std::vector<uint32_t> bits[2];
        Gemm::Choice what;
        bool ok = true;
        for (int rep = 0; rep < 2 && ok; rep++) {
          MS_CUDA_CHECK(cudaMemcpy(dy, y0.data(), y0.size() * 4, cudaMemcpyHostToDevice));
          ok = gemm.runCandidate(i, dx, T, dw, O, K, dy, mode, 0, &what);
          bits[rep] = download<uint32_t>(dy, words);
        }
        if (!ok) continue;  // cuBLASLt refused it at run time: tune() skips it the same way
        ran++;
        splitK += what.splitK > 0;
        unstable += bits[0] != bits[1];
        double num = 0, den = 0;
        bool finite = true;
        for (int t = 0; t < T; t++)
          for (size_t j = 0; j < cols.size(); j++) {
            const size_t at = size_t(t) * O + cols[j];
            double ref = prod[size_t(t) * cols.size() + j], got;
            if (mode == OutMode::Bf16) {
              got = bf16ToF32(reinterpret_cast<const uint16_t*>(bits[0].data())[at]);
            } else {
              float f;
              std::memcpy(&f, &bits[0][at], 4);
              got = f;
              if (mode == OutMode::F32Add) ref += y0[at];
            }
            finite = finite && std::isfinite(got);
            num += (got - ref) * (got - ref), den += ref * ref;
          }
        const double err = finite ? std::sqrt(num / den) : INFINITY;
        worst = std::max(worst, err);
        if (err > tol) {
          bad++;
          std::printf("    candidate %d (rank %d, split-K %d): rel err %.2e\n", i, what.rank, what.splitK, err);
        }
      }
      cudaFree(dy);
      const bool ok = ran > 0 && bad == 0 && unstable == 0;
      if (!ok) numFailed++;
      const char* mname = mode == OutMode::Bf16 ? "bf16" : mode == OutMode::F32 ? "f32" : "f32 add";
      std::printf("%-58s %d of %d ran (%d split-K), worst rel err %.2e (tol %.0e), %d not bitwise repeatable %s\n",
                  (std::string("cuBLASLt candidates ") + name + " T=" + std::to_string(T) + " " + mname).c_str(), ran,
                  n, splitK, worst, tol, unstable, ok ? "PASS" : "FAIL");
    }
    cudaFree(dx);
  }
  cudaFree(dw);
}

// The split kernel's scratch for n queries under a's plan (partials, zeroed counters), set in a;
// freed with the object.
struct SplitScratch {
  float *po = nullptr, *pml = nullptr;
  int32_t* cnt = nullptr;
  SplitScratch(DecodeAttentionArgs& a, size_t n, int D) {
    MS_CUDA_CHECK(cudaMalloc(&po, n * a.heads * a.maxSplits * D * 4));
    MS_CUDA_CHECK(cudaMalloc(&pml, n * a.heads * a.maxSplits * 2 * 4));
    MS_CUDA_CHECK(cudaMalloc(&cnt, n * a.kv.kvHeads * 4));
    MS_CUDA_CHECK(cudaMemset(cnt, 0, n * a.kv.kvHeads * 4));
    a.partO = po, a.partML = pml, a.counters = cnt;
  }
  SplitScratch(const SplitScratch&) = delete;
  ~SplitScratch() { cudaFree(po), cudaFree(pml), cudaFree(cnt); }
};

// a's plan in clusters of up to cap blocks (counted in clusterChecks); false where it stays in
// fixed splits (one split, or too long for clusters): nothing to check then.
bool clusterPlan(DecodeAttentionArgs& a, int cap) {
  planDecodeCluster(a, std::min(cap, decodeMaxCluster()));
  if (a.clusterSize == 0) return false;
  clusterChecks++;
  return true;
}

// Host-side invariants of the split plans the attention tuning may pick (every waves and split
// length candidate, every graph batch and context bucket, every context the bucket replays): the
// plan keeps to its split length bound, the kernel's even split never takes more keys per block
// than the plan's splitLen (its shared page-id table is sized by it) nor more splits than the grid
// has, and it stays a multiple of 16 keys.
void checkSplitPlans() {
  int bad = 0, plans = 0;
  for (int maxLen : kDecodeSplitLens)
    for (int waves : kDecodeWaves)
      for (int b : {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256})
        for (int ctxB = 256; ctxB <= 16384; ctxB *= 2) {
          int splitLen, maxSplits;
          planDecodeSplits(b, 8, ctxB, 132, &splitLen, &maxSplits, waves, maxLen);
          plans++;
          bad += splitLen % 64 != 0 || splitLen > maxLen || int64_t(splitLen) * maxSplits < ctxB;
          for (int ctx = 1; ctx <= ctxB; ctx += ctx < 300 ? 1 : 37) {
            const int len = evenSplitLen(ctx, maxSplits);
            bad += len > splitLen || len % 16 != 0 || (ctx + len - 1) / len > maxSplits;
          }
        }
  if (bad) numFailed++;
  std::printf("%-58s %d plans, %d violations %s\n", "decode split plans (waves 1-32, len <= 512-2048, even)", plans, bad,
              bad ? "FAIL" : "PASS");
}

// RoPE + KV append, then decode and prefill attention over a ragged batch with prefixes.
// clusterWarps: DecodeAttentionArgs::clusterWarps of the cluster launches (0: the launcher's choice);
// ropeOnly: stop after RoPE + append (head dims the attention kernels do not take).
void checkAttention(int D, int rep, int pageSize, int clusterWarps = 0, bool ropeOnly = false) {
  const int kvHeads = 2, heads = kvHeads * rep, layers = 2, layer = 1, kvDim = kvHeads * D;
  const int qkvDim = (heads + 2 * kvHeads) * D;
  struct Seq {
    int prefix, len;
  };
  std::vector<Seq> seqs = {{0, 150}, {37, 20}, {1200, 1}, {3, 1}, {64, 65}};
  const int numSeqs = int(seqs.size());
  int maxPages = 0, totalPages = 0, N = 0;
  for (auto& s : seqs) {
    int p = (s.prefix + s.len + pageSize - 1) / pageSize;
    maxPages = std::max(maxPages, p);
    totalPages += p;
    N += s.len;
  }
  const int numPages = totalPages + 3;
  const int64_t pageElems = int64_t(layers) * 2 * pageSize * kvDim;
  // Page tables: a random permutation of the pool.
  std::vector<int32_t> perm(numPages);
  for (int i = 0; i < numPages; i++) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> pt(size_t(numSeqs) * maxPages, -1);
  for (int s = 0, next = 0; s < numSeqs; s++) {
    int p = (seqs[s].prefix + seqs[s].len + pageSize - 1) / pageSize;
    for (int i = 0; i < p; i++) pt[size_t(s) * maxPages + i] = perm[next++];
  }
  // Pool: random everywhere (prefix KV and garbage alike).
  auto pool = randn(size_t(numPages) * pageElems);
  auto poolh = toBf16(pool);
  bf16* dpool = reinterpret_cast<bf16*>(upload(poolh));
  std::vector<int32_t> pos(N), seqOf(N);
  for (int s = 0, t = 0; s < numSeqs; s++)
    for (int i = 0; i < seqs[s].len; i++, t++) pos[t] = seqs[s].prefix + i, seqOf[t] = s;
  auto qkv = randn(size_t(N) * qkvDim);
  auto qkvh = toBf16(qkv);
  bf16* dqkv = reinterpret_cast<bf16*>(upload(qkvh));
  std::vector<float> invFreq(D / 2);
  for (int i = 0; i < D / 2; i++) invFreq[i] = 1.f / std::pow(500000.f, float(2 * i) / D) / (i % 3 == 0 ? 8.f : 1.f);
  float* dinv = upload(invFreq);
  int32_t *dpos = upload(pos), *dseq = upload(seqOf), *dpt = upload(pt);
  auto freeInputs = [&] {
    for (void* p : {(void*)dpool, (void*)dqkv, (void*)dinv, (void*)dpos, (void*)dseq, (void*)dpt}) cudaFree(p);
  };
  TokenMeta meta;
  meta.pos = dpos;
  meta.seqOf = dseq;
  meta.pageTable = dpt;
  meta.ptStride = maxPages;
  meta.numTokens = N;
  KvLayer kv;
  kv.base = dpool + int64_t(layer) * 2 * pageSize * kvDim;
  kv.pageStride = pageElems;
  kv.pageSize = pageSize;
  kv.kvHeads = kvHeads;
  kv.headDim = D;
  kv.numPages = numPages;
  ropeAppend(dqkv, meta, heads, dinv, kv, 0);
  auto qkvAfter = bf16Vec(download<uint16_t>(dqkv, qkv.size()));
  auto poolAfter = bf16Vec(download<uint16_t>(dpool, pool.size()));
  // RoPE reference on q and k, V copy.
  std::vector<float> gotRope;
  std::vector<double> refRope;
  const int half = D / 2;
  for (int t = 0; t < N; t++) {
    int s = seqOf[t], p = pos[t];
    int64_t slot = int64_t(pt[size_t(s) * maxPages + p / pageSize]) * pageElems + int64_t(layer) * 2 * pageSize * kvDim +
                   int64_t(p % pageSize) * kvDim;
    for (int h = 0; h < heads + kvHeads; h++)
      for (int i = 0; i < D; i++) {
        int j = i % half;
        double ang = double(float(p) * invFreq[j]);
        double a = qkv[size_t(t) * qkvDim + h * D + j], b = qkv[size_t(t) * qkvDim + h * D + j + half];
        double r = i < half ? a * std::cos(ang) - b * std::sin(ang) : b * std::cos(ang) + a * std::sin(ang);
        refRope.push_back(r);
        gotRope.push_back(h < heads ? qkvAfter[size_t(t) * qkvDim + h * D + i] : poolAfter[slot + (h - heads) * D + i]);
      }
    for (int i = 0; i < kvDim; i++) {
      refRope.push_back(qkv[size_t(t) * qkvDim + (heads + kvHeads) * D + i]);
      gotRope.push_back(poolAfter[slot + int64_t(pageSize) * kvDim + i]);
    }
  }
  std::string tag = "D=" + std::to_string(D) + " rep=" + std::to_string(rep) + " page=" + std::to_string(pageSize);
  check("ropeAppend " + tag, gotRope, refRope, 1e-2);
  if (ropeOnly) return freeInputs();

  // Reference attention from the device's own bf16 q and pages.
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> ref(size_t(N) * heads * D);
  for (int t = 0; t < N; t++) {
    int s = seqOf[t], ctx = pos[t] + 1;
    for (int h = 0; h < heads; h++) {
      int g = h / rep;
      std::vector<double> sc(ctx);
      double mx = -1e300;
      for (int j = 0; j < ctx; j++) {
        int64_t off = int64_t(pt[size_t(s) * maxPages + j / pageSize]) * pageElems + int64_t(layer) * 2 * pageSize * kvDim +
                      int64_t(j % pageSize) * kvDim + g * D;
        double d = 0;
        for (int i = 0; i < D; i++) d += double(qkvAfter[size_t(t) * qkvDim + h * D + i]) * poolAfter[off + i];
        sc[j] = d * scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (int j = 0; j < ctx; j++) sum += (sc[j] = std::exp(sc[j] - mx));
      for (int j = 0; j < ctx; j++) {
        int64_t off = int64_t(pt[size_t(s) * maxPages + j / pageSize]) * pageElems + int64_t(layer) * 2 * pageSize * kvDim +
                      int64_t(pageSize) * kvDim + int64_t(j % pageSize) * kvDim + g * D;
        for (int i = 0; i < D; i++) ref[(size_t(t) * heads + h) * D + i] += sc[j] / sum * poolAfter[off + i];
      }
    }
  }
  bf16* dout;
  MS_CUDA_CHECK(cudaMalloc(&dout, ref.size() * 2));
  // Fixed splits on tensor copies give the same values as on cp.async (the same products in the
  // same order; only the loads differ): every element of the queries' rows (null: all) compared.
  auto sameAsCpAsync = [&](DecodeAttentionArgs ak, const std::vector<float>& got, const std::string& name,
                           const std::vector<int32_t>* rows = nullptr) {
    if (ak.clusterSize != 0 || !decodeAttentionTensorCopies(ak.kv)) return;
    ak.tensorCopies = false;
    MS_CUDA_CHECK(cudaMemset(dout, 0xff, ref.size() * 2));
    decodeAttentionMma(ak, 0);
    const auto cp = bf16Vec(download<uint16_t>(dout, ref.size()));
    std::vector<float> g;
    std::vector<double> want;
    const size_t row = size_t(heads) * D;
    for (size_t t = 0; t < ref.size() / row; t++)
      if (!rows || std::find(rows->begin(), rows->end(), int32_t(t)) != rows->end())
        for (size_t i = t * row; i < (t + 1) * row; i++) g.push_back(got[i]), want.push_back(cp[i]);
    check(name + " = cp.async", g, want, 0.0);
  };
  // Decode kernel on every token (it handles any token), with the planned split and with 64-key splits.
  std::vector<int32_t> all(N);
  for (int t = 0; t < N; t++) all[t] = t;
  int32_t* dall = upload(all);
  int maxCtx = 0;
  for (int p : pos) maxCtx = std::max(maxCtx, p + 1);
  for (int forced = 0; forced < 2; forced++) {
    DecodeAttentionArgs a;
    a.q = dqkv;
    a.qStride = qkvDim;
    a.out = dout;
    a.outStride = heads * D;
    a.queries = dall;
    a.numQueries = N;
    a.meta = meta;
    a.kv = kv;
    a.heads = heads;
    a.scale = float(scale);
    planDecodeSplits(N, kvHeads, maxCtx, 132, &a.splitLen, &a.maxSplits);
    if (forced) a.splitLen = 64, a.maxSplits = (maxCtx + 63) / 64;
    SplitScratch scratch(a, N, D);
    // 0: fixed splits; 1, 2: in clusters of up to 16 and 8 blocks (each with clusterWarps warps)
    for (int kernel = 0; kernel < 3; kernel++)
      for (int again = 0; again < 2; again++) {  // the second launch reuses the counters (left at zero)
        DecodeAttentionArgs ak = a;
        ak.clusterWarps = clusterWarps;
        if (kernel >= 1 && !clusterPlan(ak, kernel == 1 ? 16 : 8)) continue;
        MS_CUDA_CHECK(cudaMemset(dout, 0xff, ref.size() * 2));  // poison: NaN bf16
        decodeAttentionMma(ak, 0);
        auto got = bf16Vec(download<uint16_t>(dout, ref.size()));
        const std::string name = std::string(kernel ? "decodeAttentionMma cluster " : "decodeAttentionMma ") + tag +
                                 " split=" + std::to_string(ak.splitLen) +
                                 (kernel ? " cluster=" + std::to_string(ak.clusterSize) : "") + (again ? " again" : "");
        check(name, got, ref, 1e-2);
        if (!again) sameAsCpAsync(ak, got, name);
      }
    // Fixed splits with the context spread evenly over the grid, and with three K/V tiles in flight.
    for (auto [even, stages] : {std::pair<bool, int>{true, 2}, {false, 3}, {true, 3}}) {
      DecodeAttentionArgs ak = a;
      ak.evenSplits = even, ak.stages = stages;
      MS_CUDA_CHECK(cudaMemset(dout, 0xff, ref.size() * 2));
      decodeAttentionMma(ak, 0);
      const auto got = bf16Vec(download<uint16_t>(dout, ref.size()));
      const std::string name = "decodeAttentionMma " + tag + " split=" + std::to_string(ak.splitLen) +
                               (even ? " even" : "") + " stages=" + std::to_string(stages);
      check(name, got, ref, 1e-2);
      sameAsCpAsync(ak, got, name);
    }
    // The entry point (decodeAttention) plans clusters itself under clusterCap: as the backend runs it.
    for (int cap : {16, 0}) {
      DecodeAttentionArgs ak = a;
      ak.clusterCap = cap;
      MS_CUDA_CHECK(cudaMemset(dout, 0xff, ref.size() * 2));
      decodeAttention(ak, 0);
      check("decodeAttention " + tag + " split=" + std::to_string(a.splitLen) + " clusterCap=" + std::to_string(cap),
            bf16Vec(download<uint16_t>(dout, ref.size())), ref, 1e-2);
    }
  }
  // Fused RoPE + KV append (ropeInvFreq) on the one-token sequences, as a pure-decode layer runs:
  // from the unrotated qkv and a pool whose newest slots are poisoned, the same attention output
  // as above and the same K/V in the slots as ropeAppend wrote.
  {
    std::vector<int32_t> dec;
    int decCtx = 0;
    for (int s = 0, t = 0; s < numSeqs; t += seqs[s].len, s++)
      if (seqs[s].len == 1) dec.push_back(t), decCtx = std::max(decCtx, pos[t] + 1);
    int32_t* ddec = upload(dec);
    bf16* dqkv0 = reinterpret_cast<bf16*>(upload(qkvh));  // as the qkv product wrote it: unrotated
    auto poolBits = download<uint16_t>(dpool, pool.size());
    std::vector<int64_t> slots;
    for (int t : dec) {
      const int s = seqOf[t], p = pos[t];
      slots.push_back(int64_t(pt[size_t(s) * maxPages + p / pageSize]) * pageElems +
                      int64_t(layer) * 2 * pageSize * kvDim + int64_t(p % pageSize) * kvDim);
      for (int i = 0; i < kvDim; i++)
        poolBits[slots.back() + i] = poolBits[slots.back() + int64_t(pageSize) * kvDim + i] = 0xffff;  // NaN
    }
    bf16* dpool2 = reinterpret_cast<bf16*>(upload(poolBits));
    // 2, 3: the plan in clusters of up to 16 and 8 blocks; 4-6: fixed 512-key splits (the newest key
    // in a block's third tile) with two or three tiles in flight, and spread evenly with three; 7:
    // 2048-key splits (kMaxSplitLen: the longest the attention tuning may choose), three tiles.
    for (int forced = 0; forced < 8; forced++) {
      DecodeAttentionArgs a;
      a.q = dqkv0;
      a.qStride = qkvDim;
      a.out = dout;
      a.outStride = heads * D;
      a.queries = ddec;
      a.numQueries = int(dec.size());
      a.meta = meta;
      a.kv = kv;
      a.kv.base = dpool2 + int64_t(layer) * 2 * pageSize * kvDim;
      a.heads = heads;
      a.scale = float(scale);
      a.ropeInvFreq = dinv;
      a.clusterWarps = clusterWarps;
      planDecodeSplits(a.numQueries, kvHeads, decCtx, 132, &a.splitLen, &a.maxSplits);
      if (forced == 1) a.splitLen = 64, a.maxSplits = (decCtx + 63) / 64;
      if (forced >= 4) a.splitLen = 512, a.maxSplits = (decCtx + 511) / 512;
      if (forced == 7) a.splitLen = kMaxSplitLen, a.maxSplits = (decCtx + kMaxSplitLen - 1) / kMaxSplitLen;
      a.stages = forced == 5 || forced == 6 || forced == 7 ? 3 : 2;
      a.evenSplits = forced == 6;
      if ((forced == 2 || forced == 3) && !clusterPlan(a, forced == 2 ? 16 : 8)) continue;
      SplitScratch scratch(a, dec.size(), D);
      MS_CUDA_CHECK(cudaMemset(dout, 0xff, ref.size() * 2));
      decodeAttentionMma(a, 0);
      auto all = bf16Vec(download<uint16_t>(dout, ref.size()));
      auto pool2 = bf16Vec(download<uint16_t>(dpool2, pool.size()));
      std::vector<float> got, gotKv;
      std::vector<double> want, wantKv;
      for (size_t k = 0; k < dec.size(); k++) {
        for (int i = 0; i < heads * D; i++)
          got.push_back(all[size_t(dec[k]) * heads * D + i]), want.push_back(ref[size_t(dec[k]) * heads * D + i]);
        for (int i = 0; i < kvDim; i++)
          for (int64_t off : {slots[k] + i, slots[k] + int64_t(pageSize) * kvDim + i})
            gotKv.push_back(pool2[off]), wantKv.push_back(poolAfter[off]);
      }
      const std::string sp = " split=" + std::to_string(a.splitLen) +
                             (a.clusterSize ? " cluster=" + std::to_string(a.clusterSize) : "") +
                             (a.evenSplits ? " even" : "") + (a.stages == 3 ? " stages=3" : "");
      check("decodeAttentionMma fused rope " + tag + sp, got, want, 1e-2);
      check("decodeAttentionMma fused rope, appended K/V " + tag + sp, gotKv, wantKv, 1e-2);
      sameAsCpAsync(a, all, "decodeAttentionMma fused rope " + tag + sp, &dec);
    }
    cudaFree(ddec), cudaFree(dqkv0), cudaFree(dpool2);
  }
  // Prefill kernel on every sequence (one-token sequences included).
  std::vector<PrefillTile> tiles;
  for (int s = 0, t = 0; s < numSeqs; t += seqs[s].len, s++)
    for (int i = 0; i < seqs[s].len; i += kPrefillTileRows)
      tiles.push_back({s, t + i, std::min(kPrefillTileRows, seqs[s].len - i), seqs[s].prefix + i});
  PrefillTile* dtiles = upload(tiles);
  PrefillAttentionArgs p;
  p.q = dqkv;
  p.qStride = qkvDim;
  p.out = dout;
  p.outStride = heads * D;
  p.tiles = dtiles;
  p.numTiles = int(tiles.size());
  p.pageTable = dpt;
  p.ptStride = maxPages;
  p.kv = kv;
  p.heads = heads;
  p.scale = float(scale);
  // The kernel prefillAttention picks for the shape, and the mma.sync kernel where that is wgmma.
  auto checkPrefill = [&](void (*run)(const PrefillAttentionArgs&, cudaStream_t), const char* kernel) {
    MS_CUDA_CHECK(cudaMemset(dout, 0xff, ref.size() * 2));
    run(p, 0);
    const auto got = bf16Vec(download<uint16_t>(dout, ref.size()));
    check(std::string("prefillAttention (") + kernel + ") " + tag, got, ref, 2e-2);
  };
  const bool wgmma = prefillAttentionWgmmaFits(p);
  checkPrefill(prefillAttention, wgmma ? "wgmma" : "mma.sync");
  if (wgmma) checkPrefill(prefillAttentionMma, "mma.sync");
  cudaFree(dout), cudaFree(dall), cudaFree(dtiles);
  freeInputs();
}

void checkRandom() {
  const size_t n = size_t(1) << 22;
  bf16* a;
  float* b;
  MS_CUDA_CHECK(cudaMalloc(&a, n * 2));
  MS_CUDA_CHECK(cudaMalloc(&b, n * 4));
  randomNormalBf16(a, n, 42, 3, 0.f, 1.f, 0);
  randomNormalF32(b, n, 42, 3, 0.f, 1.f, 0);
  auto va = bf16Vec(download<uint16_t>(a, n));
  auto vb = download<float>(b, n);
  double s = 0, ss = 0;
  bool same = true;
  for (size_t i = 0; i < n; i++) s += va[i], ss += double(va[i]) * va[i], same = same && va[i] == vb[i];
  double mean = s / n, sd = std::sqrt(ss / n - mean * mean);
  bool ok = same && std::fabs(mean) < 0.01 && std::fabs(sd - 1) < 0.01;
  if (!ok) numFailed++;
  std::printf("%-58s mean %.4f sd %.4f same-stream %d %s\n", "randomNormal", mean, sd, int(same), ok ? "PASS" : "FAIL");
  cudaFree(a), cudaFree(b);
}

// Sampling (cuda/sampling.cu) against the host definition (common/sampling.h): greedy rows and the
// integer part (threshold search, draw, id-order scan on the GPU's own weights) exactly; the GPU's
// float32 weights within 4e-6 relative (+2) of the host's float64 ones; tokens equal to the full
// host reference except where that rounding moves a boundary (at most 1 sampled row in 100); the
// same tokens from a second launch. Then the kernel's time for 64 rows of 128256.
void checkSampling() {
  struct Row {
    float t, p;
    uint32_t seed, step;
  };
  const float temps[] = {0.f, 1.f, 0.7f, 1.5f, 0.05f, 3.f};
  const float tops[] = {1.f, 0.9f, 0.5f, 0.999f, 0.05f, 1.f, 0.95f};
  std::uniform_real_distribution<float> unit(-0.5f, 0.5f);
  for (int vocab : {128256, 1000, 7}) {
    const int rows = vocab == 128256 ? 96 : 200;
    std::vector<Row> prm(rows);
    std::vector<float> z(size_t(rows) * vocab);
    std::vector<int32_t> packed(size_t(rows) * kSampleParamInts);
    for (int r = 0; r < rows; r++) {
      prm[r] = {temps[r % 6], tops[r % 7], uint32_t(rng()), uint32_t(r * 31)};
      const float spread = r % 3 == 0 ? 2.f : r % 3 == 1 ? 10.f : 30.f;
      float* zr = &z[size_t(r) * vocab];
      for (int i = 0; i < vocab; i++) zr[i] = unit(rng) * spread;
      if (r % 11 == 3)
        for (int i = 0; i < vocab; i += 4) zr[i] = zr[1];  // ties
      if (r % 11 == 5)
        for (int i = 0; i < vocab; i += 9) zr[i] = (i & 1) ? NAN : -INFINITY;
      if (r % 11 == 7)  // LLM-like: a few likely tokens over a long tail
        for (int i = 0; i < vocab; i++) zr[i] = i % 997 == 0 ? 8.f + zr[i] : zr[i] - 10.f;
      std::memcpy(&packed[size_t(r) * kSampleParamInts], &prm[r].t, 4);
      std::memcpy(&packed[size_t(r) * kSampleParamInts + 1], &prm[r].p, 4);
      packed[size_t(r) * kSampleParamInts + 2] = int32_t(prm[r].seed);
      packed[size_t(r) * kSampleParamInts + 3] = int32_t(prm[r].step);
    }
    float* dz = upload(z);
    int32_t* dp = upload(packed);
    int32_t* dt;
    MS_CUDA_CHECK(cudaMalloc(&dt, rows * 4));
    SamplingArgs a;
    a.logits = dz, a.vocab = vocab, a.rows = rows, a.params = dp, a.tokens = dt;
    sampleTokens(a, 0);
    auto tok = download<int32_t>(dt, rows);
    auto qg = download<uint32_t>(dz, z.size());  // sampled rows now hold the GPU's weights
    MS_CUDA_CHECK(cudaMemcpy(dz, z.data(), z.size() * 4, cudaMemcpyHostToDevice));
    sampleTokens(a, 0);
    auto tok2 = download<int32_t>(dt, rows);
    // With the argmax in parts (scratch given): the same tokens, at 1 row (128 parts), 7 rows and all.
    float* pv;
    int32_t* pi;
    MS_CUDA_CHECK(cudaMalloc(&pv, size_t(rows) * kMaxArgmaxParts * 4));
    MS_CUDA_CHECK(cudaMalloc(&pi, size_t(rows) * kMaxArgmaxParts * 4));
    bool partsSame = true;
    for (int nr : {1, 7, rows}) {
      MS_CUDA_CHECK(cudaMemcpy(dz, z.data(), z.size() * 4, cudaMemcpyHostToDevice));
      SamplingArgs ap = a;
      ap.rows = nr, ap.partV = pv, ap.partI = pi;
      sampleTokens(ap, 0);
      auto t3 = download<int32_t>(dt, nr);
      partsSame = partsSame && std::equal(t3.begin(), t3.end(), tok.begin());
    }
    cudaFree(pv), cudaFree(pi);
    int badGreedy = 0, badInteger = 0, badWeights = 0, differ = 0, numSampled = 0;
    double maxRel = 0;
    std::vector<uint32_t> qh(vocab), scratch;
    for (int r = 0; r < rows; r++) {
      const float* zr = &z[size_t(r) * vocab];
      const Row& w = prm[r];
      const int32_t ref = ms::sampleRow(zr, vocab, w.t, w.p, w.seed, w.step, scratch);
      const int32_t best = ms::sampleArgmax(zr, vocab);
      if (!(w.t > 0) || !std::isfinite(zr[best])) {
        badGreedy += tok[r] != ref;
        continue;
      }
      numSampled++;
      const uint32_t* qr = &qg[size_t(r) * vocab];
      ms::sampleWeights(zr, vocab, w.t, zr[best], qh.data());
      for (int i = 0; i < vocab; i++) {
        const double d = std::fabs(double(qr[i]) - double(qh[i]));
        if (d > 4e-6 * qh[i] + 2) badWeights++;
        if (qh[i] > 1000) maxRel = std::max(maxRel, d / qh[i]);
      }
      badInteger += tok[r] != ms::sampleFromWeights(qr, vocab, w.p, w.seed, w.step);
      differ += tok[r] != ref;
    }
    const bool ok = !badGreedy && !badInteger && !badWeights && differ * 100 <= numSampled && tok == tok2 && partsSame;
    if (!ok) numFailed++;
    std::printf("%-58s greedy bad %d, integer part bad %d, weights bad %d (max rel %.1e), differ %d/%d, relaunch %s, "
                "argmax in parts %s %s\n",
                ("sampleTokens vocab=" + std::to_string(vocab)).c_str(), badGreedy, badInteger, badWeights, maxRel, differ,
                numSampled, tok == tok2 ? "same" : "DIFFERENT", partsSame ? "same" : "DIFFERENT", ok ? "PASS" : "FAIL");
    cudaFree(dz), cudaFree(dp), cudaFree(dt);
  }
  // Time: 64 rows of 128256, all greedy or all sampled (T 0.8, top-p 0.9 / 1), fresh logits per launch.
  const int rows = 64, vocab = 128256;
  std::vector<float> z(size_t(rows) * vocab);
  for (auto& v : z) v = unit(rng) * 10.f;
  float *pristine = upload(z), *dz;
  MS_CUDA_CHECK(cudaMalloc(&dz, z.size() * 4));
  int32_t* dt;
  MS_CUDA_CHECK(cudaMalloc(&dt, rows * 4));
  // Median of reps launches (the first dropped) in µs; restore: fresh logits before each launch.
  auto medianUs = [&](const SamplingArgs& a, int reps, bool restore) {
    return medianEventUs(
        reps, [&] { if (restore) MS_CUDA_CHECK(cudaMemcpy(dz, pristine, z.size() * 4, cudaMemcpyDeviceToDevice)); },
        [&] { sampleTokens(a, 0); });
  };
  std::printf("sampleTokens time, 64 rows x 128256:");
  for (auto [t, p] : {std::pair<float, float>{0.f, 1.f}, {0.8f, 1.f}, {0.8f, 0.9f}}) {
    std::vector<int32_t> packed(size_t(rows) * kSampleParamInts);
    for (int r = 0; r < rows; r++) {
      std::memcpy(&packed[size_t(r) * 4], &t, 4);
      std::memcpy(&packed[size_t(r) * 4 + 1], &p, 4);
      packed[size_t(r) * 4 + 2] = r, packed[size_t(r) * 4 + 3] = 0;
    }
    int32_t* dp = upload(packed);
    SamplingArgs a;
    a.logits = dz, a.vocab = vocab, a.rows = rows, a.params = dp, a.tokens = dt;
    std::printf(" T=%.1f top-p=%.1f %.1f us;", t, p, medianUs(a, 6, true));
    cudaFree(dp);
  }
  std::printf("\n");
  {  // greedy at 1 and 64 rows, with the argmax in one block per row or in parts
    float* pv;
    int32_t* pi;
    MS_CUDA_CHECK(cudaMalloc(&pv, size_t(rows) * kMaxArgmaxParts * 4));
    MS_CUDA_CHECK(cudaMalloc(&pi, size_t(rows) * kMaxArgmaxParts * 4));
    int32_t* dp = upload(std::vector<int32_t>(size_t(rows) * kSampleParamInts, 0));  // T = 0: greedy
    std::printf("sampleTokens greedy time:");
    for (int nr : {1, 64})
      for (int withParts : {0, 1}) {
        SamplingArgs a;
        a.logits = dz, a.vocab = vocab, a.rows = nr, a.params = dp, a.tokens = dt;
        if (withParts) a.partV = pv, a.partI = pi;
        std::printf(" %d rows %s %.1f us;", nr, withParts ? "in parts" : "one block/row", medianUs(a, 8, false));
      }
    std::printf("\n");
    cudaFree(pv), cudaFree(pi), cudaFree(dp);
  }
  cudaFree(pristine), cudaFree(dz), cudaFree(dt);
}

}  // namespace

int main() {
  try {
    decodeAttentionInit();
    checkSplitPlans();
    checkRmsNormSilu();
    checkGemms();
    // Small enough for a full reference in every mode, then the 8B shapes as the engine runs them
    // (qkv, o, down; columns sampled) at decode batch buckets.
    checkGemmCandidates("768x4096", 768, 4096, {8, 64}, {OutMode::Bf16, OutMode::F32, OutMode::F32Add}, 0);
    checkGemmCandidates("qkv 6144x4096", 6144, 4096, {16, 256}, {OutMode::Bf16}, 96);
    checkGemmCandidates("o 4096x4096", 4096, 4096, {2, 64}, {OutMode::F32Add}, 96);
    checkGemmCandidates("down 4096x14336", 4096, 14336, {8, 128}, {OutMode::F32Add}, 64);
    checkAttention(16, 2, 16);
    checkAttention(32, 8, 16);
    checkAttention(64, 1, 5);
    checkAttention(128, 4, 16);
    checkAttention(128, 4, 7);
    checkAttention(128, 2, 16);
    checkAttention(128, 2, 8);   // the smallest page the wgmma kernel's tensor copies take
    checkAttention(128, 4, 32);
    checkAttention(128, 1, 16);  // an odd group: prefill on the mma.sync kernel
    checkAttention(24, 2, 16, 0, true);  // RoPE one pair a thread (head dims not divisible by 16)
    // Clusters of eight-warp blocks (the launcher picks them only when all clusters fit at once),
    // then four-warp blocks forced where the launcher would pick eight.
    std::printf("decode clusters of eight-warp blocks (device holds %d clusters of 16):\n", decodeWideClusters());
    checkAttention(128, 4, 16, 8);
    checkAttention(64, 1, 5, 8);
    checkAttention(32, 8, 16, 8);
    std::printf("decode clusters of four-warp blocks:\n");
    checkAttention(128, 4, 16, 4);
    // GQA groups that are not powers of two (kjv-chat: 3; Qwen2.5-1.5B: 6; Qwen2.5-7B: 7; 5) in
    // every decode mode (fixed splits, clusters of four- and eight-warp blocks, fused RoPE) and
    // the prefill kernel's odd (one head per block) and even (two heads per block) shapes.
    std::printf("GQA groups 3, 5, 6, 7:\n");
    checkAttention(64, 3, 16);
    checkAttention(64, 3, 16, 8);
    checkAttention(64, 3, 7, 4);
    checkAttention(128, 7, 16);
    checkAttention(128, 7, 16, 8);
    checkAttention(32, 5, 16);
    checkAttention(16, 5, 5, 8);
    checkAttention(128, 6, 16);
    checkAttention(64, 6, 16, 4);
    checkAttention(16, 6, 16, 8);
    // The prefill kernel's block shapes (8 warps / 4 heads, 4 warps / 2 heads, 4 warps / 1 head)
    // are covered by the GQA groups above (4 and 8; 2 and 6; 1, 3, 5 and 7).
    checkRandom();
    checkSampling();
    numFailed += checkSamplingExtras();
    const bool clustersRan = decodeMaxCluster() == 0 || clusterChecks > 0;
    if (!clustersRan) numFailed++;
    std::printf("%-58s %d checks (largest cluster %d) %s\n", "decodeAttentionMma in clusters", clusterChecks,
                decodeMaxCluster(), clustersRan ? "PASS" : "FAIL");
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("kernel checks: %d failed\n", numFailed);
  return numFailed ? 1 : 0;
}
