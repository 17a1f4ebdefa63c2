// The C++ sampler (native/src/common/sampling.h, the code the CPU backend runs) on given logits,
// as a small program for test/native/sampling.test.ts, which builds it with the host compiler.
// stdin (little-endian): int32 rows, int32 vocab; rows x (f32 temperature, f32 topP, u32 seed,
// u32 step); then (rows, vocab) f32 logits. stdout: (rows,) int32 token ids. Exit 2 on bad input.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "check-input.h"
#include "common/sampling.h"

using ms::check::readAll;
using Row = ms::check::SampleParams;

int main() {
  int rows, vocab;
  std::vector<Row> params;
  if (!ms::check::readHeader(&rows, &vocab, &params)) return 2;
  std::vector<float> z(static_cast<size_t>(rows) * static_cast<size_t>(vocab));
  if (!readAll(z.data(), z.size())) return 2;
  std::vector<int32_t> out(static_cast<size_t>(rows));
  std::vector<uint32_t> q;
  for (int s = 0; s < rows; s++) {
    const Row& r = params[static_cast<size_t>(s)];
    if (!ms::samplingParamError(r.temperature, r.topP).empty()) return 2;
    out[static_cast<size_t>(s)] = ms::sampleRow(z.data() + static_cast<size_t>(s) * vocab, vocab, r.temperature, r.topP, r.seed, r.step, q);
  }
  return std::fwrite(out.data(), sizeof(int32_t), out.size(), stdout) == out.size() ? 0 : 1;
}
