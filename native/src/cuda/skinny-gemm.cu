// Y (T, O) = X (T, K) . W (O, K)^T for few tokens: a streaming pass over W at memory speed.
// Decode steps at small batch are weight-bound. Each warp owns R output rows (2, or 1 for long
// rows at T = 1); lanes stride over K in 16-byte chunks; W is software-pipelined through two
// register sets of U chunks per row, so 2 * U * R loads per lane are in flight. The first set is
// loaded before the PDL wait: weights depend on no earlier kernel, so streaming starts while the
// previous kernel drains. That is the form for 1 token and for 5..8; 2..4 tokens run on tensor
// cores (below).
#include <string>

#include "bf16-vec.h"
#include "check.h"
#include "kernels.h"
#include "mma-ptx.h"
#include "pdl.h"

namespace ms::cuda {
namespace {

constexpr int kWarps = 4;  // per block

template <int U, int R>
__device__ __forceinline__ void loadW(uint4 (&dst)[U][R], const uint4* const (&w)[R], int base, int lane, int chunks) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    int c = base + u * 32 + lane;
#pragma unroll
    for (int r = 0; r < R; r++) dst[u][r] = c < chunks ? __ldcs(w[r] + c) : make_uint4(0, 0, 0, 0);
  }
}

template <int T, int U, int R>
__device__ __forceinline__ void accumulate(float (&acc)[R][T], const uint4 (&wr)[U][R], const uint4* x, int base,
                                           int lane, int chunks) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    int c = base + u * 32 + lane;
    if (c >= chunks) break;
    uint4 xr[T];
#pragma unroll
    for (int t = 0; t < T; t++) xr[t] = __ldg(x + int64_t(t) * chunks + c);  // shared by all warps: cached
    float wf[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) toFloat8(wr[u][r], wf[r]);
#pragma unroll
    for (int t = 0; t < T; t++) {
      float xf[8];
      toFloat8(xr[t], xf);
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int i = 0; i < 8; i++) acc[r][t] = fmaf(xf[i], wf[r][i], acc[r][t]);
    }
  }
}

// grid (ceil(O / (kWarps * R))), block 32 * kWarps
template <int T, int MODE, int U, int MINB, int R>
__global__ void __launch_bounds__(32 * kWarps, MINB) skinnyGemmKernel(const bf16* __restrict__ X, const bf16* __restrict__ W,
                                                                int O, int K, void* __restrict__ Yv) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int row0 = (blockIdx.x * kWarps + warp) * R;  // may be >= O in the last block: loads clamp
  const int chunks = K / 8;
  const uint4* w[R];
#pragma unroll
  for (int r = 0; r < R; r++) w[r] = reinterpret_cast<const uint4*>(W + int64_t(min(row0 + r, O - 1)) * K);
  const uint4* x = reinterpret_cast<const uint4*>(X);

  uint4 wa[U][R], wb[U][R];
  loadW<U, R>(wa, w, 0, lane, chunks);
  pdlWait();  // X (and Y when accumulating) come from the previous kernel
  pdlTrigger();

  float acc[R][T];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < T; t++) acc[r][t] = 0.f;
  for (int base = 0; base < chunks; base += 64 * U) {
    loadW<U, R>(wb, w, base + 32 * U, lane, chunks);
    accumulate<T, U, R>(acc, wa, x, base, lane, chunks);
    loadW<U, R>(wa, w, base + 64 * U, lane, chunks);
    accumulate<T, U, R>(acc, wb, x, base + 32 * U, lane, chunks);
  }

#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < T; t++) {
      float v = acc[r][t];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[r][t] = v;
    }
  if constexpr (MODE == int(OutMode::SiluPairBf16)) {
    static_assert(R == 2, "a gate/up pair needs two rows per warp");
    // Rows row0 (gate) and row0 + 1 (up) make output (t, row0 / 2) of a (T, O / 2) matrix.
#pragma unroll
    for (int t = 0; t < T; t++) {
      if (lane != t % 32 || row0 >= O) continue;
      float g = __bfloat162float(__float2bfloat16(acc[0][t])), u = __bfloat162float(__float2bfloat16(acc[1][t]));
      static_cast<bf16*>(Yv)[int64_t(t) * (O / 2) + row0 / 2] = __float2bfloat16(g / (1.f + __expf(-g)) * u);
    }
  } else {
    // Lane (r * T + t) % 32 writes output (t, row0 + r).
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int t = 0; t < T; t++) {
        if (lane != (r * T + t) % 32 || row0 + r >= O) continue;
        int64_t idx = int64_t(t) * O + row0 + r;
        if constexpr (MODE == int(OutMode::F32Add))
          static_cast<float*>(Yv)[idx] += acc[r][t];
        else if constexpr (MODE == int(OutMode::F32))
          static_cast<float*>(Yv)[idx] = acc[r][t];
        else
          static_cast<bf16*>(Yv)[idx] = __float2bfloat16(acc[r][t]);
      }
  }
}

template <int T, int U, int MINB, int R>
void launchVariant(const bf16* X, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  dim3 grid((O + kWarps * R - 1) / (kWarps * R)), block(32 * kWarps);
  switch (mode) {
    case OutMode::F32Add:
      launchPdl("skinnyGemmKernel", skinnyGemmKernel<T, int(OutMode::F32Add), U, MINB, R>, grid, block, 0, s, X, W, O, K,
                Y);
      break;
    case OutMode::F32:
      launchPdl("skinnyGemmKernel", skinnyGemmKernel<T, int(OutMode::F32), U, MINB, R>, grid, block, 0, s, X, W, O, K, Y);
      break;
    case OutMode::SiluPairBf16:
      if constexpr (R == 2)
        launchPdl("skinnyGemmKernel", skinnyGemmKernel<T, int(OutMode::SiluPairBf16), U, MINB, R>, grid, block, 0, s, X,
                  W, O, K, Y);
      else
        throw CudaError("skinnyGemm: gate/up pairs need two rows per warp", false);
      break;
    default:
      launchPdl("skinnyGemmKernel", skinnyGemmKernel<T, int(OutMode::Bf16), U, MINB, R>, grid, block, 0, s, X, W, O, K, Y);
  }
}

// T = 1: 3 chunks per set, 2 rows per warp and 6 blocks per SM (a ~800-block product runs in one
// wave); with long rows (K >= 8192: the down projection) and no gate/up pairs: 1 row per warp, 4
// chunks per set, 8 blocks per SM, so 4096 rows fill every SM's slots in one wave (measured on an
// H100 at the 8B shape: 43 us instead of 50 alone, 0.04-0.05 ms less per decode step). The shapes
// that lost (the first shape everywhere; 4 chunks per set at the registers' occupancy) cost
// 0.03-0.08 ms per 8B decode step (bench/results/engine-gpu.md); their switch is gone. T = 5..8:
// 2 chunks per set, 2 rows per warp (issue-bound: cuBLASLt wins these at the 8B shape, autotune.cc).
template <int T>
void launch(const bf16* X, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  static_assert(T == 1 || T >= 5, "2..4 tokens run on tensor cores (launchMma)");
  if constexpr (T == 1) {
    if (K >= 8192 && mode != OutMode::SiluPairBf16) return launchVariant<T, 4, 8, 1>(X, W, O, K, Y, mode, s);
    launchVariant<T, 3, 6, 2>(X, W, O, K, Y, mode, s);
  } else {
    launchVariant<T, 2, 1, 2>(X, W, O, K, Y, mode, s);
  }
}

// ---- 2..4 tokens on tensor cores ----
// At T tokens the FMA form above spends 8 T multiply-adds and T bf16 conversions per 16 bytes of W
// and row: from T = 4 its issue rate, not memory, sets the pace (qkv at T = 8: 36.8 us alone against
// 11.2 at the read roofline, H200 2026-12-04). Here each warp owns 16 output rows and feeds
// mma.sync m16n8k16 (rows x 16 k x 8 tokens, f32 accumulation) straight from 16-byte loads: a dot
// product's terms may be taken in any order, so lane (g = lane / 4, c = lane % 4) loads 8
// consecutive k of rows g and g + 8 and of token g's x, and those 8 k fill its fragment slots
// {2c, 2c + 1, 2c + 8, 2c + 9} of two k-steps (the four lanes of a quad cover 32 consecutive k, the
// same 32 in W and x). Tokens past T are zeros. The block's warps take interleaved K slices and sum
// their 16 x 8 partial tiles in shared memory in warp order (deterministic). Gate/up pairs: fragment
// rows g and g + 8 are gate row 2j and up row 2j + 1 of one pair, so the SiLU product is taken from
// the sums directly. Measured (H200, 2026-12-04, 8B shape): alone at T = 8 qkv 21.5 us, o 18.2,
// gate/up 70.2, down 37.3 (FMA form 36.8 / 29.1 / 137.7 / 76.5, cuBLASLt 26.1 / 23.1 / 67.5 / 42.3);
// in the decode step's graph against the FMA form, same command A/B/A/B, b = 2 -2.8 / -3.9%, b = 4
// -2.4 / -1.0% (b = 1 and 8 unchanged). At 8 tokens it loses in the graph: o alone on it costs
// +8 / +9% per step at b = 8, nothing when launched without PDL (its early blocks land beside the
// decode attention's last ones), and launched without PDL none of the four beats cuBLASLt in the
// graph (engine-gpu.md), so 2..4 only.
constexpr int kMmaWarps = 4, kMmaU = 4;  // warps per block (K split), 16-byte chunks per row per set

template <int U>
struct MmaSet {
  uint4 w[U][2];  // rows g, g + 8
  uint4 x[U];     // token g
};

// Chunk ch of token g's x (zeros past K or T). Through L2 only (ld.global.cg): launched early
// (PDL), this kernel is resident while the kernel before writes x, and read through __ldg (the
// read-only path) x was stale: the fixture's graph replay test failed in 3 of 3 runs, passed with
// MS_PDL=0 and with __ldcg (H200 2026-12-04).
__device__ __forceinline__ uint4 loadMmaX(const uint4* x, int ch, int chunks) {
  return ch < chunks && x ? __ldcg(x + ch) : make_uint4(0, 0, 0, 0);
}

// Set `it`'s chunks of rows g and g + 8 (zeros past K), and of x where withX.
template <int U>
__device__ __forceinline__ void loadMmaSet(MmaSet<U>& s, const uint4* w0, const uint4* w1, const uint4* x, int it,
                                           int c, int chunks, bool withX) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int ch = (it * U + u) * 4 + c;
    const bool in = ch < chunks;
    s.w[u][0] = in ? __ldcs(w0 + ch) : make_uint4(0, 0, 0, 0);
    s.w[u][1] = in ? __ldcs(w1 + ch) : make_uint4(0, 0, 0, 0);
    if (withX) s.x[u] = loadMmaX(x, ch, chunks);
  }
}

template <int U>
__device__ __forceinline__ void mmaSet(float (&acc)[4], const MmaSet<U>& s) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const uint32_t a0[4] = {s.w[u][0].x, s.w[u][1].x, s.w[u][0].y, s.w[u][1].y};
    const uint32_t a1[4] = {s.w[u][0].z, s.w[u][1].z, s.w[u][0].w, s.w[u][1].w};
    mma16816(acc, a0, s.x[u].x, s.x[u].y);
    mma16816(acc, a1, s.x[u].z, s.x[u].w);
  }
}

// grid (ceil(O / 16)), block 32 * kMmaWarps.
template <int MODE>
__global__ void __launch_bounds__(32 * kMmaWarps, 4)
    skinnyMmaKernel(const bf16* __restrict__ X, int T, const bf16* __restrict__ W, int O, int K,
                    void* __restrict__ Yv) {
  constexpr bool kPair = MODE == int(OutMode::SiluPairBf16);
  __shared__ float red[kMmaWarps][16][9];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int row0 = blockIdx.x * 16, chunks = K / 8;
  // Fragment rows g and g + 8: rows row0 + g and + 8, or gate 2j and up 2j + 1 of pair j = row0 / 2 + g.
  const int r0 = kPair ? row0 + 2 * g : row0 + g, r1 = kPair ? r0 + 1 : r0 + 8;
  const uint4* w0 = reinterpret_cast<const uint4*>(W + int64_t(min(r0, O - 1)) * K);
  const uint4* w1 = reinterpret_cast<const uint4*>(W + int64_t(min(r1, O - 1)) * K);
  const uint4* x = g < T ? reinterpret_cast<const uint4*>(X + int64_t(g) * K) : nullptr;
  constexpr int U = kMmaU;
  const int nIt = (chunks + 4 * U - 1) / (4 * U);

  MmaSet<U> sa, sb;
  int it = warp;
  loadMmaSet(sa, w0, w1, x, it, c, chunks, false);  // weights depend on no kernel: before the wait
  pdlWait();
#pragma unroll
  for (int u = 0; u < U; u++) sa.x[u] = loadMmaX(x, (it * U + u) * 4 + c, chunks);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (; it < nIt; it += 2 * kMmaWarps) {
    loadMmaSet(sb, w0, w1, x, it + kMmaWarps, c, chunks, true);
    mmaSet(acc, sa);
    loadMmaSet(sa, w0, w1, x, it + 2 * kMmaWarps, c, chunks, true);
    mmaSet(acc, sb);
  }
  pdlTrigger();  // after the stream: the next kernel's blocks wait on free slots, not beside this one's
  red[warp][g][2 * c] = acc[0], red[warp][g][2 * c + 1] = acc[1];
  red[warp][g + 8][2 * c] = acc[2], red[warp][g + 8][2 * c + 1] = acc[3];
  __syncthreads();
  const int i = threadIdx.x / 8, t = threadIdx.x % 8;  // 128 threads: 16 fragment rows x 8 tokens
  if (t >= T) return;
  auto sum = [&](int r) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kMmaWarps; w++) v += red[w][r][t];
    return v;
  };
  if constexpr (kPair) {
    const int j = row0 / 2 + i;
    if (i >= 8 || 2 * j >= O) return;
    const float gate = __bfloat162float(__float2bfloat16(sum(i))), up = __bfloat162float(__float2bfloat16(sum(i + 8)));
    static_cast<bf16*>(Yv)[int64_t(t) * (O / 2) + j] = __float2bfloat16(gate / (1.f + __expf(-gate)) * up);
  } else {
    const int row = row0 + i;
    if (row >= O) return;
    const int64_t idx = int64_t(t) * O + row;
    const float v = sum(i);
    if constexpr (MODE == int(OutMode::F32Add))
      static_cast<float*>(Yv)[idx] += v;
    else if constexpr (MODE == int(OutMode::F32))
      static_cast<float*>(Yv)[idx] = v;
    else
      static_cast<bf16*>(Yv)[idx] = __float2bfloat16(v);
  }
}

void launchMma(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  const dim3 grid((O + 15) / 16), block(32 * kMmaWarps);
  switch (mode) {
    case OutMode::F32Add:
      return launchPdl("skinnyMmaKernel", skinnyMmaKernel<int(OutMode::F32Add)>, grid, block, 0, s, X, T, W, O, K, Y);
    case OutMode::F32:
      return launchPdl("skinnyMmaKernel", skinnyMmaKernel<int(OutMode::F32)>, grid, block, 0, s, X, T, W, O, K, Y);
    case OutMode::SiluPairBf16:
      return launchPdl("skinnyMmaKernel", skinnyMmaKernel<int(OutMode::SiluPairBf16)>, grid, block, 0, s, X, T, W, O, K,
                       Y);
    default:
      return launchPdl("skinnyMmaKernel", skinnyMmaKernel<int(OutMode::Bf16)>, grid, block, 0, s, X, T, W, O, K, Y);
  }
}

}  // namespace

void skinnyGemm(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  if (T < 1 || T > kSkinnyMaxTokens || K % 8 != 0 || (mode == OutMode::SiluPairBf16 && O % 2 != 0))
    throw CudaError("skinnyGemm: T must be in [1, 8], K % 8 == 0, O even for SiluPairBf16 (T=" + std::to_string(T) +
                        ", K=" + std::to_string(K) + ", O=" + std::to_string(O) + ")",
                    false);
  switch (T) {
    case 1: launch<1>(X, W, O, K, Y, mode, s); break;
    case 2:
    case 3:
    case 4: launchMma(X, T, W, O, K, Y, mode, s); break;
    case 5: launch<5>(X, W, O, K, Y, mode, s); break;
    case 6: launch<6>(X, W, O, K, Y, mode, s); break;
    case 7: launch<7>(X, W, O, K, Y, mode, s); break;
    default: launch<8>(X, W, O, K, Y, mode, s); break;
  }
}

}  // namespace ms::cuda
