// The decode step's products (Y (T, O) = X (T, K) . W (O, K)^T for 8-256 tokens) on Hopper's wgmma with
// tensor copies, the candidate to replace cuBLASLt there, and what a product's weight stream costs by
// itself, and the MLP half of a decode layer as one persistent kernel. At these token counts a product is
// a pass over its weight (34-235 MB per 8B layer) with little arithmetic per byte, and cuBLASLt runs them
// at 45-89% of the read roofline (Nsight Compute, H200, 2026-12-03, engine-gpu.md). The kernel: W is
// operand A (64 output rows per consumer warpgroup, two per block: 128 rows), the tokens operand B (N =
// 8..256, rows past T zero-filled by the copy), both K-major in 128-byte-swizzled shared memory; a
// producer warpgroup's lane 0 streams 64-wide K slices of W (16 KB) and X (N x 128 B) through stages
// released by mbarriers, W's first stages issued before the PDL wait. Where 128-row tiles leave SMs idle
// the K range is split over a cluster of S blocks; each block leaves its f32 partial tile in its shared
// memory and, after one cluster barrier, reduces a 1/S share of the tile's rows over the S blocks in rank
// order (distributed shared memory, 16-byte loads): deterministic, no workspace. One block per SM (200 KB
// of stages, setmaxnreg 40 / 232) or, for T <= 64, two (100 KB, 80 registers). Output modes as the
// engine's products: bf16 (qkv), f32, f32 += (o, down: the residual stream) and the SiLU pair of gate/up
// (rows 2j, 2j + 1 -> silu(bf16(gate)) * bf16(up), as skinnyGemm), which removes silu_mul. "tiled": W re-
// laid out in 16 KB tiles (one contiguous read per stage) instead of 128 rows of 128 bytes at the row
// stride. Checks: every mode against float64 at small shapes (ragged T, every S, both occupancies, tiled
// and not), outputs NaN-poisoned, every product run twice for the same bits; at the 8B shapes against
// cuBLASLt's product. Timing: alone and eight back to back (8 copies of each weight taken in turn: no L2
// hits; this kernel PDL-chained), against the engine's cuBLASLt choice (Gemm::tune with split-K, as
// autotune.cc runs it) in the same process, and the same grids copying W with no math. Measured (H200,
// 2026-12-04, five commands; engine-gpu.md, raw engine-gpu/h200-2026-12-04e-gemm-decode-*.txt), us per
// product eight back to back, T = 8 (this kernel, its best split / cuBLASLt / the copies alone): qkv
// 16.6-17.2 / 18.0-19.5 / 15.1-15.2, o 13.7-14.5 / 14.1-16.5 / 11.2-11.3, gate_up 60.6-61.7 / 59.4-61.7 (+
// silu_mul) / 59.7-60.0, down 34.2-35.9 / 33.4-34.5 / 30.9-31.7. At T = 64 this kernel loses (o 19.0-21.4
// against 14.1-14.4) and at 128-256 by up to 2.7x (its split tiles are compute-bound on the few SMs they
// use). Pre-tiled weights change nothing (+-2%). So cuBLASLt is within 1-3 us of a bare copy of the weight
// in the same grid, and neither reaches the read roofline on one product (o: 33.5 MB in 11.2 us is 3.0
// TB/s): the ramp and tail of each launch cost more than any tile choice saves. Section 3 measures that
// cost for a whole layer: the four weights (436 MB) as four bare launches take 128.9 us per layer (3.39
// TB/s), one persistent kernel streaming them through a 12-stage ring with a grid barrier between the
// products 107.2 us (4.07 TB/s; 108.4 without prefetching across the barriers). Those four launches are
// this file's bare copies in its own grids; the engine's path does better than them: section 4 runs the
// MLP half of a layer (o, rmsnorm, gate/up, silu_mul, down: 386 MB) as the engine does it (tuned cuBLASLt
// products, its norm and SiLU kernels, a CUDA graph of 8 layers) at 103-110 us per layer (3.5-3.7 TB/s,
// five commands), and as one persistent kernel (mlpStepKernel: barriers between the products, o and down
// split four ways, gate/up whole-K items with the SiLU pair in registers; 8 or 10 stages) at 109-115 us:
// correct (against the engine's kernels: x to 5e-3, silu(gate) * up to 2e-2, the same bits twice), 5%
// slower. Three stream-K versions (each block an equal range of 16 KB weight units, partial slots per
// tile, a reduce phase per product; the last in 7bbfcac) ran 119-146 us. Against the persistent stream's
// 4.07 TB/s (~95 us for these bytes) the launches of the engine's MLP half cost ~8-15 us per layer,
// ~0.25-0.5 ms per 8B decode step. Its phases timed (MlpArgs::stamps, T = 8, us from entry to the last
// block's end): o 13.0 (7.5 at the roofline), barriers + o's reduce + norm 6.8, gate/up 64.9 (52.2: 92 of
// 132 blocks take two of its 224 items), down 26.3 (26.1: streamed at the roofline, its first weights
// prefetched across the barrier), reduce 2.1. What a winning version must fix: gate/up's balance, o's
// ramp, and the norm on the critical path. MlpArgs::balance (mlpStepKernel<true>): gate/up balanced, block
// b taking tile b whole and an equal share of the tiles past the grid (2026-12-04, sixth session): correct,
// its blocks end gate/up together (59.1 us from the barrier before it to the last block, against 61.8
// unbalanced), but the layer is no faster (111.5-112.2 us against 111.7-111.8; the engine's kernels
// 108.2-108.4 in the same command): o and the barriers, ~8 us over their bytes, are what is left.
// MLP_ONLY=1 runs section 4 alone, at T = 8.
//   build: cmake --build native/build --target gemm-decode-wgmma; run: gemm-decode-wgmma
#include <algorithm>
#include <array>
#include <functional>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common.cuh"
#include "cuda/pdl.h"
#include "cuda/wgmma-ptx.h"
#include "tma.cuh"
#include "wgmma-n.cuh"
#ifdef MS_BENCH_GEMM
#include "cuda/gemm.h"
#endif

namespace ms::cuda {
namespace {

using namespace bench_tma;

// The 4 f32 at this block's shared address p (16-byte aligned), read from block `cta` of the cluster.
__device__ __forceinline__ float4 ldCluster4(const float* p, uint32_t cta) {
  uint32_t remote;
  float4 v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smemAddr(p)), "r"(cta));
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(remote)
               : "memory");
  return v;
}
__device__ __forceinline__ void consumersSync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

constexpr int BM = 128, BK = 64, kConsumers = 256, kThreads = kConsumers + 128;
constexpr int kWBytes = BM * BK * 2;  // 16 KB: a K slice of the block's 128 weight rows
// MINB blocks per SM: 1 (up to 200 KB of stages; the consumers take 232 registers) or 2 (up to 100 KB,
// so a block of the next product fits beside one of this product under PDL; N <= 64: 80 registers).
template <int N, int MINB>
struct Cfg {
  static constexpr int kXBytes = N * BK * 2, kStageBytes = kWBytes + kXBytes;
  static constexpr int kStages = std::min(8, (MINB == 1 ? 200 : 100) * 1024 / kStageBytes);
  static constexpr int kLd = N + 4;  // f32 partial tile's row stride (the epilogue)
  static constexpr int kSmem = kStages * kStageBytes + 1024 + 2 * kStages * 8;
  static_assert(BM * kLd * 4 <= kStages * kStageBytes, "the partial tile fits in the stages");
};

struct DecodeGemmArgs {
  int T = 0, O = 0, K = 0;
  int mode = 0;    // OutMode
  int bare = 0;    // the copies alone: no product, nothing written (what streaming W costs by itself)
  int tiled = 0;   // W pre-tiled: mapW is map3d over (64 k, 128 rows, (O / 128) x (K / 64) tiles), 16 KB contiguous each
  void* Y = nullptr;
};

// grid (S, O / 128), clusters of S along x when S > 1; block kThreads; dynamic smem Cfg<N, MINB>::kSmem.
// mapW: W (K inner, O) boxes 64 x 128; mapX: X (K inner, T) boxes 64 x N; both 128-byte swizzled.
template <int N, int MINB>
__global__ void __launch_bounds__(kThreads, MINB)
    decodeGemmKernel(DecodeGemmArgs g, const __grid_constant__ CUtensorMap mapW, const __grid_constant__ CUtensorMap mapX) {
  using C = Cfg<N, MINB>;
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(sm + C::kStages * C::kStageBytes);  // (kStages,) copies landed
  uint64_t* empty = full + C::kStages;  // (kStages,) released: one arrival per consumer warp
  initStageBarriers(full, empty, C::kStages, kConsumers / 32);
  __syncthreads();
  const int S = gridDim.x, split = blockIdx.x, tile = blockIdx.y;
  const int steps = g.K / BK / S, ks0 = split * steps;  // this block's K slices

  if (threadIdx.x >= kConsumers) {  // the producer warpgroup; one thread copies
    if constexpr (MINB == 1) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (threadIdx.x == kConsumers) {
      auto loadW = [&](unsigned char* dst, int ks, uint64_t* bar) {
        if (g.tiled)
          tmaLoad3(dst, &mapW, 0, 0, tile * (g.K / BK) + ks, bar);
        else
          tmaLoad2(dst, &mapW, ks * BK, tile * BM, bar);
      };
      const int pre = min(steps, C::kStages);
      for (int i = 0; i < pre; i++) {  // weights first, before the wait: they depend on no kernel
        mbarExpectTx(full + i, C::kStageBytes);
        loadW(sm + i * C::kStageBytes, ks0 + i, full + i);
      }
      pdlWait();
      for (int i = 0; i < pre; i++) tmaLoad2(sm + i * C::kStageBytes + kWBytes, &mapX, (ks0 + i) * BK, 0, full + i);
      for (int i = pre; i < steps; i++) {
        const int st = i % C::kStages;
        mbarWait(empty + st, (i / C::kStages - 1) & 1);
        mbarExpectTx(full + st, C::kStageBytes);
        loadW(sm + st * C::kStageBytes, ks0 + i, full + st);
        tmaLoad2(sm + st * C::kStageBytes + kWBytes, &mapX, (ks0 + i) * BK, 0, full + st);
      }
    }
    __syncwarp();
    if (S > 1) clusterSync(), clusterSync();  // the consumers' two (partials written; partials read)
    return;
  }
  if constexpr (MINB == 1) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  pdlWait();  // Y (f32 +=) comes from earlier kernels
  pdlTrigger();

  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  if (g.bare) {  // the copies alone: each stage released as it lands, the cluster barriers as a product passes them
    for (int i = 0; i < steps; i++) {
      mbarWait(full + i % C::kStages, (i / C::kStages) & 1);
      __syncwarp();
      if (lane == 0) mbarArrive(empty + i % C::kStages);
    }
    if (S > 1) clusterSync(), clusterSync();
    return;
  }
  float acc[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; i++) acc[i] = 0.f;
  for (int i = 0; i < steps; i++) {
    const int st = i % C::kStages;
    mbarWait(full + st, (i / C::kStages) & 1);
    const uint32_t wLo = descLo(smemAddr(sm + st * C::kStageBytes) + wg * 64 * 128, 16);
    const uint32_t xLo = descLo(smemAddr(sm + st * C::kStageBytes + kWBytes), 16);
    wgmmaFence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) wgmmaN<N>(acc, descAt(wLo, kk * 32), descAt(xLo, kk * 32), 1);
    wgmmaCommit();
    wgmmaWait<1>();  // the slice before is done: its stage goes back
    if (i > 0 && lane == 0) mbarArrive(empty + (i - 1) % C::kStages);
  }

  wgmmaWait<0>();
  pinN<N>(acc);
  consumersSync();  // every product is done reading the stages: they become the partial tile
  // acc[4j + 2h + e]: row wg * 64 + warp * 16 + lane / 4 + 8h of the tile, token 8j + 2 (lane % 4) + e.
  float* P = reinterpret_cast<float*>(sm);
  const int r0 = wg * 64 + warp * 16 + lane / 4;
#pragma unroll
  for (int j = 0; j < N / 8; j++)
#pragma unroll
    for (int h = 0; h < 2; h++)
      *reinterpret_cast<float2*>(P + (r0 + 8 * h) * C::kLd + 8 * j + 2 * (lane % 4)) =
          make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
  if (S > 1)
    clusterSync();
  else
    consumersSync();
  // This block's share of the tile's rows, summed over the S partials in rank order, four tokens at a
  // time (16-byte shared and distributed-shared loads).
  const int per = BM / S, rBase = int(S > 1 ? clusterRank() : 0) * per, quads = (g.T + 3) / 4;
  auto sum4 = [&](int r, int t) {
    const float* src = P + r * C::kLd + t;
    if (S == 1) return *reinterpret_cast<const float4*>(src);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int c = 0; c < S; c++) {
      const float4 u = ldCluster4(src, uint32_t(c));
      v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
    }
    return v;
  };
  if (g.mode == int(OutMode::SiluPairBf16)) {
    const int pairs = per / 2, outO = g.O / 2;
#pragma unroll 2
    for (int e = threadIdx.x; e < pairs * quads; e += kConsumers) {
      const int p = e % pairs, t = 4 * (e / pairs), r = rBase + 2 * p;
      const float4 gv = sum4(r, t), uv = sum4(r + 1, t);
      const float ga[4] = {gv.x, gv.y, gv.z, gv.w}, ua[4] = {uv.x, uv.y, uv.z, uv.w};
#pragma unroll
      for (int k = 0; k < 4; k++) {
        if (t + k >= g.T) break;
        const float gate = __bfloat162float(__float2bfloat16(ga[k])), up = __bfloat162float(__float2bfloat16(ua[k]));
        static_cast<bf16*>(g.Y)[int64_t(t + k) * outO + (tile * BM + r) / 2] =
            __float2bfloat16(gate / (1.f + __expf(-gate)) * up);
      }
    }
  } else {
#pragma unroll 2
    for (int e = threadIdx.x; e < per * quads; e += kConsumers) {
      const int r = rBase + e % per, t = 4 * (e / per);
      const float4 v4 = sum4(r, t);
      const float va[4] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
      for (int k = 0; k < 4; k++) {
        if (t + k >= g.T) break;
        const int64_t idx = int64_t(t + k) * g.O + tile * BM + r;
        if (g.mode == int(OutMode::F32Add))
          static_cast<float*>(g.Y)[idx] += va[k];
        else if (g.mode == int(OutMode::F32))
          static_cast<float*>(g.Y)[idx] = va[k];
        else
          static_cast<bf16*>(g.Y)[idx] = __float2bfloat16(va[k]);
      }
    }
  }
  if (S > 1) clusterSync();  // no block leaves while another reads its partials
}


// W (O, K) row-major -> tiles of 128 rows x 64 k, each 16 KB contiguous (row-major inside), tile
// (o / 128, k / 64) at index (o / 128) * (K / 64) + k / 64.
__global__ void retileKernel(const bf16* __restrict__ w, int O, int K, bf16* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // one 16-byte chunk of w
  if (i >= int64_t(O) * K / 8) return;
  const int o = int(i / (K / 8)), k = int(i % (K / 8)) * 8;
  const int64_t tileIdx = int64_t(o / BM) * (K / BK) + k / BK;
  *reinterpret_cast<uint4*>(out + tileIdx * BM * BK + (o % BM) * BK + k % BK) = *reinterpret_cast<const uint4*>(w + i * 8);
}
CUtensorMap map3dTiles(const bf16* base, int O, int K) {
  const cuuint64_t dim[3] = {cuuint64_t(BK), cuuint64_t(BM), cuuint64_t(O / BM) * (K / BK)};
  const cuuint64_t stride[2] = {cuuint64_t(BK) * 2, cuuint64_t(BM) * BK * 2};
  const cuuint32_t box[3] = {cuuint32_t(BK), cuuint32_t(BM), 1};
  return mapBf16(base, 3, dim, stride, box);
}

template <int N, int MINB>
void launchN(const DecodeGemmArgs& g, const CUtensorMap& mW, const CUtensorMap& mX, int S, cudaStream_t s) {
  static const bool init = [] {
    MS_CUDA_CHECK(cudaFuncSetAttribute(decodeGemmKernel<N, MINB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       Cfg<N, MINB>::kSmem));
    return true;
  }();
  (void)init;
  launchPdlCluster("decodeGemmKernel", decodeGemmKernel<N, MINB>, dim3(S, g.O / BM), dim3(kThreads),
                   Cfg<N, MINB>::kSmem, s, S > 1 ? S : 0, g, mW, mX);
}

// ---- A decode step's weight stream, one kernel per product against one persistent kernel ----
// What separate launches cost by themselves: a layer's four weights (qkv, o, gate/up, down: 436 MB
// of the 8B shape) copied into shared memory and dropped, either as four launches of the bare
// copies above (each product's grid, PDL-chained), or by one persistent kernel (one block per SM, a
// producer thread streaming 16 KB tiles through a 12-stage ring, a consumer warp releasing them)
// whose phases are separated by grid barriers as a step's data dependencies would separate them.
// With prefetch the producer runs on into the next phase's tiles while the consumers wait at the
// barrier (weights depend on nothing); without it the producer waits at the barrier too.
constexpr int kStreamStages = 12, kStreamThreads = 64;
constexpr int kStreamSmem = kStreamStages * kWBytes + 1024 + 2 * kStreamStages * 8;
struct LayerStreamArgs {
  int layers = 0, phases = 0;      // phases per layer (<= 4); phase p of layer l is global phase l * phases + p
  int rowTiles[4] = {}, kSlices[4] = {};
  unsigned* barrier = nullptr;     // phases completed x blocks, zero before the launch
  int prefetch = 1;
};
__device__ __forceinline__ void waitBarrier(const unsigned* c, unsigned target) {
  unsigned v;
  while (true) {
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(c) : "memory");
    if (v >= target) return;
    __nanosleep(64);
  }
}
// grid: blocks (one per SM), block kStreamThreads; maps: weight kind p as (K inner, O, layer) boxes (64, 128, 1).
__global__ void __launch_bounds__(kStreamThreads, 1)
    layerStreamKernel(LayerStreamArgs a, const __grid_constant__ CUtensorMap m0, const __grid_constant__ CUtensorMap m1,
                      const __grid_constant__ CUtensorMap m2, const __grid_constant__ CUtensorMap m3) {
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(sm + kStreamStages * kWBytes);
  uint64_t* empty = full + kStreamStages;
  initStageBarriers(full, empty, kStreamStages, 1);
  __syncthreads();
  const int G = gridDim.x, b = blockIdx.x, total = a.layers * a.phases;
  const CUtensorMap* maps[4] = {&m0, &m1, &m2, &m3};
  if (threadIdx.x == 0) {  // producer
    int it = 0;
    for (int q = 0; q < total; q++) {
      const int p = q % a.phases, l = q / a.phases, n = a.rowTiles[p] * a.kSlices[p];
      if (!a.prefetch && q > 0) waitBarrier(a.barrier, unsigned(G) * q);
      for (int i = b; i < n; i += G, it++) {
        const int st = it % kStreamStages;
        if (it >= kStreamStages) mbarWait(empty + st, (it / kStreamStages - 1) & 1);
        mbarExpectTx(full + st, kWBytes);
        const int r = i / a.kSlices[p], k = i % a.kSlices[p];
        tmaLoad3(sm + st * kWBytes, maps[p], k * BK, r * BM, l, full + st);
      }
    }
  } else if (threadIdx.x >= 32) {  // the consumer warp
    int it = 0;
    for (int q = 0; q < total; q++) {
      const int p = q % a.phases, n = a.rowTiles[p] * a.kSlices[p];
      if (q > 0) waitBarrier(a.barrier, unsigned(G) * q);  // every block finished phase q - 1
      for (int i = b; i < n; i += G, it++) {
        const int st = it % kStreamStages;
        mbarWait(full + st, (it / kStreamStages) & 1);
        __syncwarp();
        if (threadIdx.x == 32) mbarArrive(empty + st);
      }
      __syncwarp();
      if (threadIdx.x == 32) {
        __threadfence();
        atomicAdd(a.barrier, 1u);
      }
    }
  }
}
// The persistent stream over `layers` layers of the given kinds (maps as layerStreamKernel takes them).
void layerStream(const LayerStreamArgs& a, const CUtensorMap (&maps)[4], cudaStream_t s) {
  static const bool init = [] {
    MS_CUDA_CHECK(cudaFuncSetAttribute(layerStreamKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kStreamSmem));
    return true;
  }();
  (void)init;
  MS_CUDA_CHECK(cudaMemsetAsync(a.barrier, 0, 4, s));
  layerStreamKernel<<<bench::numSms(), kStreamThreads, kStreamSmem, s>>>(a, maps[0], maps[1], maps[2], maps[3]);
  MS_CUDA_CHECK(cudaGetLastError());
}
// W (layers, O, K) as a 3-d map (K inner, O, layer), boxes (64, 128, 1), 128-byte swizzled.
CUtensorMap mapLayers(const bf16* base, int O, int K, int layers) {
  const cuuint64_t dim[3] = {cuuint64_t(K), cuuint64_t(O), cuuint64_t(layers)};
  const cuuint64_t stride[2] = {cuuint64_t(K) * 2, cuuint64_t(O) * K * 2};
  const cuuint32_t box[3] = {cuuint32_t(BK), cuuint32_t(BM), 1};
  return mapBf16(base, 3, dim, stride, box);
}

// ---- The MLP half of a decode layer as one persistent kernel (T <= 8 tokens) ----
// x += o(attn); xn = rmsnorm(x); act = silu(gate) * up of xn; x += down(act): the engine launches
// five kernels for this (three products, rmsnorm, silu_mul; cuBLASLt's split-K adds reduce
// launches). Here one block per SM runs it as phases separated by grid barriers: the o product's
// items (128-row tile, K split), a barrier, their deterministic reduce into x, a barrier, the norm
// (one block per token), a barrier, gate/up (whole K, the SiLU pair in the epilogue: a gate row and
// its up row sit in lanes 4 apart), a barrier, down's items, a barrier, their reduce. One producer
// thread streams every W tile of the block's items of all three products through one ring, never
// waiting on a barrier (weights depend on nothing), so the next product's first tiles are in shared
// memory when its barrier opens; a second producer thread loads each item's activations (the whole
// K range of the item, N = 8 rows, zero past T) once the barrier that makes them valid has passed,
// after a proxy fence (they were written by ordinary stores).
constexpr int kMlpStages = 10, kMlpN = 8, kMlpConsumers = 256, kMlpThreads = kMlpConsumers + 64;
constexpr int kMlpXBytes = 64 * kMlpN * 128;  // activations of up to 64 K slices (gate/up: K = 4096)
constexpr int kMlpSmem = kMlpStages * kWBytes + kMlpXBytes + 1024 + (2 * kMlpStages + 2) * 8;
struct MlpArgs {
  int T = 0, H = 0, I = 0;  // tokens, hidden, intermediate
  int So = 4, Sd = 4;       // K splits of o and down (gate/up: none)
  float eps = 0.f;
  float* x = nullptr;               // (T, H) residual stream, f32
  const float* normW = nullptr;     // (H,)
  bf16* xn = nullptr;               // (T, H)
  bf16* act = nullptr;              // (T, I)
  float* ws = nullptr;              // split partials: max(So, Sd) x T x H
  unsigned* bar = nullptr;          // [0] barrier arrivals, [1] blocks done; both 0 between launches
  unsigned long long* stamps = nullptr;  // optional: (G, kMlpStamps) %globaltimer at each phase's end
  // Balanced gate/up: block b takes tile b whole and an equal share (in 16 KB units) of the tiles past
  // the grid, whose partials (wsGu: (tiles - G, kMlpGuSlots, T, 128)) a reduce phase sums with the SiLU.
  // Written after the phase timing showed gate/up's 2 : 1 imbalance (~10 us of 113); main() checks and
  // times it beside balance 0 (measured: balanced, and the layer no faster; the header says more).
  int balance = 0;
  float* wsGu = nullptr;
};
constexpr int kMlpGuSlots = 4;
// The balanced gate/up's shared range: units (16 KB) of the tiles past the grid, block b's [start(b), start(b + 1)).
struct MlpShare {
  int first, units;  // first shared tile (= G), units in all
  __device__ int start(int b, int G) const { return int(int64_t(b) * units / G); }
  __device__ int owner(int u, int G) const { return int((int64_t(u + 1) * G + units - 1) / units) - 1; }
};
constexpr int kMlpStamps = 12;  // entry, then the end of each of the kernel's 11 phases
// Product p of the kernel: 0 o (K = H, O = H, So splits), 1 gate/up (K = H, O = 2I), 2 down (K = I, O = H, Sd).
struct MlpPhase {
  int O, K, S;
};
__device__ __forceinline__ MlpPhase mlpPhase(const MlpArgs& a, int p) {
  return p == 0 ? MlpPhase{a.H, a.H, a.So} : p == 1 ? MlpPhase{2 * a.I, a.H, 1} : MlpPhase{a.H, a.I, a.Sd};
}
// The consumers' grid barrier: every block's 256 consumer threads arrive; returns when all G blocks have
// arrived `n` times in total (n counts the kernel's barriers so far).
__device__ __forceinline__ void mlpGridSync(unsigned* bar, unsigned target) {
  asm volatile("bar.sync 1, 256;\n" ::: "memory");
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(bar, 1u);
    waitBarrier(bar, target);
  }
  asm volatile("bar.sync 1, 256;\n" ::: "memory");
}

// grid: one block per SM (all resident), block kMlpThreads, dynamic smem kMlpSmem. Maps: weights (K inner,
// O) boxes (64, 128): wo, wgu, wd; activations (K inner, T) boxes (64, 8): attn, xn, act.
template <bool BAL>  // BAL: the balanced gate/up where a.balance (its code apart, so the other form compiles as measured)
__global__ void __launch_bounds__(kMlpThreads, 1)
    mlpStepKernel(MlpArgs a, const __grid_constant__ CUtensorMap wo, const __grid_constant__ CUtensorMap wgu,
                  const __grid_constant__ CUtensorMap wd, const __grid_constant__ CUtensorMap xAttn,
                  const __grid_constant__ CUtensorMap xXn, const __grid_constant__ CUtensorMap xAct) {
  extern __shared__ unsigned char smRaw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smRaw) + 1023) & ~uintptr_t(1023));
  unsigned char* Xs = sm + kMlpStages * kWBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(Xs + kMlpXBytes);
  uint64_t* empty = full + kMlpStages;
  uint64_t* xFull = empty + kMlpStages;
  uint64_t* xEmpty = xFull + 1;
  if (threadIdx.x == 0) mbarInit(xFull, 1), mbarInit(xEmpty, kMlpConsumers / 32);
  initStageBarriers(full, empty, kMlpStages, kMlpConsumers / 32);
  __syncthreads();
  const int G = gridDim.x, b = blockIdx.x;
  const CUtensorMap* wMap[3] = {&wo, &wgu, &wd};
  const CUtensorMap* xMap[3] = {&xAttn, &xXn, &xAct};
  // Barriers before each product's activations are valid: o none (the kernel before: PDL), gate/up 3, down 4
  // (5 with the balanced gate/up's reduce).
  const int guTiles = 2 * a.I / BM, guSlices = a.H / BK;
  const bool balanced = BAL && guTiles > G;
  const MlpShare share{G, (guTiles - G) * guSlices};
  const unsigned xBarrier[3] = {0, 3, balanced ? 5u : 4u};
  // Block b's pieces of the shared gate/up range: fn(tile, first slice, slices).
  auto sharePieces = [&](auto&& fn) {
    const int u1 = share.start(b + 1, G);
    for (int u = share.start(b, G); u < u1;) {
      const int tile = share.first + u / guSlices, k0 = u % guSlices, n = min(guSlices - k0, u1 - u);
      fn(tile, k0, n);
      u += n;
    }
  };

  if (threadIdx.x == kMlpConsumers) {  // the weight producer
    int it = 0;
    auto loadW = [&](int p, int tile, int k) {
      const int st = it % kMlpStages;
      if (it >= kMlpStages) mbarWait(empty + st, (it / kMlpStages - 1) & 1);
      mbarExpectTx(full + st, kWBytes);
      tmaLoad2(sm + st * kWBytes, wMap[p], k * BK, tile * BM, full + st);
      it++;
    };
    for (int p = 0; p < 3; p++) {
      const MlpPhase ph = mlpPhase(a, p);
      const int items = ph.O / BM * ph.S, slices = ph.K / BK / ph.S;
      if constexpr (BAL) {
        if (p == 1 && balanced) {
          for (int ks = 0; ks < guSlices; ks++) loadW(1, b, ks);
          sharePieces([&](int tile, int k0, int n) {
            for (int ks = 0; ks < n; ks++) loadW(1, tile, k0 + ks);
          });
          continue;
        }
      }
      for (int j = b; j < items; j += G) {
        const int tile = j / ph.S, split = j % ph.S;
        for (int ks = 0; ks < slices; ks++, it++) {
          const int st = it % kMlpStages;
          if (it >= kMlpStages) mbarWait(empty + st, (it / kMlpStages - 1) & 1);
          mbarExpectTx(full + st, kWBytes);
          tmaLoad2(sm + st * kWBytes, wMap[p], (split * slices + ks) * BK, tile * BM, full + st);
        }
      }
    }
    return;
  }
  if (threadIdx.x == kMlpConsumers + 32) {  // the activation producer
    int q = 0;
    for (int p = 0; p < 3; p++) {
      const MlpPhase ph = mlpPhase(a, p);
      const int items = ph.O / BM * ph.S, slices = ph.K / BK / ph.S;
      if constexpr (BAL) {
        if (p == 1 && balanced) {  // all of K once: the whole tile and the shared pieces read it
          if (q > 0) mbarWait(xEmpty, (q - 1) & 1);
          waitBarrier(a.bar, unsigned(G) * xBarrier[1]);
          asm volatile("fence.proxy.async.global;\n" ::: "memory");
          mbarExpectTx(xFull, uint32_t(guSlices * kMlpN * 128));
          for (int ks = 0; ks < guSlices; ks++) tmaLoad2(Xs + ks * kMlpN * 128, xMap[1], ks * BK, 0, xFull);
          q++;
          continue;
        }
      }
      bool first = true;
      for (int j = b; j < items; j += G, q++) {
        if (q > 0) mbarWait(xEmpty, (q - 1) & 1);  // the consumers are done with the last item's activations
        if (first) {
          if (p == 0)
            pdlWait();
          else
            waitBarrier(a.bar, unsigned(G) * xBarrier[p]);
          asm volatile("fence.proxy.async.global;\n" ::: "memory");
          first = false;
        }
        const int split = j % ph.S;
        mbarExpectTx(xFull, uint32_t(slices * kMlpN * 128));
        for (int ks = 0; ks < slices; ks++) tmaLoad2(Xs + ks * kMlpN * 128, xMap[p], (split * slices + ks) * BK, 0, xFull);
      }
    }
    return;
  }
  if (threadIdx.x >= kMlpConsumers) return;

  pdlWait();  // x comes from the kernels before
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, tid = threadIdx.x;
  unsigned nBar = 0;
  int it = 0, q = 0;
  // acc over n weight units from the ring against activation slices x0 .. x0 + n - 1.
  auto mma = [&](float (&acc)[4], int n, int x0) {
    for (int ks = 0; ks < n; ks++, it++) {
      const int st = it % kMlpStages;
      mbarWait(full + st, (it / kMlpStages) & 1);
      const uint32_t wLo = descLo(smemAddr(sm + st * kWBytes) + wg * 64 * 128, 16);
      const uint32_t xLo = descLo(smemAddr(Xs + (x0 + ks) * kMlpN * 128), 16);
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++) wgmmaN<8>(acc, descAt(wLo, kk * 32), descAt(xLo, kk * 32), 1);
      wgmmaCommit();
      wgmmaWait<1>();
      if (ks > 0 && lane == 0) mbarArrive(empty + (it - 1) % kMlpStages);
    }
    wgmmaWait<0>();
    pinN<8>(acc);
    if (lane == 0) mbarArrive(empty + (it - 1) % kMlpStages);
  };
  // The SiLU pair of gate/up tile `tile` from its accumulators (gate row 2m and up row 2m + 1 are lanes 4 apart).
  auto siluPair = [&](const float (&acc)[4], int tile) {
    const int r0 = tile * BM + wg * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float other = __shfl_xor_sync(0xffffffffu, acc[i], 4);
      const int row = r0 + 8 * (i >> 1), t = 2 * (lane % 4) + (i & 1);
      if ((lane / 4) % 2 == 0 && t < a.T) {
        const float g = __bfloat162float(__float2bfloat16(acc[i])), u = __bfloat162float(__float2bfloat16(other));
        a.act[int64_t(t) * a.I + row / 2] = __float2bfloat16(g / (1.f + __expf(-g)) * u);
      }
    }
  };
  auto balancedGateUp = [&] {
    mbarWait(xFull, q & 1);
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    mma(acc, guSlices, 0);
    siluPair(acc, b);
    sharePieces([&](int tile, int k0, int n) {
      float part[4] = {0.f, 0.f, 0.f, 0.f};
      mma(part, n, k0);
      const int t0 = (tile - share.first) * guSlices, slot = b - share.owner(t0, G);
      if (slot >= kMlpGuSlots) __trap();  // more blocks meet one tile than there are slots
      float* dst = a.wsGu + (int64_t(tile - share.first) * kMlpGuSlots + slot) * a.T * BM;
      const int r0 = wg * 64 + warp * 16 + lane / 4;
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int t = 2 * (lane % 4) + (i & 1);
        if (t < a.T) dst[t * BM + r0 + 8 * (i >> 1)] = part[i];
      }
    });
    if (lane == 0) mbarArrive(xEmpty);
    q++;
  };
  // The shared tiles' outputs: partials summed in block order, then the SiLU pair.
  auto balancedReduce = [&] {
    const int outs = (guTiles - share.first) * (BM / 2);  // act columns of the shared tiles
    for (int e = b * kMlpConsumers + tid; e < a.T * outs; e += G * kMlpConsumers) {
      const int t = e / outs, m = e % outs, tl = m / (BM / 2), r = 2 * (m % (BM / 2));
      const int first = share.owner(tl * guSlices, G), last = share.owner(tl * guSlices + guSlices - 1, G);
      float gs = 0.f, us = 0.f;
      for (int c = 0; c <= last - first; c++) {
        const float* src = a.wsGu + (int64_t(tl) * kMlpGuSlots + c) * a.T * BM + t * BM;
        gs += src[r], us += src[r + 1];
      }
      const float g = __bfloat162float(__float2bfloat16(gs)), u = __bfloat162float(__float2bfloat16(us));
      a.act[int64_t(t) * a.I + share.first * (BM / 2) + m] = __float2bfloat16(g / (1.f + __expf(-g)) * u);
    }
  };
  auto product = [&](int p) {
    const MlpPhase ph = mlpPhase(a, p);
    const int items = ph.O / BM * ph.S, slices = ph.K / BK / ph.S;
    for (int j = b; j < items; j += G, q++) {
      const int tile = j / ph.S, split = j % ph.S;
      mbarWait(xFull, q & 1);
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      mma(acc, slices, 0);
      if (lane == 0) mbarArrive(xEmpty);
      if (p == 1) {
        siluPair(acc, tile);
      } else {
        // acc[2h + e]: row tile * 128 + wg * 64 + warp * 16 + lane / 4 + 8h, token 2 (lane % 4) + e.
        const int r0 = tile * BM + wg * 64 + warp * 16 + lane / 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const int row = r0 + 8 * (i >> 1), t = 2 * (lane % 4) + (i & 1);
          if (t < a.T) a.ws[(int64_t(split) * a.T + t) * ph.O + row] = acc[i];
        }
      }
    }
  };
  auto reduceInto = [&](int S) {  // x += the S partials, in split order
    for (int e = b * kMlpConsumers + tid; e < a.T * a.H; e += G * kMlpConsumers) {
      float v = 0.f;
      for (int s = 0; s < S; s++) v += a.ws[int64_t(s) * a.T * a.H + e];
      a.x[e] += v;
    }
  };
  auto stamp = [&](int i) {  // thread 0's view of when this block reached the end of phase i
    if (a.stamps && tid == 0) {
      unsigned long long t;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
      a.stamps[b * kMlpStamps + i] = t;
    }
  };
  stamp(0);
  product(0);
  stamp(1);
  mlpGridSync(a.bar, unsigned(G) * ++nBar);  // 1: o's partials
  stamp(2);
  reduceInto(a.So);
  stamp(3);
  mlpGridSync(a.bar, unsigned(G) * ++nBar);  // 2: x
  stamp(4);
  if (b < a.T) {  // rmsnorm of token b, as rmsNormKernel: 4 float4 per thread over 256 threads (H = 4096)
    __shared__ float part[8];
    const float4* xr = reinterpret_cast<const float4*>(a.x + int64_t(b) * a.H);
    float ss = 0.f;
    for (int i = tid; i < a.H / 4; i += kMlpConsumers) {
      const float4 v = xr[i];
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (lane == 0) part[tid / 32] = ss;
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
    float tot = 0.f;
    for (int w = 0; w < 8; w++) tot += part[w];
    const float r = rsqrtf(tot / float(a.H) + a.eps);
    for (int i = tid; i < a.H / 4; i += kMlpConsumers) {
      const float4 v = xr[i], w = reinterpret_cast<const float4*>(a.normW)[i];
      __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(a.xn + int64_t(b) * a.H) + 2 * i;
      o[0] = __floats2bfloat162_rn(w.x * (v.x * r), w.y * (v.y * r));
      o[1] = __floats2bfloat162_rn(w.z * (v.z * r), w.w * (v.w * r));
    }
  }
  stamp(5);
  mlpGridSync(a.bar, unsigned(G) * ++nBar);  // 3: xn
  stamp(6);
  if constexpr (BAL) {
    if (balanced) {
      balancedGateUp();
      mlpGridSync(a.bar, unsigned(G) * ++nBar);  // 4: the shared tiles' partials
      balancedReduce();
    } else {
      product(1);
    }
  } else {
    product(1);
  }
  stamp(7);
  mlpGridSync(a.bar, unsigned(G) * ++nBar);  // 4 (5 balanced): act
  stamp(8);
  product(2);
  stamp(9);
  mlpGridSync(a.bar, unsigned(G) * ++nBar);  // 5 (6): down's partials
  stamp(10);
  reduceInto(a.Sd);
  stamp(11);
  // The last block out sets the barrier back to 0 for the next launch.
  asm volatile("bar.sync 1, 256;\n" ::: "memory");
  if (tid == 0 && atomicAdd(a.bar + 1, 1u) == unsigned(G) - 1) atomicExch(a.bar, 0u), atomicExch(a.bar + 1, 0u);
}
void mlpStep(const MlpArgs& a, const CUtensorMap (&maps)[6], cudaStream_t s) {
  static const bool init = [] {
    MS_CUDA_CHECK(cudaFuncSetAttribute(mlpStepKernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMlpSmem));
    MS_CUDA_CHECK(cudaFuncSetAttribute(mlpStepKernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMlpSmem));
    return true;
  }();
  (void)init;
  if (a.balance)
    launchPdl("mlpStepKernel", mlpStepKernel<true>, dim3(bench::numSms()), dim3(kMlpThreads), kMlpSmem, s, a, maps[0],
              maps[1], maps[2], maps[3], maps[4], maps[5]);
  else
    launchPdl("mlpStepKernel", mlpStepKernel<false>, dim3(bench::numSms()), dim3(kMlpThreads), kMlpSmem, s, a, maps[0],
              maps[1], maps[2], maps[3], maps[4], maps[5]);
}

// The token tile for T tokens: the smallest of 8, 16, 32, 64, 128, 256 that holds them.
int tileN(int T) {
  int n = 8;
  while (n < T) n *= 2;
  return n;
}

}  // namespace

// Y (T, O) (mode) = X (T, K) . W (O, K)^T on the wgmma kernel, K split over S blocks (1, 2, 4, 8),
// minB blocks per SM (2: T <= 64 only). mW: map2d(W, K, O, 64, 128); mX: map2d(X, K, T, 64, tileN(T)).
void decodeGemm(int T, int O, int K, OutMode mode, void* Y, const CUtensorMap& mW, const CUtensorMap& mX, int S,
                cudaStream_t s, int minB = 1, bool tiled = false, bool bare = false) {
  if (T < 1 || T > 256 || O % BM != 0 || K % (BK * S) != 0 || (S & (S - 1)) || S > 8)
    throw CudaError("decodeGemm: T in [1, 256], O % 128 == 0, K % (64 S) == 0, S in 1, 2, 4, 8", false);
  DecodeGemmArgs g;
  g.T = T, g.O = O, g.K = K, g.mode = int(mode), g.Y = Y, g.tiled = tiled, g.bare = bare;
  if (minB == 2) switch (tileN(T)) {
      case 8: return launchN<8, 2>(g, mW, mX, S, s);
      case 16: return launchN<16, 2>(g, mW, mX, S, s);
      case 32: return launchN<32, 2>(g, mW, mX, S, s);
      case 64: return launchN<64, 2>(g, mW, mX, S, s);
      default: throw CudaError("decodeGemm: two blocks per SM for T <= 64 only", false);
    }
  switch (tileN(T)) {
    case 8: return launchN<8, 1>(g, mW, mX, S, s);
    case 16: return launchN<16, 1>(g, mW, mX, S, s);
    case 32: return launchN<32, 1>(g, mW, mX, S, s);
    case 64: return launchN<64, 1>(g, mW, mX, S, s);
    case 128: return launchN<128, 1>(g, mW, mX, S, s);
    default: return launchN<256, 1>(g, mW, mX, S, s);
  }
}

// w (O, K) -> out in 16 KB tiles (retileKernel), and the 3-d map decodeGemm takes with tiled.
CUtensorMap retileW(const bf16* w, int O, int K, bf16* out) {
  const int64_t chunks = int64_t(O) * K / 8;
  retileKernel<<<unsigned((chunks + 255) / 256), 256>>>(w, O, K, out);
  MS_CUDA_CHECK(cudaGetLastError());
  return map3dTiles(out, O, K);
}

}  // namespace ms::cuda

using namespace ms::cuda;

namespace {

struct Shape {
  const char* name;
  int O, K;
  OutMode mode;
};

size_t outElems(int T, int O, OutMode m) { return size_t(T) * (m == OutMode::SiluPairBf16 ? O / 2 : O); }
bool isF32(OutMode m) { return m == OutMode::F32 || m == OutMode::F32Add; }

// The product's output as floats (bf16 or f32 on the device).
std::vector<float> download(const void* d, size_t n, OutMode m) {
  if (!isF32(m)) return bench::downloadBf16(static_cast<const bf16*>(d), n);
  std::vector<float> v(n);
  MS_CUDA_CHECK(cudaDeviceSynchronize());
  MS_CUDA_CHECK(cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost));
  return v;
}

}  // namespace

int main() {
  const char* mlpEnv = std::getenv("MLP_ONLY");  // non-empty: section 4 alone
  const bool mlpOnly = mlpEnv && *mlpEnv;
  try {
    int S_list[] = {1, 2, 4, 8};
    // 1. Every mode against float64: 256 rows (two tiles), K = 512 (8 slices: every S), ragged T.
    if (!mlpOnly) {
      const int O = 256, K = 512;
      std::vector<float> w = bench::randn(size_t(O) * K), x = bench::randn(size_t(256) * K), y0 = bench::randn(size_t(256) * O);
      bf16* dW = bench::uploadBf16(w);
      bf16* dX = bench::uploadBf16(x);
      void* dY;
      MS_CUDA_CHECK(cudaMalloc(&dY, size_t(256) * O * 4));
      bf16* dWt;
      MS_CUDA_CHECK(cudaMalloc(&dWt, size_t(O) * K * 2));
      const CUtensorMap mW = map2d(dW, K, O, 64, 128), mWt = retileW(dW, O, K, dWt);
      for (OutMode mode : {OutMode::Bf16, OutMode::F32, OutMode::F32Add, OutMode::SiluPairBf16})
        for (int T : {1, 5, 8, 13, 16, 33, 64, 100, 128, 200, 256})
          for (int S : S_list)
          for (int minB : {1, 2})
          for (int tl : {0, 1}) {
            if (minB == 2 && T > 64) continue;
            const CUtensorMap mX = map2d(dX, K, T, 64, tileN(T));
            const size_t n = outElems(T, O, mode);
            std::vector<double> ref(n);
            for (int t = 0; t < T; t++)
              for (int o = 0; o < O; o++) {
                double v = 0;
                for (int k = 0; k < K; k++) v += double(x[size_t(t) * K + k]) * w[size_t(o) * K + k];
                if (mode == OutMode::SiluPairBf16) {
                  if (o % 2) continue;
                  double u = 0;
                  for (int k = 0; k < K; k++) u += double(x[size_t(t) * K + k]) * w[size_t(o + 1) * K + k];
                  ref[size_t(t) * (O / 2) + o / 2] = v / (1 + std::exp(-v)) * u;
                } else {
                  ref[size_t(t) * O + o] = mode == OutMode::F32Add ? v + y0[size_t(t) * O + o] : v;
                }
              }
            std::vector<float> first;
            for (int rep = 0; rep < 2; rep++) {
              if (mode == OutMode::F32Add)
                MS_CUDA_CHECK(cudaMemcpy(dY, y0.data(), n * 4, cudaMemcpyHostToDevice));
              else
                MS_CUDA_CHECK(cudaMemset(dY, 0xff, n * 4));  // NaN where nothing is written
              decodeGemm(T, O, K, mode, dY, tl ? mWt : mW, mX, S, 0, minB, tl);
              const auto got = download(dY, n, mode);
              if (rep == 0) {
                bench::check("decodeGemm mode " + std::to_string(int(mode)) + " T=" + std::to_string(T) +
                                 " S=" + std::to_string(S) + " minB=" + std::to_string(minB) + (tl ? " tiled" : "") + " (256 x 512)",
                             got, ref, isF32(mode) ? 1e-4 : 2e-2);
                first = got;
              } else if (std::memcmp(first.data(), got.data(), n * 4) != 0) {
                bench::numFailed()++;
                std::printf("  FAIL: a second run gave other bits\n");
              }
            }
          }
      cudaFree(dW), cudaFree(dWt), cudaFree(dX), cudaFree(dY);
    }
    // 2. The 8B shapes: against cuBLASLt's product, then timed.
    const Shape shapes[] = {{"qkv", 6144, 4096, OutMode::Bf16},
                            {"o", 4096, 4096, OutMode::F32Add},
                            {"gate_up", 28672, 4096, OutMode::SiluPairBf16},
                            {"down", 4096, 14336, OutMode::F32Add}};
    constexpr int kCopies = 8;
    for (const Shape& sh : shapes) {
      if (mlpOnly) break;
      std::vector<float> w = bench::randn(size_t(sh.O) * sh.K);
      for (auto& v : w) v *= 0.02f;
      std::vector<bf16*> dWs;
      dWs.push_back(bench::uploadBf16(w));
      for (int c = 1; c < kCopies; c++) {
        bf16* d;
        MS_CUDA_CHECK(cudaMalloc(&d, size_t(sh.O) * sh.K * 2));
        MS_CUDA_CHECK(cudaMemcpy(d, dWs[0], size_t(sh.O) * sh.K * 2, cudaMemcpyDeviceToDevice));
        dWs.push_back(d);
      }
      std::vector<CUtensorMap> mWs, mWts;
      std::vector<bf16*> dWts;
      for (bf16* d : dWs) {
        mWs.push_back(map2d(d, sh.K, sh.O, 64, 128));
        bf16* t;
        MS_CUDA_CHECK(cudaMalloc(&t, size_t(sh.O) * sh.K * 2));
        mWts.push_back(retileW(d, sh.O, sh.K, t));
        dWts.push_back(t);
      }
      std::vector<float> x = bench::randn(size_t(256) * sh.K);
      bf16* dX = bench::uploadBf16(x);
      void *dY, *dYref, *dGu;
      MS_CUDA_CHECK(cudaMalloc(&dY, size_t(256) * sh.O * 4));
      MS_CUDA_CHECK(cudaMalloc(&dYref, size_t(256) * sh.O * 4));
      MS_CUDA_CHECK(cudaMalloc(&dGu, size_t(256) * sh.O * 2));
      const double bytes = double(sh.O) * sh.K * 2;
      for (int T : {8, 16, 32, 64}) {
        const CUtensorMap mX = map2d(dX, sh.K, T, 64, tileN(T));
        const size_t n = outElems(T, sh.O, sh.mode);
        std::string line = std::string(sh.name) + " T=" + std::to_string(T) + ", us alone (TB/s), S/blocks per SM:";
        double bests[2] = {1e30, 1e30};
        int bestSs[2] = {0, 0}, bestBs[2] = {1, 1};
        for (int tl : {0, 1})
          for (int minB : {1, 2})
            for (int S : {1, 2, 4}) {
              if (sh.K % (64 * S) || sh.K / S < 256 || (minB == 2 && T > 64)) continue;
              int turn = 0;
              auto f = [&] {
                const int c = turn++ % kCopies;
                decodeGemm(T, sh.O, sh.K, sh.mode, dY, tl ? mWts[c] : mWs[c], mX, S, 0, minB, tl);
              };
              const double ms = bench::timeMs(f, 3, 20);
              char b[64];
              std::snprintf(b, sizeof b, " S=%d/%d%s %.1f (%.2f);", S, minB, tl ? "t" : "", ms * 1e3, bytes / ms / 1e9);
              line += b;
              if (ms < bests[tl]) bests[tl] = ms, bestSs[tl] = S, bestBs[tl] = minB;
            }
        const int bestS = bestSs[0], bestB = bestBs[0];
        // Against cuBLASLt's product (bf16 out; the SiLU pair applied on the host) on the same inputs.
        MS_CUDA_CHECK(cudaMemset(dY, 0, n * 4));
        decodeGemm(T, sh.O, sh.K, sh.mode, dY, mWs[0], mX, bestS, 0, bestB);
        const auto mine = download(dY, n, sh.mode);
#ifdef MS_BENCH_GEMM
        Gemm gemm;
        std::vector<const bf16*> ws(dWs.begin(), dWs.end());
        const OutMode ltMode = sh.mode == OutMode::SiluPairBf16 ? OutMode::Bf16 : sh.mode;
        const Gemm::Choice ch = gemm.tune(dX, T, ws, sh.O, sh.K, dYref, ltMode, 0, true);
        MS_CUDA_CHECK(cudaMemset(dYref, 0, size_t(T) * sh.O * 4));
        gemm.run(dX, T, dWs[0], sh.O, sh.K, dYref, ltMode, 0);
        auto lt = download(dYref, size_t(T) * sh.O, ltMode);
        std::vector<double> ref(n);
        if (sh.mode == OutMode::SiluPairBf16) {
          for (size_t i = 0; i < n; i++) {
            const double gt = lt[2 * i], up = lt[2 * i + 1];
            ref[i] = gt / (1 + std::exp(-gt)) * up;
          }
        } else {
          for (size_t i = 0; i < n; i++) ref[i] = lt[i];
        }
        bench::check(std::string("  ") + sh.name + " T=" + std::to_string(T) + " vs cuBLASLt", mine, ref, 2e-2);
        int turn = 0;
        auto g = [&] { gemm.run(dX, T, dWs[turn++ % kCopies], sh.O, sh.K, dYref, ltMode, 0); };
        const double ltMs = bench::timeMs(g, 3, 20);
        auto mine8 = [&] {
          for (int c = 0; c < kCopies; c++) decodeGemm(T, sh.O, sh.K, sh.mode, dY, mWs[c], mX, bestS, 0, bestB);
        };
        auto lt8 = [&] {
          for (int c = 0; c < kCopies; c++) {
            gemm.run(dX, T, dWs[c], sh.O, sh.K, dYref, ltMode, 0);
            if (sh.mode == OutMode::SiluPairBf16) siluMul(static_cast<bf16*>(dYref), T, sh.O / 2, static_cast<bf16*>(dGu), 0);
          }
        };
        auto mineT8 = [&] {
          for (int c = 0; c < kCopies; c++)
            decodeGemm(T, sh.O, sh.K, sh.mode, dY, mWts[c], mX, bestSs[1], 0, bestBs[1], true);
        };
        const double m8 = bench::timeMs(mine8, 2, 10) / kCopies, l8 = bench::timeMs(lt8, 2, 10) / kCopies;
        const double t8 = bench::timeMs(mineT8, 2, 10) / kCopies;
        auto bare8 = [&] {
          for (int c = 0; c < kCopies; c++) decodeGemm(T, sh.O, sh.K, sh.mode, dY, mWs[c], mX, bestS, 0, bestB, false, true);
        };
        const double b8 = bench::timeMs(bare8, 2, 10) / kCopies;
        {
          MS_CUDA_CHECK(cudaMemset(dY, 0, n * 4));
          decodeGemm(T, sh.O, sh.K, sh.mode, dY, mWts[0], mX, bestSs[1], 0, bestBs[1], true);
          const auto tiled = download(dY, n, sh.mode);
          if (std::memcmp(tiled.data(), mine.data(), n * 4) != 0 && bestSs[1] == bestS)
            bench::numFailed()++, std::printf("  FAIL: tiled weights gave other bits at the same split\n");
        }
        char b[260];
        std::snprintf(b, sizeof b, " | cuBLASLt (rank %d, split-K %d) %.1f (%.2f) | x8 per product: mine S=%d/%d %.1f, tiled S=%d/%d %.1f, cuBLASLt%s %.1f, its copies alone %.1f",
                      ch.rank, ch.splitK, ltMs * 1e3, bytes / ltMs / 1e9, bestS, bestB, m8 * 1e3, bestSs[1], bestBs[1], t8 * 1e3,
                      sh.mode == OutMode::SiluPairBf16 ? " + siluMul" : "", l8 * 1e3, b8 * 1e3);
        line += b;
#endif
        std::printf("%s\n", line.c_str());
      }
      for (bf16* d : dWs) cudaFree(d);
      for (bf16* d : dWts) cudaFree(d);
      cudaFree(dX), cudaFree(dY), cudaFree(dYref), cudaFree(dGu);
    }
    // 3. A layer's weights streamed: four bare launches per layer against one persistent kernel.
    if (!mlpOnly) {
      constexpr int kLayers = 8, T = 8;
      const Shape kinds[4] = {shapes[0], shapes[1], shapes[2], shapes[3]};
      const int bestS[4] = {4, 4, 1, 4}, bestB[4] = {2, 2, 2, 2};  // the products' picks at T = 8 (section 2)
      bf16* dW[4];
      CUtensorMap maps[4];
      std::vector<std::vector<CUtensorMap>> perLayer(4);
      double bytes = 0;
      for (int p = 0; p < 4; p++) {
        const size_t n = size_t(kLayers) * kinds[p].O * kinds[p].K;
        MS_CUDA_CHECK(cudaMalloc(&dW[p], n * 2));
        MS_CUDA_CHECK(cudaMemset(dW[p], 0x3c, n * 2));
        maps[p] = mapLayers(dW[p], kinds[p].O, kinds[p].K, kLayers);
        for (int l = 0; l < kLayers; l++)
          perLayer[p].push_back(map2d(dW[p] + size_t(l) * kinds[p].O * kinds[p].K, kinds[p].K, kinds[p].O, 64, 128));
        bytes += double(n) * 2;
      }
      std::vector<float> x = bench::randn(size_t(T) * 14336);
      bf16* dX = bench::uploadBf16(x);
      void* dY;
      MS_CUDA_CHECK(cudaMalloc(&dY, size_t(T) * 28672 * 4));
      std::vector<CUtensorMap> mX;
      for (int p = 0; p < 4; p++) mX.push_back(map2d(dX, kinds[p].K, T, 64, tileN(T)));
      unsigned* dBar;
      MS_CUDA_CHECK(cudaMalloc(&dBar, 4));
      auto separate = [&] {
        for (int l = 0; l < kLayers; l++)
          for (int p = 0; p < 4; p++)
            decodeGemm(T, kinds[p].O, kinds[p].K, kinds[p].mode, dY, perLayer[p][l], mX[p], bestS[p], 0, bestB[p], false, true);
      };
      LayerStreamArgs a;
      a.layers = kLayers, a.phases = 4, a.barrier = dBar;
      for (int p = 0; p < 4; p++) a.rowTiles[p] = kinds[p].O / BM, a.kSlices[p] = kinds[p].K / BK;
      auto persistent = [&](int prefetch) {
        LayerStreamArgs b = a;
        b.prefetch = prefetch;
        layerStream(b, maps, 0);
      };
      const double layerMB = bytes / 1e6 / kLayers;
      const double sep = bench::timeMs(separate, 2, 10), pre = bench::timeMs([&] { persistent(1); }, 2, 10);
      const double noPre = bench::timeMs([&] { persistent(0); }, 2, 10);
      std::printf("layer weight stream (8B layer, %.0f MB; %d layers, us per layer, TB/s): 4 bare launches %.1f (%.2f); "
                  "persistent, prefetch across the barriers %.1f (%.2f); persistent, no prefetch %.1f (%.2f)\n",
                  layerMB, kLayers, sep * 1e3 / kLayers, bytes / sep / 1e9, pre * 1e3 / kLayers, bytes / pre / 1e9,
                  noPre * 1e3 / kLayers, bytes / noPre / 1e9);
      for (int p = 0; p < 4; p++) cudaFree(dW[p]);
      cudaFree(dX), cudaFree(dY), cudaFree(dBar);
    }
    // 4. The MLP half of a decode layer: the engine's five launches (tuned cuBLASLt products,
    // rmsNorm, siluMul) against the persistent kernel, each as a CUDA graph over 8 layers.
#ifdef MS_BENCH_GEMM
    for (int T : {5, 8}) {
      if (mlpOnly && T != 8) continue;  // the short run: T = 8 alone
      constexpr int kLayers = 8, H = 4096, I = 14336;
      auto randBf16 = [](size_t n, float scale) {
        std::vector<float> v = bench::randn(n);
        for (auto& e : v) e *= scale;
        return bench::uploadBf16(v);
      };
      bf16 *dWo = randBf16(size_t(kLayers) * H * H, 0.02f), *dWgu = randBf16(size_t(kLayers) * 2 * I * H, 0.02f);
      bf16* dWd = randBf16(size_t(kLayers) * H * I, 0.02f);
      bf16* dAttn = randBf16(size_t(T) * H, 1.f);
      std::vector<float> x0 = bench::randn(size_t(T) * H), nw = bench::randn(H);
      for (auto& e : nw) e = 1.f + 0.1f * e;
      float *dX, *dX0, *dNw, *dWs;
      bf16 *dXn, *dAct, *dGu;
      unsigned* dBar;
      MS_CUDA_CHECK(cudaMalloc(&dX, size_t(T) * H * 4));
      MS_CUDA_CHECK(cudaMalloc(&dX0, size_t(T) * H * 4));
      MS_CUDA_CHECK(cudaMalloc(&dNw, H * 4));
      MS_CUDA_CHECK(cudaMalloc(&dWs, size_t(8) * T * H * 4));  // o's and down's split partials
      MS_CUDA_CHECK(cudaMalloc(&dXn, size_t(T) * H * 2));
      MS_CUDA_CHECK(cudaMalloc(&dAct, size_t(T) * I * 2));
      MS_CUDA_CHECK(cudaMalloc(&dGu, size_t(T) * 2 * I * 2));
      MS_CUDA_CHECK(cudaMalloc(&dBar, 8));
      MS_CUDA_CHECK(cudaMemset(dBar, 0, 8));
      MS_CUDA_CHECK(cudaMemcpy(dX0, x0.data(), x0.size() * 4, cudaMemcpyHostToDevice));
      MS_CUDA_CHECK(cudaMemcpy(dNw, nw.data(), H * 4, cudaMemcpyHostToDevice));
      auto wo = [&](int l) { return dWo + size_t(l) * H * H; };
      auto wgu = [&](int l) { return dWgu + size_t(l) * 2 * I * H; };
      auto wd = [&](int l) { return dWd + size_t(l) * H * I; };
      // The engine's path, its products tuned as autotune.cc tunes them (split-K candidates included).
      Gemm gemm;
      std::vector<const bf16*> wos, wgus, wds;
      for (int l = 0; l < kLayers; l++) wos.push_back(wo(l)), wgus.push_back(wgu(l)), wds.push_back(wd(l));
      MS_CUDA_CHECK(cudaMemcpy(dX, dX0, size_t(T) * H * 4, cudaMemcpyDeviceToDevice));
      gemm.tune(dAttn, T, wos, H, H, dX, OutMode::F32Add, 0, true);
      gemm.tune(dXn, T, wgus, 2 * I, H, dGu, OutMode::Bf16, 0, true);
      gemm.tune(dAct, T, wds, H, I, dX, OutMode::F32Add, 0, true);
      auto engineLayer = [&](int l, cudaStream_t s) {
        gemm.run(dAttn, T, wo(l), H, H, dX, OutMode::F32Add, s);
        rmsNorm(dX, nullptr, T, H, dNw, 1e-5f, dXn, s);
        gemm.run(dXn, T, wgu(l), 2 * I, H, dGu, OutMode::Bf16, s);
        siluMul(dGu, T, I, dAct, s);
        gemm.run(dAct, T, wd(l), H, I, dX, OutMode::F32Add, s);
      };
      MlpArgs m;
      m.T = T, m.H = H, m.I = I, m.eps = 1e-5f, m.x = dX, m.normW = dNw, m.xn = dXn, m.act = dAct, m.ws = dWs, m.bar = dBar;
      float* dWsGu;
      MS_CUDA_CHECK(cudaMalloc(&dWsGu, size_t(2 * I / 128) * kMlpGuSlots * T * 128 * 4));
      m.wsGu = dWsGu;
      std::vector<std::array<CUtensorMap, 6>> maps(kLayers);
      for (int l = 0; l < kLayers; l++)
        maps[l] = {map2d(wo(l), H, H, 64, 128), map2d(wgu(l), H, 2 * I, 64, 128), map2d(wd(l), I, H, 64, 128),
                   map2d(dAttn, H, T, 64, kMlpN), map2d(dXn, H, T, 64, kMlpN), map2d(dAct, I, T, 64, kMlpN)};
      auto mlpLayer = [&](int l, cudaStream_t s) {
        const CUtensorMap(&mm)[6] = *reinterpret_cast<const CUtensorMap(*)[6]>(maps[l].data());
        mlpStep(m, mm, s);
      };
      // Graphs of 8 layers each, replayed.
      auto graphOf = [&](const std::function<void(int, cudaStream_t)>& layer) {
        cudaStream_t s;
        MS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        cudaGraph_t g;
        cudaGraphExec_t e;
        MS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        for (int l = 0; l < kLayers; l++) layer(l, s);
        MS_CUDA_CHECK(cudaStreamEndCapture(s, &g));
        MS_CUDA_CHECK(cudaGraphInstantiate(&e, g, 0));
        cudaGraphDestroy(g);
        cudaStreamDestroy(s);
        return e;
      };
      cudaGraphExec_t gEngine = graphOf(engineLayer);
      for (int bal : {0, 1}) {  // gate/up as whole-tile items (2 : 1 over the blocks), then balanced
        m.balance = bal;
        const std::string tag = bal ? " (balanced gate/up)" : "";
        // One layer from the same x: the residual and the SiLU output against the engine's.
        MS_CUDA_CHECK(cudaMemcpy(dX, dX0, size_t(T) * H * 4, cudaMemcpyDeviceToDevice));
        engineLayer(0, 0);
        const auto xRef = download(dX, size_t(T) * H, OutMode::F32), actRef = bench::downloadBf16(dAct, size_t(T) * I);
        MS_CUDA_CHECK(cudaMemcpy(dX, dX0, size_t(T) * H * 4, cudaMemcpyDeviceToDevice));
        MS_CUDA_CHECK(cudaMemset(dAct, 0xff, size_t(T) * I * 2));
        mlpLayer(0, 0);
        const auto xGot = download(dX, size_t(T) * H, OutMode::F32), actGot = bench::downloadBf16(dAct, size_t(T) * I);
        std::vector<double> r1(xRef.begin(), xRef.end()), r2(actRef.begin(), actRef.end());
        bench::check("mlpStep T=" + std::to_string(T) + tag + ": x after one layer vs the engine's kernels", xGot, r1, 5e-3);
        bench::check("mlpStep T=" + std::to_string(T) + tag + ": silu(gate) * up vs the engine's kernels", actGot, r2, 2e-2);
        // Again, for the same bits (deterministic), and with the barrier reset by the kernel itself.
        MS_CUDA_CHECK(cudaMemcpy(dX, dX0, size_t(T) * H * 4, cudaMemcpyDeviceToDevice));
        mlpLayer(0, 0);
        const auto xAgain = download(dX, size_t(T) * H, OutMode::F32);
        if (std::memcmp(xAgain.data(), xGot.data(), xGot.size() * 4) != 0)
          bench::numFailed()++, std::printf("  FAIL: mlpStep gave other bits the second time\n");
        cudaGraphExec_t gMlp = graphOf(mlpLayer);
        const double msEngine = bench::timeMs([&] { MS_CUDA_CHECK(cudaGraphLaunch(gEngine, 0)); }, 3, 20);
        const double msMlp = bench::timeMs([&] { MS_CUDA_CHECK(cudaGraphLaunch(gMlp, 0)); }, 3, 20);
        const double msEngine2 = bench::timeMs([&] { MS_CUDA_CHECK(cudaGraphLaunch(gEngine, 0)); }, 3, 20);
        const double msMlp2 = bench::timeMs([&] { MS_CUDA_CHECK(cudaGraphLaunch(gMlp, 0)); }, 3, 20);
        const double mb = (double(H) * H + 2.0 * I * H + double(H) * I) * 2 / 1e6;  // MB of weights per layer
        const double uE = msEngine * 1e3 / kLayers, uE2 = msEngine2 * 1e3 / kLayers;
        const double uM = msMlp * 1e3 / kLayers, uM2 = msMlp2 * 1e3 / kLayers;
        std::printf("MLP half of a layer%s, T=%d, graphs of %d layers, us per layer (TB/s of its %.0f MB of weights): "
                    "engine's kernels %.1f / %.1f (%.2f); persistent %.1f / %.1f (%.2f)\n",
                    tag.c_str(), T, kLayers, mb, uE, uE2, mb / uE, uM, uM2, mb / uM);
        {  // Where a layer's time goes: each block's %globaltimer at the end of each phase (layer 1, after layer 0).
          const int G = bench::numSms();
          unsigned long long* dSt;
          MS_CUDA_CHECK(cudaMalloc(&dSt, size_t(G) * kMlpStamps * 8));
          mlpLayer(0, 0);
          MlpArgs ms = m;
          ms.stamps = dSt;
          const CUtensorMap(&mm)[6] = *reinterpret_cast<const CUtensorMap(*)[6]>(maps[1].data());
          mlpStep(ms, mm, 0);
          std::vector<unsigned long long> st(size_t(G) * kMlpStamps);
          MS_CUDA_CHECK(cudaDeviceSynchronize());
          MS_CUDA_CHECK(cudaMemcpy(st.data(), dSt, st.size() * 8, cudaMemcpyDeviceToHost));
          unsigned long long t0 = ~0ull;
          for (int b = 0; b < G; b++) t0 = std::min(t0, st[size_t(b) * kMlpStamps]);
          const char* names[kMlpStamps] = {"entry", "o", "barrier 1", "o reduce", "barrier 2", "norm", "barrier 3", "gate/up",
                                           "barrier 4", "down", "barrier 5", "down reduce"};
          std::string line = "  T=" + std::to_string(T) + tag + " phase ends, us after the first block's entry (median / last block):";
          for (int i = 0; i < kMlpStamps; i++) {
            std::vector<double> v;
            for (int b = 0; b < G; b++) v.push_back(double(st[size_t(b) * kMlpStamps + i] - t0) / 1e3);
            std::sort(v.begin(), v.end());
            char buf[80];
            std::snprintf(buf, sizeof buf, " %s %.1f / %.1f;", names[i], v[v.size() / 2], v.back());
            line += buf;
          }
          std::printf("%s\n", line.c_str());
          cudaFree(dSt);
        }
        cudaGraphExecDestroy(gMlp);
      }
      cudaGraphExecDestroy(gEngine);
      cudaFree(dWo), cudaFree(dWgu), cudaFree(dWd), cudaFree(dAttn), cudaFree(dX), cudaFree(dX0), cudaFree(dNw);
      cudaFree(dWs), cudaFree(dXn), cudaFree(dAct), cudaFree(dGu), cudaFree(dBar), cudaFree(dWsGu);
    }
#endif
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("gemm-decode-wgmma: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
