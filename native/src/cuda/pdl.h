// Programmatic dependent launch (sm_90): a kernel launched with launchPdl may start while the
// kernel before it in the stream is still finishing. It must call pdlWait() in every block before
// touching anything the earlier kernel writes (and before exiting, so completion stays ordered);
// work that depends on nothing before it (streaming weights into registers) can go first, which
// hides the gap between dependent kernels. pdlTrigger() lets the next kernel be scheduled.
// Both are no-ops when the kernel was launched normally.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "check.h"

namespace ms::cuda {

__device__ __forceinline__ void pdlWait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdlTrigger() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

// Prefetches [ptr, ptr + bytes) into L2 in 128-byte lines, `worker` of `numWorkers` threads.
__device__ __forceinline__ void prefetchL2(const void* ptr, size_t bytes, size_t worker, size_t numWorkers) {
  const char* base = static_cast<const char*>(ptr);
  for (size_t off = worker * 128; off < bytes; off += numWorkers * 128)
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(base + off));
}

// [default on] MS_PDL=0 launches normally (for measuring what PDL is worth); read per launch.
inline bool pdlEnabled() {
  const char* v = std::getenv("MS_PDL");
  return !(v && v[0] == '0');
}

// launchPdl, with the grid's x dimension in thread-block clusters of clusterX blocks (0: none).
template <class... KernelArgs, class... Args>
void launchPdlCluster(const char* name, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t s, int clusterX, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdlEnabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (clusterX > 0) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = unsigned(clusterX);
    attr[n].val.clusterDim.y = 1;
    attr[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) throwCuda(e, name, __FILE__, __LINE__);
  MS_LAUNCH_CHECK(name);
}

template <class... KernelArgs, class... Args>
void launchPdl(const char* name, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
               Args&&... args) {
  launchPdlCluster(name, kernel, grid, block, smem, s, 0, std::forward<Args>(args)...);
}

}  // namespace ms::cuda
