// CudaBackend's KV transfer between page pools: export this pool over CUDA IPC, open peers' pools
// (CUDA IPC handles of other processes on the GPU, or PEs of this process's NVSHMEM job), copy
// pages between pools on a dedicated transfer stream, and the layer-by-layer send of
// forwardWithSend (afterLayer is called by runLayers after each layer's compute). A peer with a
// local address is copied with cudaMemcpy*; an NVSHMEM peer without one with one-sided puts.
#include <cstdio>
#include <cstring>

#include "../common/step-plan.h"
#include "cuda-backend.h"

namespace ms::cuda {
namespace {

// Merges page pairs into runs where both sides are consecutive and the peer is the same (one
// copy per run). peerIds null: every pair goes to `peer`.
std::vector<PageRun> pageRuns(const int32_t* src, const int32_t* dst, const int32_t* peerIds, int peer, int n) {
  std::vector<PageRun> runs;
  for (int i = 0; i < n; i++) {
    int p = peerIds ? peerIds[i] : peer;
    if (!runs.empty()) {
      PageRun& r = runs.back();
      if (p == r.peer && src[i] == r.src + r.len && dst[i] == r.dst + r.len) {
        r.len++;
        continue;
      }
    }
    runs.push_back({src[i], dst[i], 1, p});
  }
  return runs;
}

float elapsed(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  MS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

}  // namespace

KvIpc::~KvIpc() {
  if (xfer) cudaStreamSynchronize(xfer);
  for (KvPeer& p : peers)
    if (p.base) cudaIpcCloseMemHandle(p.base);
  for (cudaEvent_t e : {evBase, evEnd, evCopyA, evCopyB})
    if (e) cudaEventDestroy(e);
  for (auto* v : {&evComputed, &evCopyStart, &evCopyEnd})
    for (cudaEvent_t e : *v) cudaEventDestroy(e);
  if (xfer) cudaStreamDestroy(xfer);
}

KvIpc& CudaBackend::ipc() {
  if (ipc_) return *ipc_;
  auto k = std::make_unique<KvIpc>();
  MS_CUDA_CHECK(cudaStreamCreateWithFlags(&k->xfer, cudaStreamNonBlocking));
  for (cudaEvent_t* e : {&k->evBase, &k->evEnd, &k->evCopyA, &k->evCopyB}) MS_CUDA_CHECK(cudaEventCreate(e));
  for (auto* v : {&k->evComputed, &k->evCopyStart, &k->evCopyEnd}) {
    v->resize(m_.layers);
    for (cudaEvent_t& e : *v) MS_CUDA_CHECK(cudaEventCreate(&e));
  }
  ipc_ = std::move(k);
  return *ipc_;
}

Status CudaBackend::exportKvPool(uint8_t* handle, std::string* deviceUuid) {
  return guarded([&] {
    ensureKvPool();
    if (nvshmemJoined())
      return Status::Error(Code::NO_DEVICE, "the KV pool is in the NVSHMEM symmetric heap: CUDA IPC cannot export it");
    cudaIpcMemHandle_t h;
    MS_CUDA_CHECK(cudaIpcGetMemHandle(&h, pool_));
    static_assert(sizeof h == kIpcHandleBytes, "cudaIpcMemHandle_t size");
    std::memcpy(handle, &h, sizeof h);
    cudaDeviceProp prop;
    MS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    char hex[33];
    for (int i = 0; i < 16; i++) std::snprintf(hex + 2 * i, 3, "%02x", unsigned(uint8_t(prop.uuid.bytes[i])));
    *deviceUuid = hex;
    return Status::Ok();
  });
}

Status CudaBackend::openPeerPool(const uint8_t* handle, int peerNumPages, int* peerId) {
  return guarded([&] {
    KvIpc& k = ipc();
    for (size_t i = 0; i < k.peers.size(); i++) {
      if (k.peers[i].pe < 0 && std::memcmp(k.peers[i].handle, handle, kIpcHandleBytes) == 0) {
        k.peers[i].numPages = peerNumPages;
        *peerId = int(i);
        return Status::Ok();
      }
    }
    KvPeer p;
    std::memcpy(p.handle, handle, kIpcHandleBytes);
    cudaIpcMemHandle_t h;
    std::memcpy(&h, handle, sizeof h);
    MS_CUDA_CHECK(cudaIpcOpenMemHandle(&p.base, h, cudaIpcMemLazyEnablePeerAccess));
    p.numPages = peerNumPages;
    k.peers.push_back(p);
    *peerId = int(k.peers.size() - 1);
    return Status::Ok();
  });
}

Status CudaBackend::checkPairs(const int32_t* localPages, const int32_t* peerPages, const int32_t* peerIds, int peer,
                               int n, const char* what) {
  KvIpc& k = ipc();
  for (int i = 0; i < n; i++) {
    int p = peerIds ? peerIds[i] : peer;
    if (p < -1 || p >= int(k.peers.size())) return Status::Error(Code::BAD_ARGUMENT, "unknown peer pool " + std::to_string(p));
    int peerPages_ = p < 0 ? kv_.numPages : k.peers[p].numPages;
    if (localPages[i] < 0 || localPages[i] >= kv_.numPages || peerPages[i] < 0 || peerPages[i] >= peerPages_)
      return Status::Error(Code::BAD_ARGUMENT, std::string(what) + " " + std::to_string(i) + " is outside the pools");
  }
  return Status::Ok();
}

// Queues run r's slice [off, off + width) of each page (width == pageBytes_: whole pages) between
// this pool and its peer on the transfer stream. Returns whether it used NVSHMEM puts/gets.
bool CudaBackend::issueRun(const PageRun& r, size_t off, size_t width, bool toPeer) {
  KvIpc& k = *ipc_;
  char* local = reinterpret_cast<char*>(pool_);
  const KvPeer* peer = r.peer < 0 ? nullptr : &k.peers[r.peer];
  if (!peer || peer->base) {
    char* a = local + r.src * pageBytes_ + off;
    char* b = (peer ? static_cast<char*>(peer->base) : local) + r.dst * pageBytes_ + off;
    if (width == pageBytes_)
      MS_CUDA_CHECK(cudaMemcpyAsync(toPeer ? b : a, toPeer ? a : b, size_t(r.len) * pageBytes_, cudaMemcpyDeviceToDevice, k.xfer));
    else
      MS_CUDA_CHECK(cudaMemcpy2DAsync(toPeer ? b : a, pageBytes_, toPeer ? a : b, pageBytes_, width, size_t(r.len),
                                      cudaMemcpyDeviceToDevice, k.xfer));
    return false;
  }
  // NVSHMEM one-sided: the peer's page lives at our pool's address of the same page (symmetric heap).
  if (width == pageBytes_) {
    nvshmemCopy(local + r.dst * pageBytes_, local + r.src * pageBytes_, size_t(r.len) * pageBytes_, peer->pe, toPeer, k.xfer);
  } else {
    for (int i = 0; i < r.len; i++)
      nvshmemCopy(local + (r.dst + i) * pageBytes_ + off, local + (r.src + i) * pageBytes_ + off, width, peer->pe, toPeer,
                  k.xfer);
  }
  return true;
}

Status CudaBackend::copyPeerPages(int peerId, const int32_t* localPages, const int32_t* peerPages, int n, bool toPeer,
                                  float* gpuMs) {
  return guarded([&] {
    ensureKvPool();
    KvIpc& k = ipc();
    Status st = checkPairs(localPages, peerPages, nullptr, peerId, n, "page pair");
    if (!st.ok()) return st;
    // Earlier work on the compute stream (the pages' KV) comes first.
    MS_CUDA_CHECK(cudaEventRecord(k.evCopyA, stream_));
    MS_CUDA_CHECK(cudaStreamWaitEvent(k.xfer, k.evCopyA, 0));
    MS_CUDA_CHECK(cudaEventRecord(k.evCopyA, k.xfer));
    bool usedPuts = false;
    for (const PageRun& r : pageRuns(localPages, peerPages, nullptr, peerId, n)) usedPuts |= issueRun(r, 0, pageBytes_, toPeer);
    if (usedPuts) nvshmemQuiet(k.xfer);
    MS_CUDA_CHECK(cudaEventRecord(k.evCopyB, k.xfer));
    MS_CUDA_CHECK(cudaStreamSynchronize(k.xfer));
    if (gpuMs) *gpuMs = elapsed(k.evCopyA, k.evCopyB);
    return Status::Ok();
  });
}

void CudaBackend::afterLayer(int layer, cudaStream_t s) {
  if (!ipc_ || !ipc_->sending) return;
  KvIpc& k = *ipc_;
  MS_CUDA_CHECK(cudaEventRecord(k.evComputed[layer], s));
  MS_CUDA_CHECK(cudaStreamWaitEvent(k.xfer, k.evComputed[layer], 0));
  MS_CUDA_CHECK(cudaEventRecord(k.evCopyStart[layer], k.xfer));
  const size_t layerBytes = pageBytes_ / size_t(m_.layers);
  for (const PageRun& r : k.runs) sendUsedPuts_ |= issueRun(r, size_t(layer) * layerBytes, layerBytes, true);
  MS_CUDA_CHECK(cudaEventRecord(k.evCopyEnd[layer], k.xfer));
}

Status CudaBackend::forwardWithSend(const Batch& b, float* logitsOut, const LayerSend& send,
                                    std::vector<float>* timeline) {
  return guarded([&] {
    Status st = checkForward(b, logitsOut);
    if (!st.ok()) return st;
    KvIpc& k = ipc();
    st = checkPairs(send.srcPages, send.dstPages, send.peerIds, send.peerId, send.n, "send page pair");
    if (!st.ok()) return st;
    k.runs = pageRuns(send.srcPages, send.dstPages, send.peerIds, send.peerId, send.n);
    sendUsedPuts_ = false;
    MS_CUDA_CHECK(cudaEventRecord(k.evBase, stream_));
    MS_CUDA_CHECK(cudaStreamWaitEvent(k.xfer, k.evBase, 0));
    k.sending = true;
    try {
      forwardEager(b, logitsOut);  // always eager: a replayed graph has no per-layer hooks
    } catch (...) {
      k.sending = false;
      cudaStreamSynchronize(k.xfer);
      throw;
    }
    k.sending = false;
    MS_CUDA_CHECK(cudaEventRecord(k.evEnd, stream_));
    if (sendUsedPuts_) nvshmemQuiet(k.xfer);
    MS_CUDA_CHECK(cudaEventRecord(k.evCopyB, k.xfer));
    MS_CUDA_CHECK(cudaStreamSynchronize(k.xfer));
    MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (timeline) {
      timeline->clear();
      for (int l = 0; l < m_.layers; l++) {
        timeline->push_back(elapsed(k.evBase, k.evComputed[l]));
        timeline->push_back(elapsed(k.evBase, k.evCopyStart[l]));
        timeline->push_back(elapsed(k.evBase, k.evCopyEnd[l]));
      }
      timeline->push_back(elapsed(k.evBase, k.evEnd));
      timeline->push_back(elapsed(k.evBase, k.evCopyB));
    }
    return Status::Ok();
  });
}

}  // namespace ms::cuda
