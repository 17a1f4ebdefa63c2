// Kernel launchers of the CUDA backend (sm_90). Each launcher pairs with one kernel in a .cu file
// of this folder, checks its launch, and runs on the given stream. None needs cuBLASLt, so these
// files also compile (and are compile-checked in CI) where only nvcc and cudart exist.
//
// Conventions: activations are row-major (tokens, features); weights are Hugging Face [out, in]
// row-major bf16; the residual stream is f32; KV is bf16 in pages.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ms::cuda {

using bf16 = __nv_bfloat16;

// Head dims the attention kernels are built for.
inline bool isSupportedHeadDim(int d) { return d == 16 || d == 32 || d == 64 || d == 128; }
// Query heads per KV head (GQA group) the attention kernels serve: 1 to kMaxGqa. The decode kernel
// puts a group's heads in the first 8 rows of one 16-row mma tile (rows past the group are zero),
// so any group up to 8 runs the same code; the prefill kernel takes any group (1, 2 or 4 heads
// per block by the group's divisibility).
constexpr int kMaxGqa = 8;
inline bool isSupportedGqa(int rep) { return rep >= 1 && rep <= kMaxGqa; }

// One layer of the paged KV pool. Pool layout = wire layout (backend.h):
//   (numPages, layers, 2 [K, V], pageSize, kvHeads, headDim) bf16
// so K of (page, slot, head) is at base + page * pageStride + slot * kvDim + head * headDim and
// V at the same place + pageSize * kvDim, with base = pool + layer * 2 * pageSize * kvDim.
struct KvLayer {
  bf16* base = nullptr;
  int64_t pageStride = 0;  // elements from one page to the next
  int pageSize = 0;
  int kvHeads = 0;
  int headDim = 0;
  int numPages = 0;  // pages in the pool: bounds the prefill kernel's tensor copies (0: unbounded)
};

// log2 of the page size where it is a power of two, else -1; with it, pageOf(key) = the page
// holding key (its slot: key - page * pageSize) by a shift instead of a division.
__host__ __device__ inline int pageShift(int pageSize) {
  int s = 0;
  while (s < 30 && (1 << s) < pageSize) s++;
  return (1 << s) == pageSize ? s : -1;
}
__host__ __device__ inline int pageOf(int key, int pageSize, int shift) {
  return shift >= 0 ? key >> shift : key / pageSize;
}

// Per-token batch metadata on the device (see forward-plan.h for how it is packed).
struct TokenMeta {
  const int32_t* pos = nullptr;        // (numTokens,) absolute position
  const int32_t* seqOf = nullptr;      // (numTokens,) sequence index
  const int32_t* pageTable = nullptr;  // (numSeqs, ptStride) page ids
  int ptStride = 0;
  int numTokens = 0;
};

// x[t, :] = f32(table[tokens[t], :]).   table: (vocab, hidden) bf16; x: (n, hidden) f32
void embedGather(const int32_t* tokens, int n, const bf16* table, int hidden, float* x, cudaStream_t s);

// out[r, :] = bf16(x[row, :] * rsqrt(mean(x[row, :]^2) + eps) * w), row = rows ? rows[r] : r.
// x: (*, hidden) f32; w: (hidden,) f32; out: (n, hidden) bf16. hidden % 4 == 0, <= 16384.
void rmsNorm(const float* x, const int32_t* rows, int n, int hidden, const float* w, float eps, bf16* out,
             cudaStream_t s);

// The family steps between the q/k/v product and RoPE, in place on each token's q|k|v row:
// adds bias (Qwen2; null: none) to every head, then RMSNorms each q head with qNorm and each k
// head with kNorm (Qwen3; null: none) in f32, rounding once to bf16. No launch when both are null.
// qkv: (n, (heads + 2 * kvHeads) * headDim) bf16; bias: (that row,) f32; qNorm, kNorm: (headDim,) f32
void qkvBiasNorm(bf16* qkv, int n, int heads, int kvHeads, int headDim, const float* bias, const float* qNorm,
                 const float* kNorm, float eps, cudaStream_t s);

// RoPE (Hugging Face rotate_half: pairs i and i + headDim/2) on q and k of every token, in f32
// with angle pos * invFreq[i]; q is rotated in place, k and v are written into the token's page
// slot of layer `kv`.   qkv: (n, (heads + 2 * kvHeads) * headDim) bf16; invFreq: (headDim/2,) f32
void ropeAppend(bf16* qkv, const TokenMeta& meta, int heads, const float* invFreq, const KvLayer& kv,
                cudaStream_t s);

// out[t, j] = silu(gu[t, 2j]) * gu[t, 2j + 1] (gate and up interleaved, as the fused weight is).
// gu: (n, 2 * inter) bf16; out: (n, inter) bf16
void siluMul(const bf16* gu, int n, int inter, bf16* out, cudaStream_t s);

// Fills out[i] = mean + std * N(0, 1), a counter-based stream keyed by (seed, stream, i):
// the same values for the same key on any GPU and any launch shape.
void randomNormalBf16(bf16* out, size_t count, uint64_t seed, uint64_t stream, float mean, float std,
                      cudaStream_t s);
// Same values as randomNormalBf16 with the same key, rounded to bf16, stored as f32.
void randomNormalF32(float* out, size_t count, uint64_t seed, uint64_t stream, float mean, float std,
                     cudaStream_t s);

// Output of a matrix product: bf16 (overwrite), f32 (overwrite), f32 added to what Y holds (the
// residual stream), or (skinny kernel only) SiluPairBf16: rows 2j and 2j + 1 of the product are a
// gate/up pair and Y (T, O / 2) gets bf16(silu(bf16(gate)) * bf16(up)).
enum class OutMode : int { Bf16 = 0, F32 = 1, F32Add = 2, SiluPairBf16 = 3 };

// Y (T, O) = X (T, K) . W (O, K)^T for few tokens (T <= kSkinnyMaxTokens), one pass over W.
// X, W bf16 row-major; K % 8 == 0.
constexpr int kSkinnyMaxTokens = 8;
void skinnyGemm(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s);

// ---- attention ------------------------------------------------------------------------------

// Decode-style attention: each listed query token attends to the keys [0, pos] of its sequence,
// split into chunks of splitLen keys (flash-decoding), then combined. GQA: heads % kvHeads == 0.
struct KvTensorMap;  // below
struct DecodeAttentionArgs {
  const bf16* q = nullptr;   // token t, head h at q + t * qStride + h * headDim
  int qStride = 0;
  bf16* out = nullptr;       // token t, head h at out + t * outStride + h * headDim
  int outStride = 0;
  const int32_t* queries = nullptr;  // (numQueries,) token indices
  int numQueries = 0;
  TokenMeta meta;
  KvLayer kv;
  int heads = 0;
  float scale = 0.f;         // softmax scale (1/sqrt(headDim))
  int splitLen = 0;          // keys per split, a multiple of 64, <= kMaxSplitLen
  int maxSplits = 0;         // splits the grid covers: ceil(max context / splitLen)
  float* partO = nullptr;    // (numQueries, heads, maxSplits, headDim) f32 scratch
  float* partML = nullptr;   // (numQueries, heads, maxSplits, 2) f32 scratch: max, sum
  int32_t* counters = nullptr;  // (numQueries, kvHeads) zeroed once; each launch leaves them zero
  // Fused RoPE + KV append (what pure-decode layers use): when set, q and the
  // newest k and v arrive unrotated in each query token's qkv row (k at heads * headDim, v at
  // (heads + kvHeads) * headDim from q's start, qStride the row length) and the kernel rotates q,
  // rotates k and writes k and v into the token's page slot, as ropeAppend would. Null: ropeAppend ran.
  const float* ropeInvFreq = nullptr;
  // 0 = fixed splits of splitLen keys merged through global memory; C >= 8 = one
  // thread-block cluster of C blocks per (KV head, query) that share each context evenly and merge
  // in shared memory, splitLen then bounding the keys per block (set by planDecodeCluster).
  int clusterSize = 0;
  // [default 16] Largest cluster decodeAttention may plan (BackendOptions::decodeClusterCap; the
  // device's own limit applies too); below kMinCluster: fixed splits at every batch.
  int clusterCap = 16;
  // [default 0] Warps per block of a cluster launch: 0 = the launcher's choice (eight where every
  // cluster fits at once and a block's share is one 128-key tile, else four); 4 or 8 forces one
  // where it can run (kernel checks).
  int clusterWarps = 0;
  // [default false] Fixed splits only: false = split s holds keys [s * splitLen, (s + 1) * splitLen)
  // of every query; true = each query spreads its own context evenly over the maxSplits blocks
  // (evenSplitLen keys each), so a context just past a multiple of splitLen leaves no block with a
  // few keys (a graph's grid is planned for its context bucket, not for the contexts it replays).
  bool evenSplits = false;
  // [default 2] Fixed splits only: K/V tiles of 64 keys a block keeps in shared memory, 2 (double
  // buffered, three blocks per SM at headDim 128) or 3 (two tiles in flight while one is used, two
  // blocks per SM).
  int stages = 2;
  // [default true] Fixed splits: K/V by tensor copies where they fit (sm_90a, head dim 128, pages of
  // 8 or 16 keys; attention-decode-mma.cu), else cp.async; false: cp.async (the kernel checks compare).
  bool tensorCopies = true;
  const KvTensorMap* kvMap = nullptr;  // kvTensorMap(kv), host memory; null: encoded at launch
};
// Keys per decode attention block, at most; planDecodeSplits keeps to kDefaultSplitLen unless asked
// for longer splits (the attention tuning's candidates), and cluster shares always do.
constexpr int kMaxSplitLen = 2048;
constexpr int kDefaultSplitLen = 512;
// Keys per block when a context of ctx keys is spread evenly over `blocks` blocks: a multiple of
// 16, at least 64; at most splitLen when blocks * splitLen >= ctx (a split plan's grid).
__host__ __device__ inline int evenSplitLen(int ctx, int blocks) {
  const int len = ((ctx + blocks - 1) / blocks + 15) / 16 * 16;
  return len < 64 ? 64 : len;
}
// Picks splitLen and maxSplits for numQueries queries of at most maxCtx keys on numSms SMs: enough
// splits for `waves` blocks per SM [default 2] (never fewer than maxLen keys per split allow, maxLen
// a multiple of 64 <= kMaxSplitLen [default kDefaultSplitLen]).
constexpr int kDefaultDecodeWaves = 2;
void planDecodeSplits(int numQueries, int kvHeads, int maxCtx, int numSms, int* splitLen, int* maxSplits,
                      int waves = kDefaultDecodeWaves, int maxLen = kDefaultSplitLen);
// The attention tuning's candidates for planDecodeSplits: waves, ascending (the memory plan bounds
// the split partials for the largest), and split length bounds (fewer, longer blocks at large batch).
// One wave: a query's context in as few blocks as the SMs allow (at b=32 and 1,025 keys, 256 blocks
// of one split each, no merge, instead of 1,024 blocks of 512 + 512 + 1 + 0 keys: the decode step
// 4-5% faster, H200 2026-12-04, engine-gpu.md).
constexpr int kDecodeWaves[] = {1, 2, 4, 8, 16, 32};
constexpr int kMaxDecodeWaves = kDecodeWaves[sizeof kDecodeWaves / sizeof kDecodeWaves[0] - 1];
constexpr int kDecodeSplitLens[] = {kDefaultSplitLen, 1024, kMaxSplitLen};
// Turns a split plan into a cluster plan (clusterSize, splitLen) when it has at least kMinCluster
// splits (small batches, where clusters of 8 or 16 blocks fill the GPU; larger batches keep fixed
// splits, measured faster there), cap allows a cluster of kMinCluster or more, and the keys per
// block stay within kDefaultSplitLen. cap bounds the cluster size (decodeMaxCluster() for the device's
// largest). Leaves `a` as it is otherwise.
constexpr int kMinCluster = 8;
void planDecodeCluster(DecodeAttentionArgs& a, int cap);
// Largest cluster (power of two, <= 16) the device runs the tensor-core kernel in; 0 before
// decodeAttentionInit or without cluster support.
int decodeMaxCluster();
// Whether a layer's pool suits the fixed splits' tensor copies (an sm_90a build, head dim 128, pages
// of 8 or 16 keys): kvTensorMap(kv) is then worth making once per layer.
bool decodeAttentionTensorCopies(const KvLayer& kv);
// Clusters of 16 eight-warp blocks the device holds at once (the kernel uses them when all of a
// launch's clusters fit); 0 before decodeAttentionInit.
int decodeWideClusters();
// Checks the split plan, turns it into a cluster plan where that pays (planDecodeCluster, capped
// by a.clusterCap) and runs the tensor-core kernel (attention-decode-mma.cu).
void decodeAttention(const DecodeAttentionArgs& a, cudaStream_t s);
// The tensor-core kernel on the plan as given (rows of an mma tile = GQA heads).
void decodeAttentionMma(const DecodeAttentionArgs& a, cudaStream_t s);
// Raises the mma kernel's shared-memory limit; once per device (process), before any launch.
void decodeAttentionInit();

// Prefill attention (flash-attention style on the tensor cores, causal, ragged, prefix in the
// pages): a tile is up to kPrefillTileRows consecutive query tokens of one sequence. One block
// serves a tile for several query heads of one KV group (attention-prefill.cu).
struct PrefillTile {
  int32_t seq, tokenStart, rows, posStart;
};
constexpr int kPrefillTileRows = 64;
// A layer's pool encoded for tensor copies (a CUtensorMap: kvTensorMap; the wgmma prefill attention and
// the decode attention's fixed splits), made once per pool and layer by the caller or at each launch.
struct alignas(64) KvTensorMap {
  unsigned char bytes[128];
};
KvTensorMap kvTensorMap(const KvLayer& kv);
struct PrefillAttentionArgs {
  const bf16* q = nullptr;
  int qStride = 0;
  bf16* out = nullptr;
  int outStride = 0;
  const PrefillTile* tiles = nullptr;  // (numTiles,)
  int numTiles = 0;
  const int32_t* pageTable = nullptr;  // (numSeqs, ptStride)
  int ptStride = 0;
  KvLayer kv;
  int heads = 0;
  float scale = 0.f;
  const KvTensorMap* kvMap = nullptr;  // kvTensorMap(kv), host memory; null: encoded at launch
};
// The wgmma kernel where prefillAttentionWgmmaFits (head dim 128, an even GQA group, pages of 8 to
// 128 keys dividing 128, an sm_90a build: attention-prefill-wgmma.cu), else the mma.sync kernel
// (attention-prefill.cu, any shape).
void prefillAttention(const PrefillAttentionArgs& a, cudaStream_t s);
void prefillAttentionMma(const PrefillAttentionArgs& a, cudaStream_t s);
bool prefillAttentionWgmmaFits(const PrefillAttentionArgs& a);
void prefillAttentionWgmma(const PrefillAttentionArgs& a, cudaStream_t s);

}  // namespace ms::cuda
