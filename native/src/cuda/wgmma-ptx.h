// Inline PTX for Hopper's warpgroup MMA (wgmma, sm_90a only): m64n128k16 bf16 -> f32 with A from
// shared memory or registers, its fences and waits, and the 128-byte-swizzled shared-memory layout
// and matrix descriptors it reads; mbarriers and the tensor copies (TMA) that complete on them.
// Used by attention-prefill-wgmma.cu and bench/kernels.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdint>

#include "mma-ptx.h"

namespace ms::cuda {

// D (64 x 128 f32 in the accumulator layout) (+)= A (64 x 16, shared: descA) . B (16 x 128, shared: descB),
// B K-major (TRANS_B 0) or N-major (1); scaleD 0 overwrites D.
template <int TRANS_B>
__device__ __forceinline__ void wgmmaSS(float (&d)[64], uint64_t descA, uint64_t descB, int scaleD) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, %67;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(descA), "l"(descB), "r"(scaleD), "n"(TRANS_B));
}
// D += A (64 x 16 bf16 in registers: the accumulator layout of 16 columns, packed in pairs) . B (16 x 128,
// shared: descB, N-major).
__device__ __forceinline__ void wgmmaRS(float (&d)[64], const uint32_t (&a)[4], uint64_t descB) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(1));
}
// Keeps the compiler from moving accesses of an accumulator across a wgmma fence or wait.
__device__ __forceinline__ void pinRegs(float (&d)[64]) { asm volatile("" : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])::"memory"); }

__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N of this warpgroup's committed wgmma groups are pending (they complete in order).
template <int N = 0>
__device__ __forceinline__ void wgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory writes of the generic proxy (cp.async) made visible to wgmma (the async proxy).
__device__ __forceinline__ void fenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// A [rows][128] bf16 tile in shared memory as wgmma reads it with 128-byte swizzling: two halves of
// 64 columns (rows x 128 bytes each), the 16-byte chunk c of row r at chunk (c ^ r % 8) of its row.
__device__ __forceinline__ uint32_t swz128(int rows, int r, int chunk) {
  return uint32_t((chunk >> 3) * rows * 128 + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}
// Matrix descriptors (128-byte swizzle, stride byte offset 1024: 8 rows of 128 bytes), in two parts:
// descLo(addr, lbo), the low word (start address, leading byte offset) of the operand at shared
// address addr, and descAt(lo, off), the descriptor of addr + off. The start address field is the low
// 14 bits (address >> 4: shared memory is below 256 KB), so an offset adds to the low word without a
// carry out of the field, and the high word is the same for every operand: a product's descriptors
// cost one add each once their operands' low words are built (FA-style loops issue 16 per tile).
__device__ __forceinline__ uint32_t descLo(uint32_t addr, uint32_t lbo) { return (addr >> 4) | (lbo >> 4) << 16; }
__device__ __forceinline__ uint64_t descAt(uint32_t lo, uint32_t off) {
  return uint64_t(lo + (off >> 4)) | uint64_t((1024 >> 4) | (1u << 30)) << 32;
}

__device__ __forceinline__ void mbarInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smemAddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smemAddr(bar)) : "memory");
}
__device__ __forceinline__ void mbarExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smemAddr(bar)), "r"(bytes) : "memory");
}
// Thread 0: `stages` barriers at full (one arrival: the producer's, plus its copies' bytes) and, where
// empty is given, as many at empty (`consumers` arrivals each), fenced for the async proxy; the
// caller's __syncthreads then publishes them to the block.
__device__ __forceinline__ void initStageBarriers(uint64_t* full, uint64_t* empty, int stages, int consumers) {
  if (threadIdx.x != 0) return;
  for (int i = 0; i < stages; i++) {
    mbarInit(full + i, 1);
    if (empty) mbarInit(empty + i, consumers);
  }
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbarWait(uint64_t* bar, int parity) {
  asm volatile("{\n.reg .pred p;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra WAIT;\n}\n" ::"r"(
                   smemAddr(bar)),
               "r"(parity)
               : "memory");
}
// The box of map at (c0..c4) -> dst, completing on bar.
__device__ __forceinline__ void tmaLoad5(void* dst, const CUtensorMap* map, int c0, int c1, int c2, int c3, int c4,
                                         uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, %6}], "
      "[%7];\n" ::"r"(smemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(smemAddr(bar))
      : "memory");
}

// One page of KV head g (kvTensorMap's box: 64 dims x a page of keys) -> dst: K then V kvBytes
// apart, each as its two 64-dim halves of 128-byte rows halfBytes apart, completing on bar.
__device__ __forceinline__ void tmaKvPage(unsigned char* dst, const CUtensorMap* map, int g, int page,
                                          uint32_t kvBytes, uint32_t halfBytes, uint64_t* bar) {
#pragma unroll
  for (int kv = 0; kv < 2; kv++)
#pragma unroll
    for (int h = 0; h < 2; h++) tmaLoad5(dst + kv * kvBytes + h * halfBytes, map, h * 64, g, 0, kv, page, bar);
}

// The driver's cuTensorMapEncodeTiled (looked up once; attention-prefill-wgmma.cu): tensor maps are
// encoded on the host.
PFN_cuTensorMapEncodeTiled_v12000 tensorMapEncoder();

}  // namespace ms::cuda
