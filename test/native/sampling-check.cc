// The C++ sampler (native/src/common/sampling.h, the code the CPU backend runs) on given logits,
// as a small program for test/native/sampling.test.ts, which builds it with the host compiler.
// stdin (little-endian): int32 rows, int32 vocab; rows x (f32 temperature, f32 topP, u32 seed,
// u32 step); then (rows, vocab) f32 logits. stdout: (rows,) int32 token ids. Exit 2 on bad input.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "common/sampling.h"

namespace {
template <class T>
bool readAll(T* out, size_t n) {
  return std::fread(out, sizeof(T), n, stdin) == n;
}
}  // namespace

int main() {
  int32_t dims[2];
  if (!readAll(dims, 2) || dims[0] < 0 || dims[1] <= 0) return 2;
  const int rows = dims[0], vocab = dims[1];
  struct Row {
    float temperature, topP;
    uint32_t seed, step;
  };
  std::vector<Row> params(static_cast<size_t>(rows));
  std::vector<float> z(static_cast<size_t>(rows) * static_cast<size_t>(vocab));
  if (!readAll(params.data(), params.size()) || !readAll(z.data(), z.size())) return 2;
  std::vector<int32_t> out(static_cast<size_t>(rows));
  std::vector<uint32_t> q;
  for (int s = 0; s < rows; s++) {
    const Row& r = params[static_cast<size_t>(s)];
    if (!ms::samplingParamError(r.temperature, r.topP).empty()) return 2;
    out[static_cast<size_t>(s)] = ms::sampleRow(z.data() + static_cast<size_t>(s) * vocab, vocab, r.temperature, r.topP, r.seed, r.step, q);
  }
  return std::fwrite(out.data(), sizeof(int32_t), out.size(), stdout) == out.size() ? 0 : 1;
}
