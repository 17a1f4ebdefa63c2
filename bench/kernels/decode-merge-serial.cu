// Decode split merge, variant "serial" (shipped until 2026-11; now bench only): the last split
// block of a (token, KV head) merges the splits' partials one split at a time, each step waiting
// for its loads. Lost to the one-pass merge of decode-merge.h (kChunk splits per step, every load
// of a step in flight): 5.765 vs 5.789 ms per 8B decode step at batch 1 with fixed splits is within
// noise, but the serial loop waits about two L2 round trips per split on the step's critical path
// (bench/results/engine-gpu.md). Here: both merges on the same random partials, checked against a
// float64 merge, then timed (one block per (token, KV head), as in the decode kernel).
//   build: cmake --build native/build --target microserve_kernel_benches; run: decode-merge-serial
#include "common.cuh"
#include "cuda/decode-merge.h"

using namespace ms::cuda;

namespace {

// grid (numQueries, kvHeads), block 128: the serial merge as the decode kernel ran it.
__global__ void serialMergeKernel(DecodeAttentionArgs a, int rep, int numSplits) {
  const int qi = blockIdx.x, g = blockIdx.y, D = a.kv.headDim, tok = a.queries[qi];
  const int64_t slot0 = (int64_t(qi) * a.heads + g * rep) * a.maxSplits;
  for (int e = threadIdx.x; e < rep * D; e += blockDim.x) {
    const int h = e / D, d = e % D;
    const int64_t base = slot0 + int64_t(h) * a.maxSplits;
    float M = -FLT_MAX;
    for (int sp = 0; sp < numSplits; sp++) M = fmaxf(M, __ldcg(a.partML + (base + sp) * 2));
    float o = 0.f, L = 0.f;
    for (int sp = 0; sp < numSplits; sp++) {
      float f = exp2f(__ldcg(a.partML + (base + sp) * 2) - M);
      L += f * __ldcg(a.partML + (base + sp) * 2 + 1);
      o += f * __ldcg(a.partO + (base + sp) * D + d);
    }
    a.out[int64_t(tok) * a.outStride + (g * rep + h) * D + d] = __float2bfloat16(o / L);
  }
}

// The shipped merge: this block plays the last split block to finish.
__global__ void shippedMergeKernel(DecodeAttentionArgs a, int rep, int numSplits) {
  __shared__ int smIsLast;
  const int qi = blockIdx.x, g = blockIdx.y;
  if (threadIdx.x == 0) a.counters[int64_t(qi) * a.kv.kvHeads + g] = numSplits - 1;
  __syncthreads();
  const int64_t slot0 = (int64_t(qi) * a.heads + g * rep) * a.maxSplits;
  mergeSplitsIfLast(a, qi, g, rep, a.kv.headDim, numSplits, slot0, a.queries[qi], &smIsLast);
}

}  // namespace

int main() {
  try {
    for (auto shape : {std::pair<int, int>{1, 17}, {64, 3}, {5, 9}}) {
      const int numQueries = shape.first, numSplits = shape.second;
      const int heads = 32, kvHeads = 8, D = 128, rep = heads / kvHeads;
      std::vector<float> po = bench::randn(size_t(numQueries) * heads * numSplits * D), pml(size_t(numQueries) * heads * numSplits * 2);
      std::uniform_real_distribution<float> mDist(-8.f, 8.f), lDist(0.5f, 40.f);
      for (size_t i = 0; i < pml.size(); i += 2) pml[i] = mDist(bench::rng()), pml[i + 1] = lDist(bench::rng());
      std::vector<double> ref(size_t(numQueries) * heads * D);
      for (int q = 0; q < numQueries; q++)
        for (int h = 0; h < heads; h++) {
          const size_t base = (size_t(q) * heads + h) * numSplits;
          double M = -1e300;
          for (int s = 0; s < numSplits; s++) M = std::max(M, double(pml[(base + s) * 2]));
          for (int d = 0; d < D; d++) {
            double o = 0, L = 0;
            for (int s = 0; s < numSplits; s++) {
              const double f = std::exp2(double(pml[(base + s) * 2]) - M);
              o += f * po[(base + s) * D + d], L += f * pml[(base + s) * 2 + 1];
            }
            ref[(size_t(q) * heads + h) * D + d] = o / L;
          }
        }
      std::vector<int32_t> qs(numQueries);
      for (int i = 0; i < numQueries; i++) qs[i] = i;
      DecodeAttentionArgs a;
      a.partO = bench::upload(po), a.partML = bench::upload(pml), a.queries = bench::upload(qs);
      a.counters = bench::upload(std::vector<int32_t>(size_t(numQueries) * kvHeads, 0));
      MS_CUDA_CHECK(cudaMalloc(&a.out, ref.size() * 2));
      a.outStride = heads * D, a.heads = heads, a.maxSplits = numSplits, a.numQueries = numQueries;
      a.kv.kvHeads = kvHeads, a.kv.headDim = D;
      const dim3 grid(numQueries, kvHeads);
      auto serial = [&] { serialMergeKernel<<<grid, 128>>>(a, rep, numSplits); MS_LAUNCH_CHECK("serialMergeKernel"); };
      auto shipped = [&] { shippedMergeKernel<<<grid, 128>>>(a, rep, numSplits); MS_LAUNCH_CHECK("shippedMergeKernel"); };
      const std::string tag = " queries=" + std::to_string(numQueries) + " splits=" + std::to_string(numSplits);
      serial();
      bench::check("serial merge" + tag, bench::downloadBf16(a.out, ref.size()), ref, 1e-2);
      shipped();
      bench::check("shipped one-pass merge" + tag, bench::downloadBf16(a.out, ref.size()), ref, 1e-2);
      std::printf("%-40s serial %.4f ms, shipped %.4f ms\n", tag.c_str(), bench::timeMs(serial), bench::timeMs(shipped));
      cudaFree(a.partO), cudaFree(a.partML), cudaFree((void*)a.queries), cudaFree(a.counters), cudaFree(a.out);
    }
  } catch (const CudaError& e) {
    std::printf("CUDA error: %s\n", e.what());
    return 2;
  }
  std::printf("decode-merge-serial: %d failed\n", bench::numFailed());
  return bench::numFailed() ? 1 : 0;
}
