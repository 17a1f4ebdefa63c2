// The MLP's gate/up product with the SwiGLU epilogue on Hopper's wgmma, the candidate that would
// remove silu_mul from prefill: out (T, N / 2) = silu(x w^T [:, 2j]) * (x w^T [:, 2j + 1]). The
// engine's gate_up weight holds each (gate, up) pair in adjacent rows, so in wgmma's accumulator
// layout every thread holds both halves of its pairs and computes silu(gate) * up from the f32
// accumulators: the (T, N) product is never written, and silu_mul's launch and its read go away.
// A persistent kernel in clusters of two blocks (one per SM): tiles of 128 rows x 256 product
// columns (128 outputs), two consumer warpgroups of 64 rows each (m64n256k16, A and B from
// 128-byte-swizzled shared memory, K-major) and a producer warpgroup whose lane 0 streams 64-wide
// K slices with tensor copies into four stages released by mbarriers (setmaxnreg 24 / 240). The
// two blocks of a cluster take adjacent row tiles of one column tile: each copies its own
// activations and half of the weight slice, multicast to both, and a stage is refilled when the
// consumers of both blocks have released it. Tiles run in bands of <= 4096 rows, row tiles fastest
// inside a band. The epilogue pairs adjacent outputs across a quad's lanes for 4-byte stores.
//
// Measured (H200, 2026-12-04; engine-gpu.md): alone, 738-746 TFLOP/s at 1024-4096 rows, against
// cuBLASLt's product alone at 744-783 and product + siluMul 0.335 / 1.387 ms at 1024 / 4096 rows
// against 0.325 / 1.303 for this kernel. In the engine (kernel checks, fixture and the 8B check
// passed; A/B/A/B prefill in one command) it did not pay: 4096 tokens 102.20 / 102.41 ms against
// 102.09 / 100.36 without it, 8192 tokens 221.52 / 221.05 against 219.66 / 217.73. Prefill runs at
// the board's 700 W power cap (SM clock 1.50-1.65 GHz against 1.98 unloaded), where time follows
// energy and not the kernel's unthrottled speed; so it stays here. The variants before it (single
// blocks; one band; 2-byte stores; a cluster-scope stage release at ~400 TFLOP/s) are in this
// file's history. It also times cuBLASLt's algorithms for the product alone and back to back: the
// ranking differs by up to ~3% between the two (engine-gpu.md).
//   build: cmake --build native/build --target gemm-swiglu-wgmma; run: gemm-swiglu-wgmma
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common.cuh"
#include "cuda/pdl.h"
#include "cuda/wgmma-ptx.h"
#include "tma.cuh"
#include "wgmma-n.cuh"
#if __has_include(<cublasLt.h>)
#include <cublasLt.h>
#define MS_BENCH_CUBLASLT 1
#endif

namespace ms::cuda {
namespace {

using namespace bench_tma;

// The same box into dst of every block of the cluster in mask, each completing on its own bar (the
// same offsets in every block).
__device__ __forceinline__ void tmaLoad2Multicast(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar,
                                                  uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, "
      "%3}], [%4], %5;\n" ::"r"(smemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smemAddr(bar)), "h"(mask)
      : "memory");
}
// One arrival on bar's twin in block cta of the cluster (this block's own included). Release at
// the block's scope: what it orders is the consumers' shared-memory reads, which the wgmma wait
// has already completed (at the cluster's scope the arrival waits like a fence for every earlier
// memory access of the thread: 40% slower, nearly all of it stalls on that fence, 2026-12-04).
__device__ __forceinline__ void mbarArriveCluster(uint64_t* bar, uint32_t cta) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smemAddr(bar)), "r"(cta));
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}


constexpr int BM = 128, BN = 256, BK = 64, kStages = 4, kCluster = 2, kBandRows = 4096;
constexpr int kConsumers = 256, kThreads = kConsumers + 128;  // two consumer warpgroups, a producer
constexpr int kABytes = BM * BK * 2, kBBytes = BN * BK * 2;   // 16 KB, 32 KB
constexpr int kStageBytes = kABytes + kBBytes;
constexpr int kSmem = kStages * kStageBytes + 1024 + 2 * kStages * 8;

struct SwigluArgs {
  int M = 0, N = 0, K = 0;
  int band = 0;  // row-tile pairs per band of the tile order
  bf16* out = nullptr;
};

// Tile p of the order -> (row-tile pair u, column tile nt): bands of `band` pairs, column tiles
// slowest inside a band and pairs fastest, so the blocks in flight share a few weight slices and a
// band's activations stay in L2 while each weight slice streams past once per band.
__device__ __forceinline__ void tileOf(int p, int units, int nTiles, int band, int& u, int& nt) {
  const int b = p / (band * nTiles), base = b * band, inBand = min(band, units - base), r = p - b * band * nTiles;
  u = base + r % inBand, nt = r / inBand;
}

// grid: persistent clusters of two blocks, block kThreads, dynamic smem kSmem. mapA: x (K inner, M)
// boxes 64 x 128; mapB: w (K inner, N) boxes 64 x 128 (half a weight slice); both 128-byte swizzled.
__global__ void __launch_bounds__(kThreads, 1)
    gemmSwigluKernel(SwigluArgs g, const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB) {
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(sm + kStages * kStageBytes);  // (kStages,) copies landed
  uint64_t* empty = full + kStages;  // (kStages,) released: one arrival per consumer warp of the cluster
  initStageBarriers(full, empty, kStages, kConsumers / 32 * kCluster);
  clusterSync();  // both blocks' barriers exist before either copies into or arrives on the other's
  pdlWait();
  pdlTrigger();
  const uint32_t rank = clusterRank();
  const int mTiles = (g.M + BM - 1) / BM, units = (mTiles + kCluster - 1) / kCluster, nTiles = g.N / BN;
  const int kSteps = g.K / BK, numTiles = units * nTiles, first = blockIdx.x / kCluster, stride = gridDim.x / kCluster;

  if (threadIdx.x >= kConsumers) {  // the producer warpgroup; lane 0 of its first warp copies
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
    if (threadIdx.x == kConsumers) {
      int it = 0;  // k-slices issued so far: stage it % kStages, its use number it / kStages
      for (int tile = first; tile < numTiles; tile += stride) {
        int u, nt;
        tileOf(tile, units, nTiles, g.band, u, nt);
        const int mt = u * kCluster + rank;
        for (int ks = 0; ks < kSteps; ks++, it++) {
          const int st = it % kStages;
          if (it >= kStages) mbarWait(empty + st, (it / kStages - 1) & 1);
          unsigned char* dst = sm + st * kStageBytes;
          mbarExpectTx(full + st, kStageBytes);  // own rows (past M: zeros, and they count) + both halves
          tmaLoad2(dst, &mapA, ks * BK, mt * BM, full + st);
          tmaLoad2Multicast(dst + kABytes + rank * (kBBytes / kCluster), &mapB, ks * BK, nt * BN + rank * (BN / kCluster),
                            full + st, uint16_t((1 << kCluster) - 1));
        }
      }
      // The other block's consumers release this block's stages: wait for their last arrivals, so
      // this block does not exit while they can still reach its barriers.
      for (int j = max(0, it - kStages); j < it; j++) mbarWait(empty + j % kStages, (j / kStages) & 1);
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");

  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, q = lane % 4;
  auto release = [&](int st) {
    if (lane == 0)
      for (int c = 0; c < kCluster; c++) mbarArriveCluster(empty + st, c);
  };
  const int outN = g.N / 2;
  const int src0 = (lane & ~3) | (2 * q) % 4, src1 = src0 | 1;  // the epilogue's pairing (below)
  float acc[128];
  int it = 0;
  for (int tile = first; tile < numTiles; tile += stride) {
    int u, nt;
    tileOf(tile, units, nTiles, g.band, u, nt);
    const int mt = u * kCluster + rank;
    for (int ks = 0; ks < kSteps; ks++, it++) {
      const int st = it % kStages;
      mbarWait(full + st, (it / kStages) & 1);
      const uint32_t aAddr = smemAddr(sm + st * kStageBytes) + wg * 64 * 128;  // this warpgroup's 64 rows
      const uint32_t bAddr = smemAddr(sm + st * kStageBytes + kABytes);
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++)
        wgmmaN<256>(acc, descAt(descLo(aAddr, 16), kk * 32), descAt(descLo(bAddr, 16), kk * 32), ks > 0 || kk > 0);
      wgmmaCommit();
      wgmmaWait<1>();  // the previous slice's products are done: its stage goes back
      if (ks > 0) release((it - 1) % kStages);
    }
    wgmmaWait<0>();
    pinN<256>(acc);
    release((it - 1) % kStages);

    // acc[4c + 2h + e]: row warp * 16 + lane / 4 + 8h of this warpgroup's 64, product column
    // 8c + 2q + e (e = 0 the gate, 1 its up): output column 4c + q of the tile's 128. Outputs
    // 4c .. 4c + 7 are spread one per lane over c and c + 1; lane q stores 4c + 2q and 4c + 2q + 1.
    const int row0 = mt * BM + wg * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int row = row0 + 8 * h;
      bf16* dst = g.out + int64_t(row) * outN + nt * (BN / 2) + 2 * q;
      auto silu = [&](int c) {
        const float gate = acc[4 * c + 2 * h], up = acc[4 * c + 2 * h + 1];
        return gate / (1.f + __expf(-gate)) * up;
      };
#pragma unroll
      for (int c = 0; c < BN / 8; c += 2) {
        const float v0 = silu(c), v1 = silu(c + 1);
        const float a0 = __shfl_sync(0xffffffff, v0, src0), a1 = __shfl_sync(0xffffffff, v0, src1);
        const float b0 = __shfl_sync(0xffffffff, v1, src0), b1 = __shfl_sync(0xffffffff, v1, src1);
        if (row < g.M)
          *reinterpret_cast<__nv_bfloat162*>(dst + 4 * c) = q < 2 ? __floats2bfloat162_rn(a0, a1) : __floats2bfloat162_rn(b0, b1);
      }
    }
  }
}

// Clusters the device holds at once (0: the kernel cannot run here); once per process.
int swigluClusters() {
  static const int n = [] {
    if (cudaFuncSetAttribute(gemmSwigluKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return maxActiveClusters(gemmSwigluKernel, kCluster, kThreads, kSmem);
  }();
  return n;
}

}  // namespace

void gemmSwiglu(const bf16* x, int T, const bf16* w, int N, int K, bf16* out, cudaStream_t s) {
  if (T <= 0) return;
  if (N % BN != 0 || K % BK != 0 || swigluClusters() == 0)
    throw CudaError("gemmSwiglu: N % 256 == 0, K % 64 == 0 and an sm_90a device and build only", false);
  SwigluArgs g;
  g.M = T, g.N = N, g.K = K, g.out = out;
  const int units = ((T + BM - 1) / BM + kCluster - 1) / kCluster, tiles = units * (N / BN);
  const int bands = (units + kBandRows / (BM * kCluster) - 1) / (kBandRows / (BM * kCluster));
  g.band = (units + bands - 1) / bands;  // equal bands
  launchPdlCluster("gemmSwigluKernel", gemmSwigluKernel, dim3(std::min(tiles, swigluClusters()) * kCluster),
                   dim3(kThreads), kSmem, s, kCluster, g, map2d(x, K, T, BK, BM), map2d(w, K, N, BK, BN / kCluster));
}


#ifdef MS_BENCH_CUBLASLT
// y (M, N) = x w^T in bf16 with cuBLASLt's heuristic algorithm of rank `rank` (0: its first; the
// engine tunes among the first 8; the first is the reference for time, as the unfused path's
// product). found: how many the heuristic gave (up to 8).
struct LtProduct {
  cublasLtHandle_t h = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  void* ws = nullptr;
  size_t wsBytes = 32 << 20;
  int found = 0;
  LtProduct(int M, int N, int K, int rank = 0) {
    auto ok = [](cublasStatus_t st, const char* what) {
      if (st != CUBLAS_STATUS_SUCCESS) throw CudaError(std::string("cuBLASLt: ") + what + " " + std::to_string(int(st)), false);
    };
    ok(cublasLtCreate(&h), "create");
    ok(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
    const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t), "transa");
    ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n), "transb");
    // column-major view: y^T (N, M) = w (K x N col-major, op T) . x^T (K x M col-major)
    ok(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, K, N, K), "layout w");
    ok(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, K, M, K), "layout x");
    ok(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, N, M, N), "layout y");
    MS_CUDA_CHECK(cudaMalloc(&ws, wsBytes));
    cublasLtMatmulPreference_t pref;
    ok(cublasLtMatmulPreferenceCreate(&pref), "pref");
    ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsBytes, sizeof wsBytes), "ws");
    cublasLtMatmulHeuristicResult_t res[8] = {};
    ok(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, pref, 8, res, &found), "heuristic");
    cublasLtMatmulPreferenceDestroy(pref);
    if (found <= rank) throw CudaError("cuBLASLt: no algorithm of rank " + std::to_string(rank), false);
    algo = res[rank].algo;
  }
  void run(const bf16* x, const bf16* w, bf16* y, cudaStream_t s) {
    const float one = 1.f, zero = 0.f;
    const cublasStatus_t st = cublasLtMatmul(h, op, &one, w, la, x, lb, &zero, y, lc, y, lc, &algo, ws, wsBytes, s);
    if (st != CUBLAS_STATUS_SUCCESS) throw CudaError("cuBLASLt matmul " + std::to_string(int(st)), false);
  }
  ~LtProduct() {
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op), cublasLtDestroy(h), cudaFree(ws);
  }
};
#endif

}  // namespace ms::cuda

using namespace ms::cuda;

int main() {
  try {
    constexpr int K = 4096, N = 2 * 14336;  // the 8B shape's gate/up
    std::vector<float> w = bench::randn(size_t(N) * K);
    for (auto& v : w) v *= 0.02f;
    bf16* dW = bench::uploadBf16(w);
    std::printf("2-block clusters the device holds at once: %d\n", swigluClusters());
    for (int M : {200, 1024, 2048, 4096, 8192}) {  // 200: a ragged last row tile, alone in its cluster
      std::vector<float> x = bench::randn(size_t(M) * K);
      bf16* dX = bench::uploadBf16(x);
      bf16* dOut;
      MS_CUDA_CHECK(cudaMalloc(&dOut, size_t(M) * (N / 2) * 2));
      // 3000 sampled outputs (and the tiles' corners) against float64.
      std::vector<size_t> idx;
      for (int i = 0; i < 3000; i++) idx.push_back(bench::rng()() % (size_t(M) * (N / 2)));
      for (size_t r : {size_t(0), size_t(M - 1)})
        for (size_t j : {size_t(0), size_t(127), size_t(128), size_t(N / 2 - 1)}) idx.push_back(r * (N / 2) + j);
      std::vector<double> ref;
      for (size_t i : idx) {
        const size_t r = i / (N / 2), j = i % (N / 2);
        double gate = 0, up = 0;
        for (int k = 0; k < K; k++) {
          gate += double(x[r * K + k]) * w[(2 * j) * K + k];
          up += double(x[r * K + k]) * w[(2 * j + 1) * K + k];
        }
        ref.push_back(gate / (1 + std::exp(-gate)) * up);
      }
      auto sampled = [&] {
        const auto got = bench::downloadBf16(dOut, size_t(M) * (N / 2));
        std::vector<float> gs;
        for (size_t i : idx) gs.push_back(got[i]);
        size_t nonFinite = 0;
        for (float o : got) nonFinite += !std::isfinite(o);
        if (nonFinite) bench::numFailed()++, std::printf("  FAIL: %zu outputs not written or not finite\n", nonFinite);
        return gs;
      };
      const double flop = 2.0 * M * N * K;
      MS_CUDA_CHECK(cudaMemset(dOut, 0xff, size_t(M) * (N / 2) * 2));  // NaNs where nothing is written
      gemmSwiglu(dX, M, dW, N, K, dOut, 0);
      bench::check("gemmSwiglu M=" + std::to_string(M) + " (3008 sampled outputs)", sampled(), ref, 2e-2);
      const double ms = bench::timeMs([&] { gemmSwiglu(dX, M, dW, N, K, dOut, 0); }, 3, 20);
      std::printf("  M=%d: gemmSwiglu %.3f ms (%.0f TFLOP/s)", M, ms, flop / ms / 1e9);
#ifdef MS_BENCH_CUBLASLT
      bf16* dGu;
      MS_CUDA_CHECK(cudaMalloc(&dGu, size_t(M) * N * 2));
      LtProduct lt(M, N, K);
      const double p = bench::timeMs([&] { lt.run(dX, dW, dGu, 0); }, 3, 20);
      const double sm = bench::timeMs([&] { siluMul(dGu, M, N / 2, dOut, 0); }, 3, 20);
      const double u = bench::timeMs([&] {
        lt.run(dX, dW, dGu, 0);
        siluMul(dGu, M, N / 2, dOut, 0);
      }, 3, 20);
      std::printf("; cuBLASLt product %.3f ms (%.0f TFLOP/s), siluMul alone %.3f, both %.3f\n", p, flop / p / 1e9, sm, u);
      if (M >= 4096) {  // 3 s each, fused / unfused / fused / unfused
        auto fused = [&] { gemmSwiglu(dX, M, dW, N, K, dOut, 0); };
        auto unfused = [&] {
          lt.run(dX, dW, dGu, 0);
          siluMul(dGu, M, N / 2, dOut, 0);
        };
        const double f1 = bench::sustainedMs(fused, ms, 3), u1 = bench::sustainedMs(unfused, u, 3);
        const double f2 = bench::sustainedMs(fused, ms, 3), u2 = bench::sustainedMs(unfused, u, 3);
        std::printf("  M=%d sustained 3 s each, ms per call: gemmSwiglu %.3f / %.3f, cuBLASLt + siluMul %.3f / %.3f\n", M, f1,
                    f2, u1, u2);
        // The heuristic's algorithms for the product alone, each timed alone (as the engine's start-time
        // tuning does) and back to back for 2 s: does the ranking at the power cap differ?
        std::string line = "  M=" + std::to_string(M) + " cuBLASLt by heuristic rank, ms alone / sustained 2 s:";
        for (int rank = 0; rank < lt.found; rank++) {
          try {
            LtProduct r(M, N, K, rank);
            const double alone = bench::timeMs([&] { r.run(dX, dW, dGu, 0); }, 3, 10);
            const double held = bench::sustainedMs([&] { r.run(dX, dW, dGu, 0); }, alone, 2);
            char b[64];
            std::snprintf(b, sizeof b, " [%d] %.3f / %.3f;", rank, alone, held);
            line += b;
          } catch (const CudaError& e) {
            line += " [" + std::to_string(rank) + "] fails (" + e.what() + ");";
          }
        }
        std::printf("%s\n", line.c_str());
      }
      bench::check("  cuBLASLt + siluMul M=" + std::to_string(M) + " (the same samples)", sampled(), ref, 2e-2);
      cudaFree(dGu);
#else
      std::printf(" (built without cuBLASLt: no reference timing)\n");
#endif
      cudaFree(dX), cudaFree(dOut);
    }
    cudaFree(dW);
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("gemm-swiglu-wgmma: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
