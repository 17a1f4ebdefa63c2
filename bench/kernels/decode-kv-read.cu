// Paged K/V read patterns of decode attention, no arithmetic: how fast a block can stream the K/V
// of one (query, KV head) from the pool with the engine's load loop, against other layouts and
// copy engines on the same bytes. Measured on the H200 (2026-12-04, bench/results/engine-gpu.md):
// the engine's pattern (256-byte rows of one head at a 2 KB stride, 16-byte cp.async, 64-key tiles)
// reads at 94-103% of this bench's own read kernel at 128-256 queries (1025 and 4096 keys), as fast
// as head-major pages or blocks over all heads of a query: the layout is not what held decode
// attention at 68% of the read rate (its instruction stream was); bulk copies of 256-byte rows
// (cp.async.bulk, one warp issuing) were 1.5-2.2x slower.
//   build: cmake --build native/build --target microserve_kernel_benches; run: decode-kv-read
// Pool: pages of 2 (K, V) x 16 slots x 8 KV heads x 128 dims bf16 (64 KB, one layer), the pages of
// each query in order or shuffled. Variants (NB = K/V tiles in shared memory, NB - 1 in flight):
//   A  head-sliced, the engine's: block (KV head, query), 128 threads, a 16-byte cp.async per chunk
//   E  as A with head-major pages (a head's 16 slots are one 4 KB run)
//   B  all heads of a query: block (split of 8, query), tiles of 8 keys x 2 KB rows
//   C  as A with one 256-byte cp.async.bulk per row (warp 0 issues) and an mbarrier per stage
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/check.h"
#include "cuda/mma-ptx.h"
#include "cuda/wgmma-ptx.h"

using ms::cuda::bf16;
using ms::cuda::cpAsync16;
using ms::cuda::cpAsyncCommit;
using ms::cuda::cpAsyncWait;
using ms::cuda::initStageBarriers;
using ms::cuda::mbarExpectTx;
using ms::cuda::mbarWait;
using ms::cuda::smemAddr;

namespace {

constexpr int PS = 16, H = 8, D = 128, KVD = H * D;  // slots per page, KV heads, head dim, row elements
constexpr int64_t PAGE = 2LL * PS * KVD;              // elements per page

// Waits until tile t has landed and every thread is done with the tile before it, runs `use` on
// its buffer, keeping NB - 1 tiles in flight: the engine's loop without the arithmetic.
template <int NB, class Load>
__device__ void stream(int tiles, Load load, const bf16* buf, int tileElems, float* sink) {
  for (int t = 0; t < NB - 1 && t < tiles; t++) load(t), cpAsyncCommit();
  float acc = 0.f;
  for (int t = 0; t < tiles; t++) {
    if (t + NB - 1 < tiles) load(t + NB - 1);
    cpAsyncCommit();
    cpAsyncWait<NB - 1>();
    __syncthreads();
    acc += __bfloat162float(buf[(t % NB) * tileElems + threadIdx.x]);
    __syncthreads();
  }
  if (acc == 12345.f) *sink = acc;  // never: keeps the loads
}

template <int NB, bool kHeadMajor>
__global__ void __launch_bounds__(128) headSliced(const bf16* pool, const int* pt, int ptStride, int ctx, float* sink) {
  extern __shared__ __align__(16) unsigned char sm[];
  bf16* buf = reinterpret_cast<bf16*>(sm);
  const int g = blockIdx.x;
  const int* p = pt + blockIdx.y * ptStride;
  auto load = [&](int t) {
    bf16* Ks = buf + (t % NB) * 2 * 64 * D;
    for (int c = threadIdx.x; c < 64 * 16; c += 128) {
      const int r = c / 16, col = (c % 16) * 8, key = t * 64 + r;
      if (key >= ctx) continue;
      const bf16* src = pool + int64_t(p[key / PS]) * PAGE + col +
                        (kHeadMajor ? (g * PS + key % PS) * D : (key % PS) * KVD + g * D);
      cpAsync16(Ks + r * D + col, src, 16);
      cpAsync16(Ks + (64 + r) * D + col, src + PS * KVD, 16);
    }
  };
  stream<NB>((ctx + 63) / 64, load, buf, 2 * 64 * D, sink);
}

template <int NB>
__global__ void __launch_bounds__(128) allHeads(const bf16* pool, const int* pt, int ptStride, int ctx, int S, float* sink) {
  extern __shared__ __align__(16) unsigned char sm[];
  bf16* buf = reinterpret_cast<bf16*>(sm);
  const int* p = pt + blockIdx.y * ptStride;
  const int per = (ctx + S - 1) / S, k0 = blockIdx.x * per, n = min(ctx - k0, per);
  auto load = [&](int t) {
    bf16* Ks = buf + (t % NB) * 2 * 8 * KVD;
    for (int c = threadIdx.x; c < 8 * 128; c += 128) {
      const int r = c / 128, col = (c % 128) * 8, key = k0 + t * 8 + r;
      if (t * 8 + r >= n) continue;
      const bf16* src = pool + int64_t(p[key / PS]) * PAGE + (key % PS) * KVD + col;
      cpAsync16(Ks + r * KVD + col, src, 16);
      cpAsync16(Ks + (8 + r) * KVD + col, src + PS * KVD, 16);
    }
  };
  stream<NB>((n + 7) / 8, load, buf, 2 * 8 * KVD, sink);
}

template <int NB>
__global__ void __launch_bounds__(128) headSlicedBulk(const bf16* pool, const int* pt, int ptStride, int ctx, float* sink) {
  extern __shared__ __align__(16) unsigned char sm[];
  bf16* buf = reinterpret_cast<bf16*>(sm);
  __shared__ __align__(8) uint64_t bar[NB];
  const int g = blockIdx.x;
  const int* p = pt + blockIdx.y * ptStride;
  const int tiles = (ctx + 63) / 64;
  initStageBarriers(bar, nullptr, NB, 0);
  __syncthreads();
  auto load = [&](int t) {
    if (threadIdx.x >= 32) return;
    bf16* Ks = buf + (t % NB) * 2 * 64 * D;
    const int nk = min(64, ctx - t * 64);
    if (threadIdx.x == 0)
      mbarExpectTx(&bar[t % NB], uint32_t(nk * 2 * D * 2));
    __syncwarp();
    for (int r = threadIdx.x; r < nk; r += 32) {
      const int key = t * 64 + r;
      const bf16* src = pool + int64_t(p[key / PS]) * PAGE + (key % PS) * KVD + g * D;
      for (int kv = 0; kv < 2; kv++)
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                         smemAddr(Ks + (kv * 64 + r) * D)),
                     "l"(src + kv * PS * KVD), "r"(D * 2), "r"(smemAddr(&bar[t % NB]))
                     : "memory");
    }
  };
  for (int t = 0; t < NB - 1 && t < tiles; t++) load(t);
  float acc = 0.f;
  for (int t = 0; t < tiles; t++) {
    if (t + NB - 1 < tiles) load(t + NB - 1);
    mbarWait(&bar[t % NB], (t / NB) & 1);
    acc += __bfloat162float(buf[(t % NB) * 2 * 64 * D + threadIdx.x]);
    __syncthreads();
  }
  if (acc == 12345.f) *sink = acc;
}

__global__ void readAll(const uint4* x, size_t n, float* sink) {
  uint32_t a = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(x + i);
    a ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (a == 0x12345u) *sink = float(a);
}

template <class F>
float medianMs(F f) {
  cudaEvent_t a, b;
  MS_CUDA_CHECK(cudaEventCreate(&a));
  MS_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; i++) f();
  std::vector<float> v;
  for (int i = 0; i < 9; i++) {
    MS_CUDA_CHECK(cudaEventRecord(a));
    f();
    MS_CUDA_CHECK(cudaEventRecord(b));
    MS_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    MS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    v.push_back(ms);
  }
  MS_CUDA_CHECK(cudaGetLastError());
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class K>
void allowSmem(K kernel, int bytes) {
  MS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

}  // namespace

int main() {
  const int64_t numPages = 60000;  // 3.9 GB: far past the L2
  bf16* pool;
  float* sink;
  MS_CUDA_CHECK(cudaMalloc(&pool, numPages * PAGE * 2));
  MS_CUDA_CHECK(cudaMemset(pool, 0, numPages * PAGE * 2));
  MS_CUDA_CHECK(cudaMalloc(&sink, 4));
  int sms = 0;
  MS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t n16 = numPages * PAGE * 2 / 16;
  const float rms = medianMs([&] { readAll<<<sms * 4, 512>>>(reinterpret_cast<const uint4*>(pool), n16, sink); });
  std::printf("read roofline (one pass over the pool): %.3f TB/s\n", n16 * 16 / rms / 1e9);
  allowSmem(headSliced<2, false>, 64 << 10), allowSmem(headSliced<3, false>, 96 << 10);
  allowSmem(headSliced<2, true>, 64 << 10), allowSmem(headSliced<3, true>, 96 << 10);
  allowSmem(allHeads<2>, 64 << 10), allowSmem(allHeads<3>, 96 << 10);
  allowSmem(headSlicedBulk<2>, 64 << 10), allowSmem(headSlicedBulk<3>, 96 << 10);
  std::mt19937 rng(1);
  for (int ctx : {1025, 4096})
    for (int Q : {64, 128, 256})
      for (bool shuffled : {false, true}) {
        const int ptStride = (ctx + PS - 1) / PS;
        if (int64_t(Q) * ptStride > numPages) continue;
        std::vector<int> pages(numPages);
        for (int i = 0; i < numPages; i++) pages[i] = i;
        if (shuffled) std::shuffle(pages.begin(), pages.end(), rng);
        pages.resize(size_t(Q) * ptStride);
        int* pt;
        MS_CUDA_CHECK(cudaMalloc(&pt, pages.size() * 4));
        MS_CUDA_CHECK(cudaMemcpy(pt, pages.data(), pages.size() * 4, cudaMemcpyHostToDevice));
        const double bytes = double(Q) * ctx * KVD * 2 * 2;
        auto row = [&](const char* name, float ms) {
          std::printf("ctx %4d Q %3d %s %-28s %7.1f us  %.3f TB/s\n", ctx, Q, shuffled ? "shuf" : "seq ", name, ms * 1e3,
                      bytes / ms / 1e9);
        };
        const dim3 grid(H, Q);
        row("A head-sliced cp.async NB2", medianMs([&] { headSliced<2, false><<<grid, 128, 64 << 10>>>(pool, pt, ptStride, ctx, sink); }));
        row("A head-sliced cp.async NB3", medianMs([&] { headSliced<3, false><<<grid, 128, 96 << 10>>>(pool, pt, ptStride, ctx, sink); }));
        row("E head-major pages NB2", medianMs([&] { headSliced<2, true><<<grid, 128, 64 << 10>>>(pool, pt, ptStride, ctx, sink); }));
        row("E head-major pages NB3", medianMs([&] { headSliced<3, true><<<grid, 128, 96 << 10>>>(pool, pt, ptStride, ctx, sink); }));
        row("B all heads, 8 splits NB2", medianMs([&] { allHeads<2><<<dim3(8, Q), 128, 64 << 10>>>(pool, pt, ptStride, ctx, 8, sink); }));
        row("B all heads, 8 splits NB3", medianMs([&] { allHeads<3><<<dim3(8, Q), 128, 96 << 10>>>(pool, pt, ptStride, ctx, 8, sink); }));
        row("C head-sliced bulk NB2", medianMs([&] { headSlicedBulk<2><<<grid, 128, 64 << 10>>>(pool, pt, ptStride, ctx, sink); }));
        row("C head-sliced bulk NB3", medianMs([&] { headSlicedBulk<3><<<grid, 128, 96 << 10>>>(pool, pt, ptStride, ctx, sink); }));
        MS_CUDA_CHECK(cudaFree(pt));
      }
  return 0;
}
