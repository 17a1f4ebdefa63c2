// RoPE + KV append for prefill steps, variant "vec8": the shipped kernel (elementwise.cu,
// ropeAppendKernel: one block per token, the angles' sin/cos in shared memory, then one thread per
// (head, pair) with 2-byte loads and stores) with each thread rotating 8 pairs from two 16-byte
// loads and writing two 16-byte stores. The Nsight profile of a 4k prefill has the shipped kernel at
// 1.48 ms (46 us a layer, 37% of the read roofline; 2.95 ms at 8k, 44%) for ~100 MB a layer read
// and written: at the roofline ~23 us. Here: both kernels on the same q/k/v rows and pages (the 8B
// shape, page 16, one sequence), the outputs compared bit for bit (rotated q in place, k and v in
// the page slots), then timed.
// NOT YET RUN: written 2026-12-04 after the session's device time was spent.
//   build: cmake --build native/build --target microserve_kernel_benches; run: rope-append-vec
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common.cuh"
#include "cuda/pdl.h"

namespace ms::cuda {
namespace {

constexpr int kMaxHalf = 256;

// grid (n), block 256, headDim % 16 == 0: as ropeAppendKernel, 8 pairs (i .. i + 7 with i + half ..)
// per thread and step. The same float expressions per element as the shipped kernel.
__global__ void __launch_bounds__(256) ropeAppendVec8Kernel(bf16* qkv, TokenMeta meta, int heads, const float* invFreq,
                                                            KvLayer kv) {
  __shared__ float sn[kMaxHalf], cs[kMaxHalf];
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
  const int groups = half / 8;  // 8-pair groups per head
  for (int e = threadIdx.x; e < (heads + kv.kvHeads) * groups; e += blockDim.x) {
    const int h = e / groups, i = (e % groups) * 8;  // q heads then k heads: contiguous in the row
    const bf16* src = row + h * hd;
    uint4 av = *reinterpret_cast<const uint4*>(src + i), bv = *reinterpret_cast<const uint4*>(src + i + half);
    const bf16* a8 = reinterpret_cast<const bf16*>(&av);
    const bf16* b8 = reinterpret_cast<const bf16*>(&bv);
    uint4 ra, rb;
    bf16* ra8 = reinterpret_cast<bf16*>(&ra);
    bf16* rb8 = reinterpret_cast<bf16*>(&rb);
#pragma unroll
    for (int k = 0; k < 8; k++) {
      const float a = __bfloat162float(a8[k]), b = __bfloat162float(b8[k]), s = sn[i + k], c = cs[i + k];
      ra8[k] = __float2bfloat16(a * c - b * s);
      rb8[k] = __float2bfloat16(b * c + a * s);
    }
    bf16* dst = h < heads ? row + h * hd : kDst + (h - heads) * hd;
    *reinterpret_cast<uint4*>(dst + i) = ra;
    *reinterpret_cast<uint4*>(dst + i + half) = rb;
  }
}

}  // namespace

void ropeAppendVec8(bf16* qkv, const TokenMeta& meta, int heads, const float* invFreq, const KvLayer& kv, cudaStream_t s) {
  if (meta.numTokens == 0) return;
  if (kv.headDim % 16 != 0 || kv.headDim / 2 > kMaxHalf) throw CudaError("ropeAppendVec8: head dim % 16, <= 512", false);
  launchPdl("ropeAppendVec8Kernel", ropeAppendVec8Kernel, dim3(meta.numTokens), dim3(256), 0, s, qkv, meta, heads,
            invFreq, kv);
}

}  // namespace ms::cuda

using namespace ms::cuda;

int main() {
  try {
    for (int len : {300, 4096, 8192}) {  // 300: a last page partly filled
      const int heads = 32, kvHeads = 8, D = 128, qkvDim = (heads + 2 * kvHeads) * D;
      bench::PagedProblem p(1, len, len, heads, kvHeads, D, 16);
      std::vector<float> qkv = bench::randn(size_t(len) * qkvDim);
      bf16* dQkv = bench::uploadBf16(qkv);
      std::vector<float> inv(D / 2);
      for (int i = 0; i < D / 2; i++) inv[i] = float(1.0 / std::pow(500000.0, 2.0 * i / D));
      float* dInv = bench::upload(inv);
      const size_t qkvBytes = size_t(len) * qkvDim * 2, poolBytes = size_t(p.numSeqs) * p.maxPages * p.pageElems() * 2;
      bf16 *q1, *q2, *pool1, *pool2;
      for (bf16** d : {&q1, &q2}) MS_CUDA_CHECK(cudaMalloc(d, qkvBytes));
      for (bf16** d : {&pool1, &pool2}) MS_CUDA_CHECK(cudaMalloc(d, poolBytes));
      MS_CUDA_CHECK(cudaMemcpy(q1, dQkv, qkvBytes, cudaMemcpyDeviceToDevice));
      MS_CUDA_CHECK(cudaMemcpy(q2, dQkv, qkvBytes, cudaMemcpyDeviceToDevice));
      for (bf16* d : {pool1, pool2}) MS_CUDA_CHECK(cudaMemset(d, 0, poolBytes));
      KvLayer kv1 = p.kv(), kv2 = p.kv();
      kv1.base = pool1, kv2.base = pool2;
      const TokenMeta meta = p.meta();
      ropeAppend(q1, meta, heads, dInv, kv1, 0);
      ropeAppendVec8(q2, meta, heads, dInv, kv2, 0);
      MS_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<uint16_t> a(qkvBytes / 2), b(qkvBytes / 2), pa(poolBytes / 2), pb(poolBytes / 2);
      MS_CUDA_CHECK(cudaMemcpy(a.data(), q1, qkvBytes, cudaMemcpyDeviceToHost));
      MS_CUDA_CHECK(cudaMemcpy(b.data(), q2, qkvBytes, cudaMemcpyDeviceToHost));
      MS_CUDA_CHECK(cudaMemcpy(pa.data(), pool1, poolBytes, cudaMemcpyDeviceToHost));
      MS_CUDA_CHECK(cudaMemcpy(pb.data(), pool2, poolBytes, cudaMemcpyDeviceToHost));
      size_t dq = 0, dp = 0;
      for (size_t i = 0; i < a.size(); i++) dq += a[i] != b[i];
      for (size_t i = 0; i < pa.size(); i++) dp += pa[i] != pb[i];
      const bool same = dq == 0 && dp == 0;
      if (!same) bench::numFailed()++;
      std::printf("1 x %d tokens: vec8 vs shipped, differing bf16 values: qkv %zu, pages %zu %s\n", len, dq, dp,
                  same ? "PASS" : "FAIL");
      // Timed on fresh copies each run would add the copies: the kernels rotate q in place, so the
      // timing loop rotates it again and again (the same work; the values drift, the bytes do not).
      const double s = bench::timeMs([&] { ropeAppend(q1, meta, heads, dInv, kv1, 0); }, 3, 20);
      const double v = bench::timeMs([&] { ropeAppendVec8(q2, meta, heads, dInv, kv2, 0); }, 3, 20);
      const double bytes = double(len) * ((heads + 2.0 * kvHeads) * D * 2 + (heads + 2.0 * kvHeads) * D * 2);
      std::printf("  one layer: shipped %.1f us (%.2f TB/s), vec8 %.1f us (%.2f TB/s)\n", s * 1e3, bytes / s / 1e9,
                  v * 1e3, bytes / v / 1e9);
      cudaFree(q1), cudaFree(q2), cudaFree(pool1), cudaFree(pool2), cudaFree(dQkv), cudaFree(dInv);
    }
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("rope-append-vec: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
