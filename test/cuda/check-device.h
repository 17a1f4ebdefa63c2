// Device helpers of the kernel checks (kernels-check.cu, extras-check.cu): copies of host vectors
// (the checks' own buffers, allocated as they go: a check is not a step; 16 bytes of slack each)
// and an event timer.
#pragma once
#include <algorithm>
#include <vector>

#include "cuda/check.h"

namespace ms::check {

// A device copy of v (cudaMalloc: the caller frees it).
template <class T>
T* upload(const std::vector<T>& v) {
  T* d;
  MS_CUDA_CHECK(cudaMalloc(&d, v.size() * sizeof(T) + 16));
  MS_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// n elements of d, after everything queued on the device has run.
template <class T>
std::vector<T> download(const void* d, size_t n) {
  std::vector<T> v(n);
  MS_CUDA_CHECK(cudaDeviceSynchronize());
  MS_CUDA_CHECK(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// Median of reps - 1 timings (the first rep dropped) of `body` on the default stream, in µs;
// `setup` runs before each rep, outside the timed span (the device is idle when the span starts).
template <class Setup, class Body>
float medianEventUs(int reps, Setup&& setup, Body&& body) {
  cudaEvent_t e0, e1;
  MS_CUDA_CHECK(cudaEventCreate(&e0));
  MS_CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int rep = 0; rep < reps; rep++) {
    setup();
    MS_CUDA_CHECK(cudaDeviceSynchronize());
    MS_CUDA_CHECK(cudaEventRecord(e0, 0));
    body();
    MS_CUDA_CHECK(cudaEventRecord(e1, 0));
    MS_CUDA_CHECK(cudaEventSynchronize(e1));
    float v;
    MS_CUDA_CHECK(cudaEventElapsedTime(&v, e0, e1));
    if (rep) ms.push_back(v);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3f;
}

}  // namespace ms::check
