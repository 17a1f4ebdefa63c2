// Compute kernels of the CPU backend, compiled once per instruction set (kernels-impl.inc) and
// picked per backend by what the CPU supports (kernels.cc). Baseline is x86-64-v2 (SSE4.2).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../backend.h"

namespace ms::cpu {

// Where one KV head of one layer lives in the paged pool: row t of a sequence is at
// base + pageTable[t / pageSize] * pageStride + (t % pageSize) * rowStride   (headDim floats).
struct KvView {
  const float* kBase = nullptr;
  const float* vBase = nullptr;
  const int32_t* pageTable = nullptr;
  int pageSize = 0;
  size_t pageStride = 0;  // floats between pages
  size_t rowStride = 0;   // floats between slots of one page
};

// Weights are packed in panels of kPanel output rows: W (O, K) is stored as
// (ceil(O / kPanel), K, kPanel), so element (o, k) sits at
// (o / kPanel) * K * kPanel + k * kPanel + o % kPanel; rows past O in the last panel are zero.
// The GEMM then needs no horizontal sums and streams each panel contiguously.
constexpr int kPanel = 16;

struct Kernels {
  const char* name;
  // Y[t, o] (+)= sum_k X[t, k] * W[o, k] for t in [0, T) and o in panels [p0, p1) (o < O).
  // X: (T, ldx) f32; W: packed (see above), f32 or bf16 bits; Y: (T, ldy) f32.
  void (*gemmF32)(const float* X, int T, int ldx, const float* W, int K, int O, float* Y, int ldy, int p0, int p1,
                  bool accumulate);
  void (*gemmBf16)(const float* X, int T, int ldx, const uint16_t* W, int K, int O, float* Y, int ldy, int p0,
                   int p1, bool accumulate);
  // Causal attention of `rep` query heads sharing one KV head over rows [0, len).
  // q: (rep, headDim); scores: (rep, len) scratch; out: (rep, headDim).
  void (*attention)(const float* q, int rep, int headDim, const KvView& kv, int len, float scale, float* scores,
                    float* out);
};

// The kernel set for `isa` (BackendOptions::cpuIsa): kAuto and kAvx512 take the widest this CPU
// runs, kAvx2 at most avx2, kBase the portable one.
const Kernels& kernelsFor(CpuIsa isa);

// Per-instruction-set tables (defined in kernels-<isa>.cc; avx2 and avx512 on x86-64 only).
const Kernels& kernelsBase();
const Kernels& kernelsAvx2();
const Kernels& kernelsAvx512();

}  // namespace ms::cpu
