// NVSHMEM for the KV page pool, through the host library only (no MPI, no nvshmrun, no device
// library): a unique-id bootstrap (rank 0 makes the id, every member joins with it), the page
// pool in the symmetric heap (nvshmem_malloc), and peers addressed by PE. A peer the GPU can
// reach by load/store (nvshmem_ptr: the same GPU, or NVLink) is copied with cudaMemcpy* on the
// transfer stream; otherwise with nvshmemx_putmem_on_stream / getmem, completed by
// nvshmemx_quiet_on_stream. Built with NVSHMEM where its headers exist (MS_WITH_NVSHMEM);
// elsewhere the same entry points answer NO_DEVICE.
//
// One job per process, fixed at init: NVSHMEM is never finalized here (finalize and nvshmem_free
// are collective; an engine leaving alone would hang), the process exit ends its membership.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda-backend.h"

#ifdef MS_WITH_NVSHMEM
#include <nvshmem.h>
#include <nvshmemx.h>
#endif

namespace ms {
namespace {
bool gJoined = false;  // this process is a PE of a job (one per process)
}  // namespace

#ifdef MS_WITH_NVSHMEM
static_assert(sizeof(nvshmemx_uniqueid_t) == kNvshmemUidBytes, "nvshmemx_uniqueid_t size");

Status nvshmemUniqueId(uint8_t* out) {
  nvshmemx_uniqueid_t uid = NVSHMEMX_UNIQUEID_INITIALIZER;
  int rc = nvshmemx_get_uniqueid(&uid);
  if (rc != 0) return Status::Error(Code::NATIVE_ERROR, "nvshmemx_get_uniqueid failed (rc " + std::to_string(rc) + ")");
  std::memcpy(out, &uid, sizeof uid);
  return Status::Ok();
}
#else
Status nvshmemUniqueId(uint8_t*) {
  return Status::Error(Code::NO_DEVICE, "this build has no NVSHMEM (it needs the CUDA backend and NVSHMEM headers)");
}
#endif

namespace cuda {

bool nvshmemJoined() { return gJoined; }

#ifdef MS_WITH_NVSHMEM
void nvshmemCopy(void* symAddr, const void* local, size_t bytes, int pe, bool put, cudaStream_t s) {
  if (put)
    nvshmemx_putmem_on_stream(symAddr, local, bytes, pe, s);
  else
    nvshmemx_getmem_on_stream(const_cast<void*>(local), symAddr, bytes, pe, s);
}

void nvshmemQuiet(cudaStream_t s) { nvshmemx_quiet_on_stream(s); }

Status CudaBackend::joinNvshmem(const uint8_t* uid, int rank, int nranks, NvshmemInfo* info) {
  return guarded([&] {
    if (gJoined) return Status::Error(Code::BAD_ARGUMENT, "this process already joined an NVSHMEM job");
    if (finalized_ || pool_) return Status::Error(Code::BAD_ARGUMENT, "joinNvshmem must come before finalize");
    if (kv_.numPages <= 0)
      return Status::Error(Code::BAD_ARGUMENT, "kvPages auto cannot join an NVSHMEM job: its members need equal pools "
                                               "fixed before the weights load (set kvPages)");
    if (nranks < 1 || rank < 0 || rank >= nranks)
      return Status::Error(Code::BAD_ARGUMENT, "rank " + std::to_string(rank) + " of " + std::to_string(nranks));
    // The symmetric heap must hold the pool (NVSHMEM's default is 1 GiB): the caller sets
    // NVSHMEM_SYMMETRIC_SIZE first (native/index.ts, from nvshmemHeapBytes: the pool + 256 MiB).
    const size_t bytes = size_t(kv_.numPages + 1) * pageBytes_;
    nvshmemx_uniqueid_t id;
    std::memcpy(&id, uid, sizeof id);
    nvshmemx_init_attr_t attr = NVSHMEMX_INIT_ATTR_INITIALIZER;
    int rc = nvshmemx_set_attr_uniqueid_args(rank, nranks, &id, &attr);
    if (rc != 0) return Status::Error(Code::NATIVE_ERROR, "nvshmemx_set_attr_uniqueid_args failed (rc " + std::to_string(rc) + ")");
    auto t0 = std::chrono::steady_clock::now();
    rc = nvshmemx_hostlib_init_attr(NVSHMEMX_INIT_WITH_UNIQUEID, &attr);
    if (rc != 0) return Status::Error(Code::NATIVE_ERROR, "NVSHMEM init failed (rc " + std::to_string(rc) + ")");
    gJoined = true;
    info->initMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    info->pe = nvshmem_my_pe();
    info->npes = nvshmem_n_pes();
    info->initStatus = nvshmemx_init_status();
    void* p = nvshmem_malloc(bytes);  // collective: every member allocates the same size
    if (!p) return Status::Error(Code::OUT_OF_MEMORY, "nvshmem_malloc of the KV pool (" + std::to_string(bytes) + " bytes) failed");
    pool_ = static_cast<bf16*>(p);
    poolIsSymmetric_ = true;
    MS_CUDA_CHECK(cudaMemset(pool_, 0, bytes));
    MS_CUDA_CHECK(cudaDeviceSynchronize());
    nvshmem_barrier_all();  // every pool exists and is zeroed before anyone writes into it
    return Status::Ok();
  });
}

Status CudaBackend::openNvshmemPeer(int pe, int* peerId, bool* direct) {
  return guarded([&] {
    if (!gJoined || !poolIsSymmetric_) return Status::Error(Code::BAD_ARGUMENT, "this engine is not in an NVSHMEM job");
    if (pe < 0 || pe >= nvshmem_n_pes())
      return Status::Error(Code::BAD_ARGUMENT, "PE " + std::to_string(pe) + " is not in this job of " + std::to_string(nvshmem_n_pes()));
    KvIpc& k = ipc();
    for (size_t i = 0; i < k.peers.size(); i++) {
      if (k.peers[i].pe == pe) {
        *peerId = int(i);
        *direct = k.peers[i].base != nullptr;
        return Status::Ok();
      }
    }
    KvPeer p;
    p.pe = pe;
    p.numPages = kv_.numPages;  // symmetric: every member's pool has this many pages
    // BackendOptions::nvshmemPut forces one-sided puts even where a direct pointer exists (benchmarks).
    if (!opts_.nvshmemPut) p.base = nvshmem_ptr(pool_, pe);
    k.peers.push_back(p);
    *peerId = int(k.peers.size() - 1);
    *direct = p.base != nullptr;
    return Status::Ok();
  });
}
#else
[[noreturn]] static void noNvshmem() { throw std::runtime_error("this build has no NVSHMEM"); }
void nvshmemCopy(void*, const void*, size_t, int, bool, cudaStream_t) { noNvshmem(); }
void nvshmemQuiet(cudaStream_t) { noNvshmem(); }

Status CudaBackend::joinNvshmem(const uint8_t*, int, int, NvshmemInfo*) {
  return Status::Error(Code::NO_DEVICE, "this build has no NVSHMEM (headers not found when it was built)");
}
Status CudaBackend::openNvshmemPeer(int, int*, bool*) {
  return Status::Error(Code::NO_DEVICE, "this build has no NVSHMEM (headers not found when it was built)");
}
#endif

}  // namespace cuda
}  // namespace ms
