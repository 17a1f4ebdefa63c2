// Y (T, O) = X (T, K) . W (O, K)^T for few tokens: a streaming pass over W at memory speed.
// Decode steps at small batch are weight-bound. Each warp owns R output rows (2, or 1 for long
// rows at T = 1); lanes stride over K in 16-byte chunks; W is software-pipelined through two
// register sets of U chunks per row, so 2 * U * R loads per lane are in flight. The first set is
// loaded before the PDL wait: weights depend on no earlier kernel, so streaming starts while the
// previous kernel drains.
//
// With the norm fused (skinnyGemmNormed) X is the residual stream's f32 rows and each block first
// normalises them into shared memory exactly as rmsNormKernel does (row-norm.cuh), which saves the
// norm's launch before qkv and gate/up. Every block pays that prologue, so those launches are
// persistent: one wave of blocks, each taking row groups in turn.
#include <algorithm>
#include <string>

#include "bf16-vec.h"
#include "check.h"
#include "kernels.h"
#include "pdl.h"
#include "row-norm.cuh"

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

// X from global memory (shared by all warps: cached) or, normalised, from shared memory (SMEM).
template <int T, int U, int R, bool SMEM>
__device__ __forceinline__ void accumulate(float (&acc)[R][T], const uint4 (&wr)[U][R], const uint4* x, int base,
                                           int lane, int chunks) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    int c = base + u * 32 + lane;
    if (c >= chunks) break;
    uint4 xr[T];
#pragma unroll
    for (int t = 0; t < T; t++) xr[t] = SMEM ? x[t * chunks + c] : __ldg(x + int64_t(t) * chunks + c);
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

// The T rows of x (f32, K each) normalised into xs (bf16) as rmsNormKernel does it: this block's
// 32 * kWarps threads play its norm::kNormThreads, thread i as i and i + 32 * kWarps, so every sum
// is taken in the same order and the rows are the same, bit for bit. x is read through L2 only
// (__ldcg): under PDL this kernel was resident while the previous one wrote it.
template <int T>
__device__ void normRows(const float* __restrict__ x, const float* __restrict__ nw, int K, float eps, uint4* xs) {
  constexpr int kThreads = 32 * kWarps;
  static_assert(2 * kThreads == norm::kNormThreads, "each thread plays two of rmsNormKernel's");
  __shared__ float part[T][norm::kNormThreads / 32];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int n4 = K / 4, vpt = (n4 + norm::kNormThreads - 1) / norm::kNormThreads;
  for (int t = 0; t < T; t++) {
    const float4* xr = reinterpret_cast<const float4*>(x + int64_t(t) * K);
    float ss[2] = {0.f, 0.f};
    for (int k = 0; k < vpt; k++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int i = tid + h * kThreads + k * norm::kNormThreads;
        ss[h] += norm::squares(i < n4 ? __ldcg(xr + i) : make_float4(0.f, 0.f, 0.f, 0.f));
      }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float v = norm::warpSum(ss[h]);
      if (lane == 0) part[t][warp + h * kWarps] = v;
    }
  }
  __syncthreads();
  const float4* w4 = reinterpret_cast<const float4*>(nw);
  for (int t = 0; t < T; t++) {
    const float r = norm::invRms(norm::sumParts(part[t]), K, eps);
    const float4* xr = reinterpret_cast<const float4*>(x + int64_t(t) * K);
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(xs) + t * (K / 2);
    for (int i = tid; i < n4; i += kThreads) norm::scale4(__ldcg(xr + i), __ldg(w4 + i), r, o + 2 * i);
  }
  __syncthreads();
}

template <int R>
__device__ __forceinline__ void rowPointers(const uint4* (&w)[R], const bf16* W, int row0, int O, int K) {
#pragma unroll
  for (int r = 0; r < R; r++) w[r] = reinterpret_cast<const uint4*>(W + int64_t(min(row0 + r, O - 1)) * K);
}

// Row groups of kWarps * R rows; block 32 * kWarps. Without NORM: grid = the groups, one each;
// with NORM: grid <= the groups, each block normalises X into shared memory (T * K bf16) and then
// takes groups blockIdx.x, + gridDim.x, ...
template <int T, int MODE, int U, int MINB, int R, bool NORM>
__global__ void __launch_bounds__(32 * kWarps, MINB)
    skinnyGemmKernel(const bf16* __restrict__ X, const float* __restrict__ normX, const float* __restrict__ normW,
                     float eps, const bf16* __restrict__ W, int O, int K, void* __restrict__ Yv) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int groups = (O + kWarps * R - 1) / (kWarps * R);
  const int chunks = K / 8;
  int g = blockIdx.x;
  const uint4* w[R];
  rowPointers<R>(w, W, (g * kWarps + warp) * R, O, K);  // rows past O (last group) clamp

  uint4 wa[U][R], wb[U][R];
  loadW<U, R>(wa, w, 0, lane, chunks);
  pdlWait();  // X (and Y when accumulating) come from the previous kernel
  pdlTrigger();
  const uint4* x = reinterpret_cast<const uint4*>(X);
  if constexpr (NORM) {
    extern __shared__ uint4 xs[];
    normRows<T>(normX, normW, K, eps, xs);
    x = xs;
  }

  for (;;) {
    const int row0 = (g * kWarps + warp) * R;
    float acc[R][T];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int t = 0; t < T; t++) acc[r][t] = 0.f;
    for (int base = 0; base < chunks; base += 64 * U) {
      loadW<U, R>(wb, w, base + 32 * U, lane, chunks);
      accumulate<T, U, R, NORM>(acc, wa, x, base, lane, chunks);
      loadW<U, R>(wa, w, base + 64 * U, lane, chunks);
      accumulate<T, U, R, NORM>(acc, wb, x, base + 32 * U, lane, chunks);
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
    if constexpr (!NORM) break;
    g += gridDim.x;
    if (g >= groups) break;
    rowPointers<R>(w, W, (g * kWarps + warp) * R, O, K);
    loadW<U, R>(wa, w, 0, lane, chunks);
  }
}

// Blocks of Kernel the device holds at once with the largest prologue (kSkinnyNormBytes of
// shared memory): the grid of a persistent launch.
template <auto Kernel>
int residentBlocks() {
  static const int n = [] {
    int perSm = 0, dev = 0, sms = 0;
    MS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, Kernel, 32 * kWarps, kSkinnyNormBytes));
    MS_CUDA_CHECK(cudaGetDevice(&dev));
    MS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return std::max(1, perSm * sms);
  }();
  return n;
}

struct NormIn {
  const float* x = nullptr;
  const float* w = nullptr;
  float eps = 0.f;
};

template <auto Kernel, int T, int R, bool NORM>
void launchKernel(const bf16* X, const NormIn& n, const bf16* W, int O, int K, void* Y, cudaStream_t s) {
  const int groups = (O + kWarps * R - 1) / (kWarps * R);
  int grid = groups;
  size_t smem = 0;
  if constexpr (NORM) {
    grid = std::min(groups, residentBlocks<Kernel>());
    smem = size_t(T) * K * sizeof(bf16);
  }
  launchPdl("skinnyGemmKernel", Kernel, dim3(grid), dim3(32 * kWarps), smem, s, X, n.x, n.w, n.eps, W, O, K, Y);
}

template <int T, int U, int MINB, int R, bool NORM>
void launchVariant(const bf16* X, const NormIn& n, const bf16* W, int O, int K, void* Y, OutMode mode,
                   cudaStream_t s) {
  switch (mode) {
    case OutMode::F32Add:
      return launchKernel<skinnyGemmKernel<T, int(OutMode::F32Add), U, MINB, R, NORM>, T, R, NORM>(X, n, W, O, K, Y, s);
    case OutMode::F32:
      return launchKernel<skinnyGemmKernel<T, int(OutMode::F32), U, MINB, R, NORM>, T, R, NORM>(X, n, W, O, K, Y, s);
    case OutMode::SiluPairBf16:
      if constexpr (R == 2)
        return launchKernel<skinnyGemmKernel<T, int(OutMode::SiluPairBf16), U, MINB, R, NORM>, T, R, NORM>(X, n, W, O,
                                                                                                         K, Y, s);
      else
        throw CudaError("skinnyGemm: gate/up pairs need two rows per warp", false);
    default:
      return launchKernel<skinnyGemmKernel<T, int(OutMode::Bf16), U, MINB, R, NORM>, T, R, NORM>(X, n, W, O, K, Y, s);
  }
}

// T <= 2: 3 chunks per set, 2 rows per warp and 6 blocks per SM (a ~800-block product runs in one
// wave). T = 1 with long rows (K >= 8192: the down projection) and no gate/up pairs: 1 row per
// warp, 4 chunks per set, 8 blocks per SM, so 4096 rows fill every SM's slots in one wave (measured
// on an H100 at the 8B shape: 43 us instead of 50 alone, 0.04-0.05 ms less per decode step). The
// shapes that lost (the first shape everywhere; 4 chunks per set at the registers' occupancy) cost
// 0.03-0.08 ms per 8B decode step (bench/results/engine-gpu.md); their switch is gone.
template <int T, bool NORM>
void launch(const bf16* X, const NormIn& n, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  if constexpr (T <= 2) {
    if constexpr (T == 1)
      if (K >= 8192 && mode != OutMode::SiluPairBf16) return launchVariant<T, 4, 8, 1, NORM>(X, n, W, O, K, Y, mode, s);
    launchVariant<T, 3, 6, 2, NORM>(X, n, W, O, K, Y, mode, s);
  } else {
    launchVariant<T, 2, 1, 2, NORM>(X, n, W, O, K, Y, mode, s);
  }
}

template <bool NORM>
void dispatch(const bf16* X, const NormIn& n, int T, const bf16* W, int O, int K, void* Y, OutMode mode,
              cudaStream_t s) {
  switch (T) {
    case 1: return launch<1, NORM>(X, n, W, O, K, Y, mode, s);
    case 2: return launch<2, NORM>(X, n, W, O, K, Y, mode, s);
    case 3: return launch<3, NORM>(X, n, W, O, K, Y, mode, s);
    case 4: return launch<4, NORM>(X, n, W, O, K, Y, mode, s);
    case 5: return launch<5, NORM>(X, n, W, O, K, Y, mode, s);
    case 6: return launch<6, NORM>(X, n, W, O, K, Y, mode, s);
    case 7: return launch<7, NORM>(X, n, W, O, K, Y, mode, s);
    default: return launch<8, NORM>(X, n, W, O, K, Y, mode, s);
  }
}

void checkShape(int T, int O, int K, OutMode mode) {
  if (T < 1 || T > kSkinnyMaxTokens || K % 8 != 0 || (mode == OutMode::SiluPairBf16 && O % 2 != 0))
    throw CudaError("skinnyGemm: T must be in [1, 8], K % 8 == 0, O even for SiluPairBf16 (T=" + std::to_string(T) +
                        ", K=" + std::to_string(K) + ", O=" + std::to_string(O) + ")",
                    false);
}

}  // namespace

void skinnyGemm(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  checkShape(T, O, K, mode);
  dispatch<false>(X, NormIn{}, T, W, O, K, Y, mode, s);
}

bool skinnyNormFits(int T, int K) {
  return T >= 1 && T <= kSkinnyMaxTokens && K % 8 == 0 && size_t(T) * K * sizeof(bf16) <= kSkinnyNormBytes;
}

void skinnyGemmNormed(const float* x, const float* normW, float eps, int T, const bf16* W, int O, int K, void* Y,
                      OutMode mode, cudaStream_t s) {
  checkShape(T, O, K, mode);
  if (!skinnyNormFits(T, K))
    throw CudaError("skinnyGemmNormed: T * K bf16 must fit " + std::to_string(kSkinnyNormBytes) +
                        " bytes of shared memory (T=" + std::to_string(T) + ", K=" + std::to_string(K) + ")",
                    false);
  dispatch<true>(nullptr, NormIn{x, normW, eps}, T, W, O, K, Y, mode, s);
}

}  // namespace ms::cuda
