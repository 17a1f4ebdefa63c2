// Device copies of host vectors for the kernel checks (kernels-check.cu, extras-check.cu): the
// checks' own buffers, allocated as they go (a check is not a step), 16 bytes of slack each.
#pragma once
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

}  // namespace ms::check
