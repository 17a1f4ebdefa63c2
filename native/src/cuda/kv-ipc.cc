// CudaBackend's KV transfer over CUDA IPC: export this pool, open peers' pools (same GPU, other
// processes), copy pages between pools on a dedicated transfer stream, and the layer-by-layer
// send of forwardWithSend (afterLayer is called by runLayers after each layer's compute).
#include <cstdio>
#include <cstring>

#include "cuda-backend.h"

namespace ms::cuda {
namespace {

// Merges page pairs into runs where both sides are consecutive (one copy per run).
std::vector<PageRun> pageRuns(const int32_t* src, const int32_t* dst, int n) {
  std::vector<PageRun> runs;
  for (int i = 0; i < n; i++) {
    if (!runs.empty()) {
      PageRun& r = runs.back();
      if (src[i] == r.src + r.len && dst[i] == r.dst + r.len) {
        r.len++;
        continue;
      }
    }
    runs.push_back({src[i], dst[i], 1});
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
      if (std::memcmp(k.peers[i].handle, handle, kIpcHandleBytes) == 0) {
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

Status CudaBackend::copyPeerPages(int peerId, const int32_t* localPages, const int32_t* peerPages, int n, bool toPeer,
                                  float* gpuMs) {
  return guarded([&] {
    KvIpc& k = ipc();
    if (peerId < -1 || peerId >= int(k.peers.size()))
      return Status::Error(Code::BAD_ARGUMENT, "unknown peer pool " + std::to_string(peerId));
    int peerPages_ = peerId < 0 ? kv_.numPages : k.peers[peerId].numPages;
    for (int i = 0; i < n; i++) {
      if (localPages[i] < 0 || localPages[i] >= kv_.numPages || peerPages[i] < 0 || peerPages[i] >= peerPages_)
        return Status::Error(Code::BAD_ARGUMENT, "page pair " + std::to_string(i) + " is outside the pools");
    }
    char* local = reinterpret_cast<char*>(pool_);
    char* peer = peerId < 0 ? local : static_cast<char*>(k.peers[peerId].base);
    // Earlier work on the compute stream (the pages' KV) comes first.
    MS_CUDA_CHECK(cudaEventRecord(k.evCopyA, stream_));
    MS_CUDA_CHECK(cudaStreamWaitEvent(k.xfer, k.evCopyA, 0));
    MS_CUDA_CHECK(cudaEventRecord(k.evCopyA, k.xfer));
    for (const PageRun& r : pageRuns(localPages, peerPages, n)) {
      char* a = local + r.src * pageBytes_;
      char* b = peer + r.dst * pageBytes_;
      MS_CUDA_CHECK(cudaMemcpyAsync(toPeer ? b : a, toPeer ? a : b, size_t(r.len) * pageBytes_,
                                    cudaMemcpyDeviceToDevice, k.xfer));
    }
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
  const size_t off = size_t(layer) * layerBytes;
  const char* local = reinterpret_cast<const char*>(pool_);
  for (const PageRun& r : k.runs) {
    MS_CUDA_CHECK(cudaMemcpy2DAsync(k.sendDst + r.dst * pageBytes_ + off, pageBytes_, local + r.src * pageBytes_ + off,
                                    pageBytes_, layerBytes, size_t(r.len), cudaMemcpyDeviceToDevice, k.xfer));
  }
  MS_CUDA_CHECK(cudaEventRecord(k.evCopyEnd[layer], k.xfer));
}

Status CudaBackend::forwardWithSend(const Batch& b, float* logitsOut, const LayerSend& send,
                                    std::vector<float>* timeline) {
  return guarded([&] {
    if (!finalized_) return Status::Error(Code::NATIVE_ERROR, "forward before finalize");
    KvIpc& k = ipc();
    if (send.n > 0) {
      if (send.peerId < -1 || send.peerId >= int(k.peers.size()))
        return Status::Error(Code::BAD_ARGUMENT, "unknown peer pool " + std::to_string(send.peerId));
      int peerPages = send.peerId < 0 ? kv_.numPages : k.peers[send.peerId].numPages;
      for (int i = 0; i < send.n; i++)
        if (send.srcPages[i] < 0 || send.srcPages[i] >= kv_.numPages || send.dstPages[i] < 0 ||
            send.dstPages[i] >= peerPages)
          return Status::Error(Code::BAD_ARGUMENT, "send page pair " + std::to_string(i) + " is outside the pools");
    }
    k.runs = pageRuns(send.srcPages, send.dstPages, send.n);
    k.sendDst = send.peerId < 0 ? reinterpret_cast<char*>(pool_) : static_cast<char*>(k.peers[send.peerId].base);
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
