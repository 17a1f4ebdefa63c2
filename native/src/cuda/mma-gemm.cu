// Y (T, O) = X (T, K) . W (O, K)^T for decode batches of 9..64 tokens on the tensor cores, one
// pass over W at memory speed (the skinny kernel's ideas with mma.sync m16n8k16 bf16 -> f32).
//
// Operands: W is the mma A operand (16 output rows per m-tile), X the B operand (8 tokens per
// n-tile; T padded to 16, 32 or 64). Since a dot product may sum its K terms in any order, each
// lane (g = lane / 4, c = lane % 4) takes 16 consecutive K elements of a 64-wide chunk
// (k0 + 16c .. + 15) as its fragment K indices for the chunk's four k-steps, in both operands:
// so W goes from global memory straight into A fragments with two 16-byte `__ldcs` per row (no
// shared-memory round trip), and X fragments are 16-byte shared loads. Fragment rows g and g + 8
// are W rows 2g and 2g + 1 of the m-tile: a gate/up pair (SiluPairBf16) lands in one lane, and
// the two rows of every other mode make one 8-byte output pair.
//
// Work split: a block of kWarps warps owns kWarps * 16 rows and one K slice; the grid's x holds
// the slices of a row block as one thread-block cluster of S blocks (S = 1..8, chosen per shape
// so that the clusters fill the SMs in as few waves as possible). A block streams its W rows in
// stages of kStageChunks chunks: the next stage's W loads are in flight (registers) while the
// current stage computes, and the first stage's loads go out before the PDL wait (weights depend
// on no earlier kernel). X comes through a ring of kStages shared-memory stages (cp.async, zero
// filled past T and past the slice). The S partial products meet in shared memory: each block
// writes its f32 partials there, one cluster barrier, then each block sums a 1/S share of the
// outputs over the S blocks in rank order (distributed shared memory: deterministic, no
// workspace, no counters) and applies the output mode.
//
// Measured on the H200 (bench/results/engine-gpu.md): faster than cuBLASLt alone at T = 16-32 on
// qkv, o and down (5-20%), even on gate_up while fusing silu_mul; 25-40% slower at T = 64, where
// the start-time choice keeps cuBLASLt. A version with W through a per-warp cp.async ring in
// shared memory ran half as fast and is not kept.
#include <cooperative_groups.h>

#include <string>

#include "check.h"
#include "kernels.h"
#include "mma-ptx.h"
#include "pdl.h"

namespace ms::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kWarps = 8;                       // per block, one m-tile of 16 rows each
constexpr int kBlockRows = 16 * kWarps;         // W rows per block
constexpr int kStageChunks = 2;                 // 64-wide K chunks per stage
constexpr int kStageCols = 64 * kStageChunks;   // K columns per stage
constexpr int kXStride = kStageCols + 8;        // bf16 per X row in shared memory (+16 B: no bank conflicts)
constexpr int kStages = 3;                      // X ring
constexpr int kPartStride = kBlockRows + 4;     // f32 per token row of the partials
constexpr int kMaxSplits = 8;                   // portable cluster size

template <int NT>
constexpr size_t smemBytes() {
  constexpr size_t ring = size_t(kStages) * NT * 8 * kXStride * 2, part = size_t(NT) * 8 * kPartStride * 4;
  return ring > part ? ring : part;
}

// One lane's W fragment data of one chunk: rows 2g and 2g + 1 of its m-tile, 16 K elements each.
struct WChunk {
  uint4 a[2], b[2];
};

__device__ __forceinline__ uint4 ldW(const bf16* row, int k, int kEnd) {
  return k < kEnd ? __ldcs(reinterpret_cast<const uint4*>(row + k)) : make_uint4(0, 0, 0, 0);
}

__device__ __forceinline__ void loadChunk(WChunk& w, const bf16* rowA, const bf16* rowB, int k, int kEnd) {
  w.a[0] = ldW(rowA, k, kEnd);
  w.a[1] = ldW(rowA, k + 8, kEnd);
  w.b[0] = ldW(rowB, k, kEnd);
  w.b[1] = ldW(rowB, k + 8, kEnd);
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// acc[j] += W chunk (16 rows) . X chunk (8 tokens of n-tile j), xs at the chunk's first column.
template <int NT>
__device__ __forceinline__ void mmaChunk(float (&acc)[NT][4], const WChunk& w, const bf16* xs, int g, int c) {
#pragma unroll
  for (int h = 0; h < 2; h++) {  // elements 8h .. 8h + 7 of the lane's 16: k-steps 2h, 2h + 1
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xs + (8 * j + g) * kXStride + 16 * c + 8 * h);
#pragma unroll
      for (int s = 0; s < 2; s++) {
        const uint32_t a[4] = {word(w.a[h], 2 * s), word(w.b[h], 2 * s), word(w.a[h], 2 * s + 1),
                               word(w.b[h], 2 * s + 1)};
        mma16816(acc[j], a, word(xv, 2 * s), word(xv, 2 * s + 1));
      }
    }
  }
}

// Columns [k, k + kStageCols) of X's first NT * 8 rows into one ring stage; zeros past T and kEnd.
template <int NT>
__device__ __forceinline__ void loadXStage(bf16* dst, const bf16* X, int T, int K, int k, int kEnd) {
  constexpr int kPieces = NT * 8 * (kStageCols / 8);  // 16-byte pieces
#pragma unroll
  for (int p = threadIdx.x; p < kPieces; p += 32 * kWarps) {
    const int t = p / (kStageCols / 8), col = (p % (kStageCols / 8)) * 8;
    const bool isIn = t < T && k + col < kEnd;
    cpAsync16(dst + t * kXStride + col, isIn ? X + int64_t(t) * K + k + col : X, isIn ? 16 : 0);
  }
}

// grid (numRowBlocks * S), cluster (S), block 32 * kWarps, dynamic smem smemBytes<NT>()
template <int NT, int MODE>
__global__ void __launch_bounds__(32 * kWarps, 2)
    mmaGemmKernel(const bf16* __restrict__ X, int T, const bf16* __restrict__ W, int O, int K, void* __restrict__ Yv) {
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* xRing = reinterpret_cast<bf16*>(smem);
  float* part = reinterpret_cast<float*>(smem);  // (NT * 8, kPartStride) after the main loop
  cg::cluster_group cluster = cg::this_cluster();
  const int S = int(cluster.num_blocks()), split = int(cluster.block_rank());
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int blockRow0 = (blockIdx.x / S) * kBlockRows;
  const int rowA = blockRow0 + 16 * warp + 2 * g;  // fragment row g; row g + 8 is rowA + 1
  const bf16* wA = W + int64_t(min(rowA, O - 1)) * K;
  const bf16* wB = W + int64_t(min(rowA + 1, O - 1)) * K;
  // This block's K slice: chunks [chunk0, chunk1) of 64 columns.
  const int numChunks = (K + 63) / 64;
  const int chunk0 = split * numChunks / S, chunk1 = (split + 1) * numChunks / S;
  const int kBegin = 64 * chunk0, kEnd = min(64 * chunk1, K);
  const int numStages = (chunk1 - chunk0 + kStageChunks - 1) / kStageChunks;

  WChunk w[kStageChunks];
#pragma unroll
  for (int d = 0; d < kStageChunks; d++) loadChunk(w[d], wA, wB, kBegin + 64 * d + 16 * c, kEnd);
  pdlWait();  // X (and Y when accumulating) come from the previous kernel
  pdlTrigger();
#pragma unroll
  for (int i = 0; i < kStages - 1; i++) {
    if (i < numStages) loadXStage<NT>(xRing + i * NT * 8 * kXStride, X, T, K, kBegin + i * kStageCols, kEnd);
    cpAsyncCommit();
  }

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  for (int st = 0; st < numStages; st++) {
    cpAsyncWait<kStages - 2>();  // stage st has landed (this thread's part) ...
    __syncthreads();             // ... everyone's; and stage st - 1's buffer is free
    const int next = st + kStages - 1;
    if (next < numStages)
      loadXStage<NT>(xRing + (next % kStages) * NT * 8 * kXStride, X, T, K, kBegin + next * kStageCols, kEnd);
    cpAsyncCommit();
    const bf16* xs = xRing + (st % kStages) * NT * 8 * kXStride;
    const int kNext = kBegin + (st + 1) * kStageCols + 16 * c;
#pragma unroll
    for (int d = 0; d < kStageChunks; d++) {
      mmaChunk<NT>(acc, w[d], xs + 64 * d, g, c);
      loadChunk(w[d], wA, wB, kNext + 64 * d, kEnd);  // the next stage's chunk d (zeros past the slice)
    }
  }
  cpAsyncWait<0>();
  __syncthreads();  // the ring is free: partials go there

  // acc[j]: (rowA, token 8j + 2c), (rowA, 8j + 2c + 1), (rowA + 1, 8j + 2c), (rowA + 1, 8j + 2c + 1).
  const int m = 16 * warp + 2 * g;
#pragma unroll
  for (int j = 0; j < NT; j++) {
    const int t = 8 * j + 2 * c;
    *reinterpret_cast<float2*>(part + t * kPartStride + m) = make_float2(acc[j][0], acc[j][2]);
    *reinterpret_cast<float2*>(part + (t + 1) * kPartStride + m) = make_float2(acc[j][1], acc[j][3]);
  }
  cluster.sync();  // every block's partials written (release) and visible (acquire)

  // This block's share of the outputs (pairs of rows m, m + 1 of token t), summed over the
  // cluster's blocks in rank order.
  constexpr int kPairs = kBlockRows / 2;
  const int numPairs = T * kPairs, from = split * numPairs / S, to = (split + 1) * numPairs / S;
  for (int e = from + threadIdx.x; e < to; e += 32 * kWarps) {
    const int t = e / kPairs, pm = 2 * (e % kPairs), row = blockRow0 + pm;
    float2 v = make_float2(0.f, 0.f);
    for (int r = 0; r < S; r++) {
      const float2 p = *cluster.map_shared_rank(reinterpret_cast<float2*>(part + t * kPartStride + pm), r);
      v.x += p.x, v.y += p.y;
    }
    if (row >= O) continue;
    if constexpr (MODE == int(OutMode::SiluPairBf16)) {
      // Rows row (gate) and row + 1 (up) make output (t, row / 2) of a (T, O / 2) matrix.
      const float gt = __bfloat162float(__float2bfloat16(v.x)), up = __bfloat162float(__float2bfloat16(v.y));
      static_cast<bf16*>(Yv)[int64_t(t) * (O / 2) + row / 2] = __float2bfloat16(gt / (1.f + __expf(-gt)) * up);
    } else {
      const int64_t idx = int64_t(t) * O + row;
      const bool isPair = row + 1 < O;
      if constexpr (MODE == int(OutMode::Bf16)) {
        bf16* y = static_cast<bf16*>(Yv) + idx;
        if (isPair && (idx & 1) == 0) {
          *reinterpret_cast<__nv_bfloat162*>(y) = __floats2bfloat162_rn(v.x, v.y);
        } else {
          y[0] = __float2bfloat16(v.x);
          if (isPair) y[1] = __float2bfloat16(v.y);
        }
      } else {
        float* y = static_cast<float*>(Yv) + idx;
        if constexpr (MODE == int(OutMode::F32Add)) {
          y[0] += v.x;
          if (isPair) y[1] += v.y;
        } else {
          y[0] = v.x;
          if (isPair) y[1] = v.y;
        }
      }
    }
  }
  cluster.sync();  // no block leaves while another still reads its partials
}

// The number of K slices (cluster size) for a product: the fewest waves of clusters times the
// chunks per slice, ties to fewer slices (fewer partials). maxClusters[S - 1]: clusters of S
// blocks the device holds at once (cudaOccupancyMaxActiveClusters, 0 where none fits).
int pickSplits(int numRowBlocks, int numChunks, const int (&maxClusters)[kMaxSplits]) {
  int best = 1;
  int64_t bestCost = -1;
  for (int S = 1; S <= kMaxSplits && S <= numChunks; S++) {
    if (maxClusters[S - 1] <= 0) continue;
    const int64_t waves = (numRowBlocks + maxClusters[S - 1] - 1) / maxClusters[S - 1];
    const int64_t cost = waves * ((numChunks + S - 1) / S);
    if (bestCost < 0 || cost < bestCost) best = S, bestCost = cost;
  }
  return best;
}

template <int NT, int MODE>
struct Variant {
  static inline bool isReady = false;
  static inline int maxClusters[kMaxSplits] = {};

  // Once per process (device): the shared-memory limit and the cluster occupancy per size.
  static void prepare() {
    if (isReady) return;
    auto kernel = mmaGemmKernel<NT, MODE>;
    MS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smemBytes<NT>())));
    for (int S = 1; S <= kMaxSplits; S++) {
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(S * 64);
      cfg.blockDim = dim3(32 * kWarps);
      cfg.dynamicSmemBytes = smemBytes<NT>();
      cudaLaunchAttribute attr;
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = unsigned(S);
      attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      int n = 0;
      if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
        cudaGetLastError();  // a size the device cannot hold: not a candidate
        n = 0;
      }
      maxClusters[S - 1] = n;
    }
    if (maxClusters[0] <= 0) throw CudaError("mmaGemm: the kernel fits no SM", false);
    isReady = true;
  }

  static void launch(const bf16* X, int T, const bf16* W, int O, int K, void* Y, cudaStream_t s) {
    prepare();
    const int numRowBlocks = (O + kBlockRows - 1) / kBlockRows, numChunks = (K + 63) / 64;
    const int S = pickSplits(numRowBlocks, numChunks, maxClusters);
    launchPdlCluster("mmaGemmKernel", mmaGemmKernel<NT, MODE>, dim3(numRowBlocks * S), dim3(32 * kWarps),
                     smemBytes<NT>(), s, S, X, T, W, O, K, Y);
  }
};

template <int NT>
void launchModes(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  switch (mode) {
    case OutMode::Bf16: return Variant<NT, int(OutMode::Bf16)>::launch(X, T, W, O, K, Y, s);
    case OutMode::F32: return Variant<NT, int(OutMode::F32)>::launch(X, T, W, O, K, Y, s);
    case OutMode::F32Add: return Variant<NT, int(OutMode::F32Add)>::launch(X, T, W, O, K, Y, s);
    case OutMode::SiluPairBf16: return Variant<NT, int(OutMode::SiluPairBf16)>::launch(X, T, W, O, K, Y, s);
  }
}

}  // namespace

void mmaGemm(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  if (T < 1 || T > kMmaMaxTokens || O < 1 || K < 8 || K % 8 != 0 || (mode == OutMode::SiluPairBf16 && O % 2 != 0))
    throw CudaError("mmaGemm: T must be in [1, " + std::to_string(kMmaMaxTokens) +
                        "], K >= 8 and K % 8 == 0, O even for SiluPairBf16 (T=" + std::to_string(T) +
                        ", K=" + std::to_string(K) + ", O=" + std::to_string(O) + ")",
                    false);
  if (T <= 16)
    launchModes<2>(X, T, W, O, K, Y, mode, s);
  else if (T <= 32)
    launchModes<4>(X, T, W, O, K, Y, mode, s);
  else
    launchModes<8>(X, T, W, O, K, Y, mode, s);
}

}  // namespace ms::cuda
