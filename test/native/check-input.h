// stdin of the host-compiled sampling checks (sampling-check.cc, sampling-extras-check.cc), as
// test/native/helpers.ts hostCheckInput writes it (little-endian): int32 rows, int32 vocab, then
// rows x (f32 temperature, f32 topP, u32 seed, u32 step).
#pragma once
#include <cstdint>
#include <cstdio>
#include <vector>

namespace ms::check {

template <class T>
bool readAll(T* out, size_t n) {
  return n == 0 || std::fread(out, sizeof(T), n, stdin) == n;
}

struct SampleParams {
  float temperature, topP;
  uint32_t seed, step;
};

// The header: false on a short read or bad dimensions.
inline bool readHeader(int* rows, int* vocab, std::vector<SampleParams>* params) {
  int32_t dims[2];
  if (!readAll(dims, 2) || dims[0] < 0 || dims[1] <= 0) return false;
  *rows = dims[0], *vocab = dims[1];
  params->resize(static_cast<size_t>(*rows));
  return readAll(params->data(), params->size());
}

}  // namespace ms::check
