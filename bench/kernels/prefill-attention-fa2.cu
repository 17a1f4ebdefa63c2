// Prefill attention, variant "fa2" (shipped until 2026-11; now bench only): one block (4 warps, 16
// query rows each) per (64-token tile, query head), Q in registers, single-buffered K and V (the V
// load overlaps Q.K^T, the next K load overlaps P.V), with its head-dim-128 tuning variants. Lost
// to the gqa kernel (attention-prefill.cu: a tile serves the query heads of one KV group): 1 x 8k
// tokens 4.12 vs 1.61 ms, 1 x 4k 1.19 vs 0.52 ms (H100, 8B shape). Here: every variant checked
// against a float64 reference, then timed against the shipped kernel on the 8B shape.
//   build: cmake --build native/build --target microserve_kernel_benches; run: prefill-attention-fa2
#include <array>

#include "common.cuh"
#include "cuda/mma-ptx.h"
#include "cuda/pdl.h"

namespace ms::cuda {
namespace {

constexpr int BM = kPrefillTileRows;  // query rows per block
constexpr int kThreads = 128;
static_assert(BM == 16 * (kThreads / 32), "one warp per 16 query rows");
constexpr float kLog2e = 1.4426950408889634f;

// grid (numTiles, heads), block kThreads; dynamic smem 2 * BN * (D + 8) bf16. BN keys per tile;
// MINB blocks per SM asked of the register allocator.
template <int D, int BN, int MINB>
__global__ void __launch_bounds__(kThreads, MINB) prefillAttentionKernel(PrefillAttentionArgs a) {
  static_assert(2 * BN >= BM, "Q is staged in the K and V buffers");
  constexpr int LD = D + 8;  // padded row: conflict-free ldmatrix
  constexpr int CPR = D / 8; // 16-byte chunks per row
  extern __shared__ __align__(16) unsigned char smRaw[];
  bf16* Ks = reinterpret_cast<bf16*>(smRaw);  // (BN, LD); Ks and Vs hold Q (BM, LD) first
  bf16* Vs = Ks + BN * LD;                    // (BN, LD)
  pdlWait();
  pdlTrigger();

  const PrefillTile tile = a.tiles[a.numTiles - 1 - blockIdx.x];  // longest tiles of a sequence first
  const int h = blockIdx.y, g = h / (a.heads / a.kv.kvHeads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kvDim = a.kv.kvHeads * D;
  const int32_t* pt = a.pageTable + int64_t(tile.seq) * a.ptStride;
  const int keyEnd = tile.posStart + tile.rows;

  // Q tile -> shared -> A fragments (registers) for the whole kernel.
  for (int c = threadIdx.x; c < BM * CPR; c += kThreads) {
    int r = c / CPR, col = (c % CPR) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < tile.rows)
      v = *reinterpret_cast<const uint4*>(a.q + int64_t(tile.tokenStart + r) * a.qStride + h * D + col);
    *reinterpret_cast<uint4*>(Ks + r * LD + col) = v;
  }
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)
    ldmatrixX4(qf[kk], Ks + (warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + kk * 16 + (lane / 16) * 8);
  __syncthreads();

  auto loadTile = [&](bf16* dst, int j0, int64_t vOffset) {
    for (int c = threadIdx.x; c < BN * CPR; c += kThreads) {
      int r = c / CPR, col = (c % CPR) * 8, key = j0 + r;
      const bf16* src = a.kv.base;
      int bytes = 0;
      if (key < keyEnd) {
        src = a.kv.base + int64_t(pt[key / a.kv.pageSize]) * a.kv.pageStride +
              int64_t(key % a.kv.pageSize) * kvDim + g * D + col + vOffset;
        bytes = 16;
      }
      cpAsync16(dst + r * LD + col, src, bytes);
    }
  };
  const int64_t vOffset = int64_t(a.kv.pageSize) * kvDim;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0.f, 0.f};
  const float sl2 = a.scale * kLog2e;
  const int rowPos = tile.posStart + warp * 16 + lane / 4;  // this thread's rows: rowPos, rowPos + 8
  const int numKeyTiles = (keyEnd + BN - 1) / BN;

  loadTile(Ks, 0, 0);
  cpAsyncCommit();
  for (int t = 0; t < numKeyTiles; t++) {
    const int j0 = t * BN;
    loadTile(Vs, j0, vOffset);
    cpAsyncCommit();
    cpAsyncWait<1>();  // K(t) landed
    __syncthreads();

    // S = Q . K^T (16 rows x 64 keys per warp)
    float s[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
      for (int np = 0; np < BN / 16; np++) {
        uint32_t b[4];
        ldmatrixX4(b, Ks + (np * 16 + (lane % 8) + (lane / 16) * 8) * LD + kk * 16 + ((lane / 8) % 2) * 8);
        mma16816(s[2 * np], qf[kk], b[0], b[1]);
        mma16816(s[2 * np + 1], qf[kk], b[2], b[3]);
      }

    // Scale to log2 units, mask keys after each row's position, online softmax.
    const bool mask = j0 + BN - 1 > tile.posStart;
    float mx[2] = {-FLT_MAX, -FLT_MAX};
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float v = s[nt][e] * sl2;
        if (mask && j0 + nt * 8 + (lane % 4) * 2 + (e & 1) > rowPos + (e >> 1) * 8) v = -INFINITY;
        s[nt][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
    float alpha[2], ref[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      float mNew = fmaxf(m[r], mx[r]);
      ref[r] = mNew == -INFINITY ? 0.f : mNew;  // a row with every key masked so far
      alpha[r] = exp2f(m[r] - ref[r]);
      m[r] = mNew;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float p = exp2f(s[nt][e] - ref[e >> 1]);
        s[nt][e] = p;
        l[e >> 1] += p;
      }
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      o[i][0] *= alpha[0];
      o[i][1] *= alpha[0];
      o[i][2] *= alpha[1];
      o[i][3] *= alpha[1];
    }

    cpAsyncWait<0>();  // V(t) landed
    __syncthreads();   // and every warp is done with K(t)
    if (t + 1 < numKeyTiles) {
      loadTile(Ks, j0 + BN, 0);
      cpAsyncCommit();
    }

    // O += P . V
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      uint32_t pa[4] = {packBf16(s[2 * kk][0], s[2 * kk][1]), packBf16(s[2 * kk][2], s[2 * kk][3]),
                        packBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), packBf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t b[4];
        ldmatrixX4Trans(b, Vs + (kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + dp * 16 + (lane / 16) * 8);
        mma16816(o[2 * dp], pa, b[0], b[1]);
        mma16816(o[2 * dp + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // V(t) consumed before the next V load
  }

  // Normalise and store the valid rows.
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const int r0 = warp * 16 + lane / 4;
#pragma unroll
  for (int r = 0; r < 2; r++) {
    int row = r0 + r * 8;
    if (row >= tile.rows) continue;
    float inv = 1.f / l[r];
    bf16* dst = a.out + int64_t(tile.tokenStart + row) * a.outStride + h * D + (lane % 4) * 2;
#pragma unroll
    for (int i = 0; i < D / 8; i++)
      *reinterpret_cast<__nv_bfloat162*>(dst + i * 8) = __floats2bfloat162_rn(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
  }
}

template <int D, int BN, int MINB>
void launchPrefill(const PrefillAttentionArgs& a, cudaStream_t s) {
  size_t smem = size_t(2) * BN * (D + 8) * sizeof(bf16);
  launchPdl("prefillAttentionKernel", prefillAttentionKernel<D, BN, MINB>, dim3(a.numTiles, a.heads), dim3(kThreads),
            smem, s, a);
}

// Variants of the head-dim-128 kernel (keys per tile x blocks per SM): 64x3 (its default), 64x2,
// 32x3, 32x4.
void launchPrefill128(const PrefillAttentionArgs& a, const std::string& var, cudaStream_t s) {
  if (var == "64x2")
    launchPrefill<128, 64, 2>(a, s);
  else if (var == "32x3")
    launchPrefill<128, 32, 3>(a, s);
  else if (var == "32x4")
    launchPrefill<128, 32, 4>(a, s);
  else
    launchPrefill<128, 64, 3>(a, s);
}

}  // namespace

// The fa2 kernel; var picks the head-dim-128 variant ("64x3" is what shipped).
void prefillAttentionFa2(const PrefillAttentionArgs& a, const std::string& var, cudaStream_t s) {
  if (a.numTiles == 0) return;
  switch (a.kv.headDim) {
    case 16: launchPrefill<16, 64, 2>(a, s); break;
    case 32: launchPrefill<32, 64, 2>(a, s); break;
    case 64: launchPrefill<64, 64, 2>(a, s); break;
    case 128: launchPrefill128(a, var, s); break;
    default: throw CudaError("prefillAttentionFa2: unsupported head dim " + std::to_string(a.kv.headDim), false);
  }
}

}  // namespace ms::cuda

using namespace ms::cuda;

int main() {
  try {
    const char* variants[] = {"64x3", "64x2", "32x3", "32x4"};
    // A prompt of 150 tokens after a 37-token prefix, and head dims the kernel is built for.
    for (auto [heads, kvHeads, D, page] : {std::array<int, 4>{8, 2, 128, 16}, {4, 2, 64, 7}, {4, 4, 32, 5}}) {
      bench::PagedProblem p(2, 187, 150, heads, kvHeads, D, page);
      bench::PrefillTiles t(p);
      const auto ref = p.reference();
      const std::string tag = " D=" + std::to_string(D) + " rep=" + std::to_string(heads / kvHeads) + " page=" + std::to_string(page);
      for (const char* v : variants) {
        if (D != 128 && v != variants[0]) continue;
        prefillAttentionFa2(t.a, v, 0);
        bench::check(std::string("fa2 ") + v + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
      }
      prefillAttention(t.a, 0);
      bench::check("shipped (gqa)" + tag, bench::downloadBf16(p.dOut, ref.size()), ref, 2e-2);
    }
    for (int len : {4096, 8192}) {
      bench::PagedProblem p(1, len, len, 32, 8, 128, 16);
      bench::PrefillTiles t(p);
      std::printf("8B shape, 1 x %d tokens:", len);
      for (const char* v : variants) std::printf(" fa2 %s %.3f ms;", v, bench::timeMs([&] { prefillAttentionFa2(t.a, v, 0); }, 2, 5));
      std::printf(" shipped %.3f ms\n", bench::timeMs([&] { prefillAttention(t.a, 0); }, 2, 5));
    }
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("prefill-attention-fa2: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
