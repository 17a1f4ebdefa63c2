// Row-wise and element-wise kernels: embedding gather, RMSNorm, q/k/v bias + q/k norm, RoPE + KV
// append, SiLU·mul,
// seeded random fills. Memory-bound; each reads its inputs once.
#include <algorithm>
#include <string>

#include "check.h"
#include "kernels.h"
#include "pdl.h"

namespace ms::cuda {
namespace {

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ float blockSum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  v = warpSum(v);
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < int(blockDim.x / 32) ? part[lane] : 0.f;
    w = warpSum(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

// grid (n), block 256
__global__ void embedGatherKernel(const int32_t* tokens, const bf16* table, int hidden, float* x) {
  const bf16* src = table + int64_t(tokens[blockIdx.x]) * hidden;
  float* dst = x + int64_t(blockIdx.x) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

// grid (n), block 256: the row stays in registers (VPT float4 per thread), so one round trip to
// memory; the norm weight is fetched before the PDL wait (it depends on no kernel).
template <int VPT>
__global__ void rmsNormKernel(const float* x, const int32_t* rows, int n, int hidden, const float* w, float eps,
                              bf16* out) {
  const int n4 = hidden / 4;
  float4 wv[VPT];
#pragma unroll
  for (int k = 0; k < VPT; k++) {
    int i = threadIdx.x + k * 256;
    wv[k] = i < n4 ? reinterpret_cast<const float4*>(w)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  pdlWait();
  pdlTrigger();
  const int64_t row = rows ? rows[blockIdx.x] : blockIdx.x;
  const float4* xr = reinterpret_cast<const float4*>(x + row * hidden);
  float4 v[VPT];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; k++) {
    int i = threadIdx.x + k * 256;
    v[k] = i < n4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
  }
  const float r = rsqrtf(blockSum(ss) / float(hidden) + eps);
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + int64_t(blockIdx.x) * hidden);
#pragma unroll
  for (int k = 0; k < VPT; k++) {
    int i = threadIdx.x + k * 256;
    if (i >= n4) break;
    o[2 * i] = __floats2bfloat162_rn(wv[k].x * (v[k].x * r), wv[k].y * (v[k].y * r));
    o[2 * i + 1] = __floats2bfloat162_rn(wv[k].z * (v[k].z * r), wv[k].w * (v[k].w * r));
  }
}

// grid (n), block 256: one block per token. The token's headDim / 2 angles (f32, full-precision
// sincosf: the angles are large) go to shared memory once, then the block rotates its q heads in
// place and its k heads into the token's page slot, and copies v there. Each thread rotates V pairs
// (i .. i + V - 1 with their partners half away): V = 8 reads and writes them as 16-byte vectors
// (head dims divisible by 16; 1.5-1.6x faster than V = 1 at 4k-8k tokens of the 8B shape on the
// H200, bit for bit the same values, engine-gpu.md), V = 1 serves every other head dim. (A block per
// (token, head) of 64 threads, each computing its own sincos, ran a 4k prefill's RoPE at 0.2 ms per
// layer, bound by block scheduling and the dependent loads of every block; engine-gpu.md.)
constexpr int kRopeMaxHalf = 256;
template <int V>
struct alignas(2 * V) Bf16s {
  bf16 v[V];
};
template <int V>
__global__ void __launch_bounds__(256) ropeAppendKernel(bf16* qkv, TokenMeta meta, int heads, const float* invFreq,
                                                        KvLayer kv) {
  __shared__ float sn[kRopeMaxHalf], cs[kRopeMaxHalf];
  pdlWait();
  pdlTrigger();
  const int t = blockIdx.x, hd = kv.headDim, half = hd / 2, kvDim = kv.kvHeads * hd;
  const int pos = meta.pos[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) sincosf(float(pos) * invFreq[i], &sn[i], &cs[i]);
  bf16* row = qkv + int64_t(t) * (int64_t(heads) * hd + 2 * kvDim);
  const int page = meta.pageTable[int64_t(meta.seqOf[t]) * meta.ptStride + pos / kv.pageSize];
  bf16* kDst = kv.base + int64_t(page) * kv.pageStride + int64_t(pos % kv.pageSize) * kvDim;
  const uint4* v = reinterpret_cast<const uint4*>(row + int64_t(heads + kv.kvHeads) * hd);
  uint4* vDst = reinterpret_cast<uint4*>(kDst + int64_t(kv.pageSize) * kvDim);
  for (int i = threadIdx.x; i < kvDim / 8; i += blockDim.x) vDst[i] = v[i];
  __syncthreads();
  const int groups = half / V;  // V-pair groups per head
  for (int e = threadIdx.x; e < (heads + kv.kvHeads) * groups; e += blockDim.x) {
    const int h = e / groups, i = (e % groups) * V;  // q heads then k heads: contiguous in the row
    const bf16* src = row + h * hd;
    const Bf16s<V> a = *reinterpret_cast<const Bf16s<V>*>(src + i), b = *reinterpret_cast<const Bf16s<V>*>(src + i + half);
    Bf16s<V> ra, rb;
#pragma unroll
    for (int k = 0; k < V; k++) {
      const float x = __bfloat162float(a.v[k]), y = __bfloat162float(b.v[k]), s = sn[i + k], c = cs[i + k];
      ra.v[k] = __float2bfloat16(x * c - y * s);
      rb.v[k] = __float2bfloat16(y * c + x * s);
    }
    bf16* dst = h < heads ? row + h * hd : kDst + (h - heads) * hd;
    *reinterpret_cast<Bf16s<V>*>(dst + i) = ra;
    *reinterpret_cast<Bf16s<V>*>(dst + i + half) = rb;
  }
}

// grid (n, heads + 2 * kvHeads), block max(32, headDim) rounded to a warp: one block per head of
// one token; adds the head's bias (when given), then RMSNorms q and k heads (when given).
__global__ void qkvBiasNormKernel(bf16* qkv, int heads, int kvHeads, int hd, const float* bias, const float* qNorm,
                                  const float* kNorm, float eps) {
  pdlWait();
  pdlTrigger();
  const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
  bf16* v = qkv + int64_t(t) * (int64_t(heads) + 2 * kvHeads) * hd + int64_t(h) * hd;
  float x = i < hd ? __bfloat162float(v[i]) : 0.f;
  if (bias && i < hd) x += bias[int64_t(h) * hd + i];
  const float* w = h < heads ? qNorm : h < heads + kvHeads ? kNorm : nullptr;
  if (w) {  // uniform per block: every thread takes part in the sum
    const float r = rsqrtf(blockSum(x * x) / float(hd) + eps);
    if (i < hd) x = w[i] * (x * r);
  }
  if (i < hd) v[i] = __float2bfloat16(x);
}

// grid (n, ceil(inter / (256 * 4))), block 256: 4 outputs per thread from one 16-byte load of
// interleaved (gate, up) pairs.
__global__ void siluMulVecKernel(const bf16* gu, int inter, bf16* out) {
  pdlWait();
  pdlTrigger();
  int j = (blockIdx.y * blockDim.x + threadIdx.x) * 4;
  if (j >= inter) return;
  uint4 pv = *reinterpret_cast<const uint4*>(gu + int64_t(blockIdx.x) * 2 * inter + 2 * j);
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&pv);
  __nv_bfloat162 o[2];
#pragma unroll
  for (int k = 0; k < 2; k++) {
    float2 a = __bfloat1622float2(p[2 * k]), b = __bfloat1622float2(p[2 * k + 1]);
    o[k] = __floats2bfloat162_rn(a.x / (1.f + __expf(-a.x)) * a.y, b.x / (1.f + __expf(-b.x)) * b.y);
  }
  *reinterpret_cast<uint2*>(out + int64_t(blockIdx.x) * inter + j) = *reinterpret_cast<uint2*>(o);
}

// grid (n, ceil(inter / 256)), block 256: any inter.
__global__ void siluMulKernel(const bf16* gu, int inter, bf16* out) {
  pdlWait();
  pdlTrigger();
  int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= inter) return;
  const bf16* r = gu + int64_t(blockIdx.x) * 2 * inter;
  float a = __bfloat162float(r[2 * j]);
  out[int64_t(blockIdx.x) * inter + j] = __float2bfloat16(a / (1.f + __expf(-a)) * __bfloat162float(r[2 * j + 1]));
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Element i of the stream (seed, stream): Box-Muller on two hashed 24-bit uniforms.
__device__ __forceinline__ float normalAt(uint64_t key, uint64_t i) {
  uint64_t r = mix64(key ^ mix64(i));
  float u1 = (float((r >> 40) & 0xffffff) + 1.f) * (1.f / 16777216.f);  // (0, 1]
  float u2 = float((r >> 8) & 0xffffff) * (1.f / 16777216.f);           // [0, 1)
  return sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
}

template <class T>
__global__ void randomNormalKernel(T* out, uint64_t count, uint64_t key, float mean, float std) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < count; i += uint64_t(gridDim.x) * blockDim.x) {
    bf16 v = __float2bfloat16(mean + std * normalAt(key, i));
    if constexpr (sizeof(T) == 4)
      out[i] = __bfloat162float(v);
    else
      out[i] = v;
  }
}

int gridFor(int64_t total, int block) {
  int64_t g = (total + block - 1) / block;
  return int(g < 65536 ? (g > 0 ? g : 1) : 65536);
}

uint64_t streamKey(uint64_t seed, uint64_t stream) {
  return seed * 0xD1B54A32D192ED03ull + (stream + 1) * 0x9E3779B97F4A7C15ull;
}

}  // namespace

void embedGather(const int32_t* tokens, int n, const bf16* table, int hidden, float* x, cudaStream_t s) {
  if (n == 0) return;
  embedGatherKernel<<<n, 256, 0, s>>>(tokens, table, hidden, x);
  MS_LAUNCH_CHECK("embedGatherKernel");
}

void rmsNorm(const float* x, const int32_t* rows, int n, int hidden, const float* w, float eps, bf16* out,
             cudaStream_t s) {
  if (n == 0) return;
  if (hidden % 4 != 0 || hidden > 16 * 1024)
    throw CudaError("rmsNorm: hidden must be a multiple of 4 and at most 16384 (got " + std::to_string(hidden) + ")",
                    false);
  const int vpt = (hidden / 4 + 255) / 256;
  const dim3 grid(n), block(256);
  if (vpt <= 1)
    launchPdl("rmsNormKernel", rmsNormKernel<1>, grid, block, 0, s, x, rows, n, hidden, w, eps, out);
  else if (vpt <= 2)
    launchPdl("rmsNormKernel", rmsNormKernel<2>, grid, block, 0, s, x, rows, n, hidden, w, eps, out);
  else if (vpt <= 4)
    launchPdl("rmsNormKernel", rmsNormKernel<4>, grid, block, 0, s, x, rows, n, hidden, w, eps, out);
  else if (vpt <= 8)
    launchPdl("rmsNormKernel", rmsNormKernel<8>, grid, block, 0, s, x, rows, n, hidden, w, eps, out);
  else
    launchPdl("rmsNormKernel", rmsNormKernel<16>, grid, block, 0, s, x, rows, n, hidden, w, eps, out);
}

void ropeAppend(bf16* qkv, const TokenMeta& meta, int heads, const float* invFreq, const KvLayer& kv,
                cudaStream_t s) {
  if (meta.numTokens == 0) return;
  if (kv.headDim / 2 > kRopeMaxHalf)
    throw CudaError("ropeAppend: head dim above " + std::to_string(2 * kRopeMaxHalf), false);
  if (kv.headDim % 16 == 0)
    launchPdl("ropeAppendKernel<8>", ropeAppendKernel<8>, dim3(meta.numTokens), dim3(256), 0, s, qkv, meta, heads,
              invFreq, kv);
  else
    launchPdl("ropeAppendKernel<1>", ropeAppendKernel<1>, dim3(meta.numTokens), dim3(256), 0, s, qkv, meta, heads,
              invFreq, kv);
}

void qkvBiasNorm(bf16* qkv, int n, int heads, int kvHeads, int headDim, const float* bias, const float* qNorm,
                 const float* kNorm, float eps, cudaStream_t s) {
  if (n == 0 || (!bias && !qNorm)) return;
  const int threads = (std::max(32, headDim) + 31) / 32 * 32;
  launchPdl("qkvBiasNormKernel", qkvBiasNormKernel, dim3(n, heads + 2 * kvHeads), dim3(threads), 0, s, qkv, heads,
            kvHeads, headDim, bias, qNorm, kNorm, eps);
}

void siluMul(const bf16* gu, int n, int inter, bf16* out, cudaStream_t s) {
  if (n == 0 || inter == 0) return;
  if (inter % 4 == 0) {
    launchPdl("siluMulVecKernel", siluMulVecKernel, dim3(n, (inter / 4 + 255) / 256), dim3(256), 0, s, gu, inter, out);
  } else {
    launchPdl("siluMulKernel", siluMulKernel, dim3(n, (inter + 255) / 256), dim3(256), 0, s, gu, inter, out);
  }
}

void randomNormalBf16(bf16* out, size_t count, uint64_t seed, uint64_t stream, float mean, float std,
                      cudaStream_t s) {
  if (count == 0) return;
  randomNormalKernel<bf16><<<gridFor(int64_t(count), 256), 256, 0, s>>>(out, count, streamKey(seed, stream), mean, std);
  MS_LAUNCH_CHECK("randomNormalKernel<bf16>");
}

void randomNormalF32(float* out, size_t count, uint64_t seed, uint64_t stream, float mean, float std,
                     cudaStream_t s) {
  if (count == 0) return;
  randomNormalKernel<float><<<gridFor(int64_t(count), 256), 256, 0, s>>>(out, count, streamKey(seed, stream), mean, std);
  MS_LAUNCH_CHECK("randomNormalKernel<float>");
}

}  // namespace ms::cuda
