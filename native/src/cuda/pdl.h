// Programmatic dependent launch (sm_90): a kernel launched with launchPdl may start while the
// kernel before it in the stream is still finishing. It must call pdlWait() in every block before
// touching anything the earlier kernel writes (and before exiting, so completion stays ordered);
// work that depends on nothing before it (streaming weights into registers) can go first, which
// hides the gap between dependent kernels. pdlTrigger() lets the next kernel be scheduled.
// Both are no-ops when the kernel was launched normally.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "check.h"
#include "pdl-scope.h"

namespace ms::cuda {

__device__ __forceinline__ void pdlWait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdlTrigger() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

// Clusters of clusterX blocks of kernel (threads a block, smem bytes of dynamic shared memory) the
// device holds at once; 0 where it cannot run them.
template <class... KernelArgs>
int maxActiveClusters(void (*kernel)(KernelArgs...), int clusterX, int threads, size_t smem) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(clusterX));
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(clusterX), attr[0].val.clusterDim.y = 1, attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) n = 0;
  cudaGetLastError();  // an unsupported size is an answer, not an error
  return n;
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
