// KV transfer state of one CudaBackend: peer pools (opened through CUDA IPC, or PEs of this
// process's NVSHMEM job), the transfer stream, and the per-layer events of a forwardWithSend.
// The methods live in kv-ipc.cc; the NVSHMEM calls in kv-nvshmem.cc.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ms::cuda {

struct KvPeer {
  uint8_t handle[64] = {};  // CUDA IPC peers
  void* base = nullptr;     // the peer pool as a local address (IPC mapping or nvshmem_ptr), or null
  int numPages = 0;
  int pe = -1;              // NVSHMEM peers: the PE; base == null means puts (nvshmemx_putmem_on_stream)
};

// A run of `len` consecutive source pages going to `len` consecutive destination pages of one peer.
struct PageRun {
  int64_t src = 0, dst = 0;
  int len = 0;
  int peer = -1;  // -1: this pool
};

struct KvIpc {
  std::vector<KvPeer> peers;
  cudaStream_t xfer = nullptr;  // the transfer stream
  cudaEvent_t evBase = nullptr, evEnd = nullptr, evCopyA = nullptr, evCopyB = nullptr;
  std::vector<cudaEvent_t> evComputed, evCopyStart, evCopyEnd;  // per layer
  // The send of the forward in flight (afterLayer reads it); inactive outside forwardWithSend.
  bool sending = false;
  std::vector<PageRun> runs;

  ~KvIpc();
};

// kv-nvshmem.cc. Symmetric-heap transfers of `bytes` between this PE's `local` and the same
// symmetric address on `pe` (put: local -> pe), queued on `s`; quiet completes them on `s`.
// Without NVSHMEM in the build they throw.
void nvshmemCopy(void* symAddr, const void* local, size_t bytes, int pe, bool put, cudaStream_t s);
void nvshmemQuiet(cudaStream_t s);
// Whether this process joined an NVSHMEM job and the pool lives in its symmetric heap.
bool nvshmemJoined();

}  // namespace ms::cuda
