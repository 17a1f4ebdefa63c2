// KV transfer state of one CudaBackend: peer pools opened through CUDA IPC, the transfer stream,
// and the per-layer events of a forwardWithSend. The methods live in kv-ipc.cc.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace ms::cuda {

struct KvPeer {
  uint8_t handle[64] = {};
  void* base = nullptr;  // opened with cudaIpcOpenMemHandle
  int numPages = 0;
};

// A run of `len` consecutive source pages going to `len` consecutive destination pages.
struct PageRun {
  int64_t src = 0, dst = 0;
  int len = 0;
};

struct KvIpc {
  std::vector<KvPeer> peers;
  cudaStream_t xfer = nullptr;  // the transfer stream
  cudaEvent_t evBase = nullptr, evEnd = nullptr, evCopyA = nullptr, evCopyB = nullptr;
  std::vector<cudaEvent_t> evComputed, evCopyStart, evCopyEnd;  // per layer
  // The send of the forward in flight (afterLayer reads it); inactive outside forwardWithSend.
  bool sending = false;
  char* sendDst = nullptr;
  std::vector<PageRun> runs;

  ~KvIpc();
};

}  // namespace ms::cuda
