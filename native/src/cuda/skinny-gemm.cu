// Y (T, O) = X (T, K) . W (O, K)^T for few tokens: a streaming pass over W at memory speed.
// Decode steps at small batch are weight-bound. Each warp owns R output rows (2, or 1 for long
// rows at T = 1); lanes stride over K in 16-byte chunks; W is software-pipelined through two
// register sets of U chunks per row, so 2 * U * R loads per lane are in flight. The first set is
// loaded before the PDL wait: weights depend on no earlier kernel, so streaming starts while the
// previous kernel drains.
#include <string>

#include "bf16-vec.h"
#include "check.h"
#include "kernels.h"
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

// T <= 2: 3 chunks per set, 2 rows per warp and 6 blocks per SM (a ~800-block product runs in one
// wave). T = 1 with long rows (K >= 8192: the down projection) and no gate/up pairs: 1 row per
// warp, 4 chunks per set, 8 blocks per SM, so 4096 rows fill every SM's slots in one wave (measured
// on an H100 at the 8B shape: 43 us instead of 50 alone, 0.04-0.05 ms less per decode step). The
// shapes that lost (the first shape everywhere; 4 chunks per set at the registers' occupancy) cost
// 0.03-0.08 ms per 8B decode step (bench/results/engine-gpu.md); their switch is gone.
template <int T>
void launch(const bf16* X, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  if constexpr (T <= 2) {
    if constexpr (T == 1)
      if (K >= 8192 && mode != OutMode::SiluPairBf16) return launchVariant<T, 4, 8, 1>(X, W, O, K, Y, mode, s);
    launchVariant<T, 3, 6, 2>(X, W, O, K, Y, mode, s);
  } else {
    launchVariant<T, 2, 1, 2>(X, W, O, K, Y, mode, s);
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
    case 2: launch<2>(X, W, O, K, Y, mode, s); break;
    case 3: launch<3>(X, W, O, K, Y, mode, s); break;
    case 4: launch<4>(X, W, O, K, Y, mode, s); break;
    case 5: launch<5>(X, W, O, K, Y, mode, s); break;
    case 6: launch<6>(X, W, O, K, Y, mode, s); break;
    case 7: launch<7>(X, W, O, K, Y, mode, s); break;
    default: launch<8>(X, W, O, K, Y, mode, s); break;
  }
}

}  // namespace ms::cuda
