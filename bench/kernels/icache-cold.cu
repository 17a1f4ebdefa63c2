// What cold machine code costs a block: the same straight-line code (N independent-chain FMAs, 16
// bytes each) run twice in one block, the first pass fetching it, the second from the SM's
// instruction caches, after the L2 was flushed (the decode step streams 436 MB of weights through the
// 50 MB L2 between two layers' launches of a kernel), right after the same launch, and after another
// kernel's code ran. One block of 128 threads per SM (all SMs fetch the same code at once, as a
// launch does) and one block alone. The L2 is flushed two ways: by a 1 GB read at the normal eviction
// priority (ld.global.cg, as cuBLASLt's products at 5+ tokens and the attention's tensor copies read),
// and by the same read marked evict-first (ld.global.cs, as the skinny products at 1-4 tokens read
// weights): if the second leaves the code in L2, a step whose weights stream evict-first keeps its
// kernels' code warm. Prices the code on a once-per-layer path (engine-gpu.md, ninth
// session: the decode attention's merge, 4.5 us first pass, 1.8 us run again in the same block).
//   build: cmake --build native/build --target icache-cold; run: native/build/icache-cold
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cuda/check.h"

namespace {

// Pass 1 and pass 2 of the same N instructions (a rolled loop around them), in SM cycles.
template <int N>
__global__ void __launch_bounds__(128) straightLine(float* sink, long long* cycles) {
  float a[8];
#pragma unroll
  for (int k = 0; k < 8; k++) a[k] = float(threadIdx.x) * 1e-3f + float(k);
  const float b = 1.0001f, c = 1e-7f;
  __syncthreads();
  long long t0 = clock64(), t1 = 0;
#pragma unroll 1
  for (int r = 0; r < 2; r++) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("fma.rn.f32 %0, %0, %1, %2;\n" : "+f"(a[i % 8]) : "f"(b), "f"(c));
    __syncthreads();
    if (r == 0) t1 = clock64();
  }
  const long long t2 = clock64();
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < 8; k++) s += a[k];
  if (s == 12345.f) sink[threadIdx.x] = s;  // keeps the chains
  if (threadIdx.x == 0) cycles[2 * blockIdx.x] = t1 - t0, cycles[2 * blockIdx.x + 1] = t2 - t1;
}

template <bool kEvictFirst>
__global__ void flushL2(const float4* p, size_t n, float* sink) {
  float s = 0.f;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float4 v = kEvictFirst ? __ldcs(p + i) : __ldcg(p + i);
    s += v.x + v.y + v.z + v.w;
  }
  if (s == 12345.f) sink[0] = s;
}

constexpr int kOther = 16400;  // another instance's code (256 KB), run on every SM before: the SMs' own
                               // instruction caches then hold none of the measured code

template <int N>
void launch(int blocks, float* sink, long long* dc) {
  straightLine<N><<<blocks, 128>>>(sink, dc);
  MS_CUDA_CHECK(cudaGetLastError());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Pass {
  double first, second;  // median over blocks, cycles
};
Pass read(long long* dc, int blocks) {
  std::vector<long long> c(2 * size_t(blocks));
  MS_CUDA_CHECK(cudaMemcpy(c.data(), dc, c.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  std::vector<double> f, s;
  for (int b = 0; b < blocks; b++) f.push_back(double(c[2 * b])), s.push_back(double(c[2 * b + 1]));
  return {median(f), median(s)};
}

template <int N>
void row(int sms, double ghz, const float4* buf, size_t n4, float* sink, long long* dc) {
  constexpr int kRepeats = 5;
  // The first pass's code comes from: DRAM (0, 3), the SM's caches (1), L2 (2), and (4) L2 or DRAM as
  // an evict-first stream leaves it.
  const char* names[] = {"L2 flushed", "again", "after 256 KB", "L2 flushed, one block", "1 GB read evict-first"};
  std::printf("N = %5d FMAs (%4d KB of code)\n", N, N * 16 / 1024);
  for (int scenario = 0; scenario < 5; scenario++) {
    std::vector<double> first, second;
    for (int rep = 0; rep < kRepeats; rep++) {
      const int blocks = scenario == 3 ? 1 : sms;
      if (scenario == 1) {
        launch<N>(blocks, sink, dc);
      } else {
        launch<kOther>(sms, sink, dc);
        if (scenario == 0 || scenario == 3) flushL2<false><<<4 * sms, 512>>>(buf, n4, sink);
        if (scenario == 4) flushL2<true><<<4 * sms, 512>>>(buf, n4, sink);
      }
      launch<N>(blocks, sink, dc);
      MS_CUDA_CHECK(cudaDeviceSynchronize());
      const Pass p = read(dc, blocks);
      first.push_back(p.first), second.push_back(p.second);
    }
    const double f = median(first), s = median(second);
    std::printf("  %-22s first pass %8.0f cycles (%6.2f us), second %8.0f (%6.2f us): %+6.2f us, %5.1f ns per KB\n",
                names[scenario], f, f / ghz / 1e3, s, s / ghz / 1e3, (f - s) / ghz / 1e3,
                (f - s) / ghz / (N * 16 / 1024.0));
  }
}

}  // namespace

int main() {
  int sms = 0, khz = 0;
  MS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  MS_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
  const double ghz = khz / 1e6;
  std::printf("%d SMs, clock attribute %.2f GHz (cycles -> us at that clock)\n", sms, ghz);
  const size_t bytes = size_t(1) << 30;  // 1 GB: 20x the L2
  float4* buf = nullptr;
  float* sink = nullptr;
  long long* dc = nullptr;
  MS_CUDA_CHECK(cudaMalloc(&buf, bytes));
  MS_CUDA_CHECK(cudaMemset(buf, 0, bytes));
  MS_CUDA_CHECK(cudaMalloc(&sink, 1024 * sizeof(float)));
  MS_CUDA_CHECK(cudaMalloc(&dc, 2 * size_t(sms) * sizeof(long long)));
  launch<kOther>(sms, sink, dc), launch<8192>(sms, sink, dc);  // every instance loaded once before timing
  launch<256>(sms, sink, dc), launch<1024>(sms, sink, dc), launch<2048>(sms, sink, dc), launch<4096>(sms, sink, dc);
  MS_CUDA_CHECK(cudaDeviceSynchronize());
  const size_t n4 = bytes / sizeof(float4);
  row<256>(sms, ghz, buf, n4, sink, dc);
  row<1024>(sms, ghz, buf, n4, sink, dc);
  row<2048>(sms, ghz, buf, n4, sink, dc);
  row<4096>(sms, ghz, buf, n4, sink, dc);
  row<8192>(sms, ghz, buf, n4, sink, dc);
  cudaFree(buf), cudaFree(sink), cudaFree(dc);
  return 0;
}
