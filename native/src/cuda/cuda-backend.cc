// CudaBackend: construction, weights, KV pages, memory. The forward pass is in model-forward.cc.
#include "cuda-backend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <regex>

#include "../common/model-util.h"
#include "../common/step-plan.h"
#include "check.h"
#include "sampling.h"

namespace ms::cuda {
namespace {

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// bf16 bytes of the weights a config needs (for the message when they do not fit).
size_t estimateWeightsBytes(const ModelConfig& m) {
  const size_t H = m.hidden, q = size_t(m.heads) * m.headDim, kvd = size_t(m.kvHeads) * m.headDim, I = m.intermediate;
  const size_t perLayer = (q + 2 * kvd) * H + H * q + 3 * I * H + 2 * H;
  return 2 * (size_t(m.layers) * perLayer + size_t(m.vocab) * H * (m.tiedEmbeddings ? 1 : 2) + H);
}

}  // namespace

CudaBackend::CudaBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, int device)
    : m_(m), kv_(kv), device_(device), opts_(o) {
  MS_CUDA_CHECK(cudaSetDevice(device_));
  size_t total = 0;
  MS_CUDA_CHECK(cudaMemGetInfo(&freeAtStart_, &total));
  plan_.isHost = false;
  plan_.deviceTotal = total;
  plan_.maxBatchTokens = o.maxBatchTokens;
  plan_.maxNumSeqs = plannedNumSeqs(o);
  plan_.maxContext = m.maxPositions > 0 ? m.maxPositions : kMaxGraphCtx;
  plan_.numPages = kv.numPages;
  plan_.pageSize = kv.pageSize;
  cudaDeviceProp prop;
  MS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  numSms_ = prop.multiProcessorCount;
  deviceName_ = "cuda:" + std::to_string(device_) + " (" + prop.name + ", sm_" + std::to_string(prop.major) +
                std::to_string(prop.minor) + ", " + std::to_string(numSms_) + " SMs)";
  graphsEnabled_ = opts_.cudaGraphs;
  pageElems_ = int64_t(m.layers) * 2 * kv.pageSize * m.kvHeads * m.headDim;
  pageBytes_ = size_t(pageElems_) * sizeof(bf16);
  MS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MS_CUDA_CHECK(cudaEventCreate(&evStart_));
  MS_CUDA_CHECK(cudaEventCreate(&evStop_));
  decodeAttentionInit();
  std::vector<float> inv = ropeInvFreq(m);
  MS_CUDA_CHECK(cudaMalloc(&invFreq_, inv.size() * sizeof(float)));
  MS_CUDA_CHECK(cudaMemcpy(invFreq_, inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice));
  try {
    weights_ = std::make_unique<DeviceWeights>(m);
  } catch (const CudaError& e) {
    if (!e.isOom()) throw;
    size_t freeNow = 0;
    cudaMemGetInfo(&freeNow, &total);
    throw DeviceMemoryError("the weights (" + std::to_string(estimateWeightsBytes(m) >> 20) + " MiB) do not fit: " +
                            std::to_string(freeNow >> 20) + " MiB free of " + std::to_string(total >> 20) + " MiB");
  }
  gemm_ = std::make_unique<Gemm>();
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  ipc_.reset();  // waits for the transfer stream, closes peer pools
  clearGraphs();
  for (cudaEvent_t e : profEvents_) cudaEventDestroy(e);
  freeArena(arena_);
  extras_.release();
  gemm_.reset();
  weights_.reset();
  if (hostMeta_) cudaFreeHost(hostMeta_);
  if (staging_) cudaFreeHost(staging_);
  for (cudaEvent_t e : evCopy_)
    if (e) cudaEventDestroy(e);
  if (pool_ && !poolIsSymmetric_) cudaFree(pool_);  // nvshmem_free is collective: the job keeps it
  if (invFreq_) cudaFree(invFreq_);
  if (evStart_) cudaEventDestroy(evStart_);
  if (evStop_) cudaEventDestroy(evStop_);
  if (stream_) cudaStreamDestroy(stream_);
}

// The page pool: cudaMalloc here, at finalize or first use, unless joinNvshmem (kv-nvshmem.cc)
// placed it in the NVSHMEM symmetric heap first. Zeroed so an unwritten page never feeds NaN
// into attention.
void CudaBackend::ensureKvPool() {
  if (pool_) return;
  if (kv_.numPages <= 0) throw CudaError("the KV pool is sized at finalize (kvPages auto)", false);
  size_t bytes = size_t(kv_.numPages + 1) * pageBytes_;
  MS_CUDA_CHECK(cudaMalloc(&pool_, bytes));
  MS_CUDA_CHECK(cudaMemset(pool_, 0, bytes));
}

void CudaBackend::allocArena(Arena& a, int capTokens, int capRows, size_t capPartial, size_t capMeta) {
  freeArena(a);
  const size_t H = m_.hidden, q = size_t(m_.heads) * m_.headDim, kvd = size_t(m_.kvHeads) * m_.headDim;
  const size_t I = m_.intermediate, T = capTokens;
  size_t sizes[] = {T * H * 4,     T * H * 2,           T * (q + 2 * kvd) * 2, T * q * 2,
                    T * 2 * I * 2, T * I * 2,           size_t(capRows) * m_.vocab * 4,
                    capPartial * 4, capPartial / m_.headDim * 2 * 4, capMeta * 4,
                    T * m_.kvHeads * 4, size_t(capRows) * kMaxArgmaxParts * 4,
                    size_t(capRows) * kMaxArgmaxParts * 4};
  size_t total = 0;
  for (size_t s : sizes) total += align256(s);
  char* p;
  MS_CUDA_CHECK(cudaMalloc(&p, total));
  a.mem = p;
  void** ptrs[] = {reinterpret_cast<void**>(&a.x),      reinterpret_cast<void**>(&a.xn),
                   reinterpret_cast<void**>(&a.qkv),    reinterpret_cast<void**>(&a.attn),
                   reinterpret_cast<void**>(&a.gu),     reinterpret_cast<void**>(&a.act),
                   reinterpret_cast<void**>(&a.logits), reinterpret_cast<void**>(&a.partO),
                   reinterpret_cast<void**>(&a.partML), reinterpret_cast<void**>(&a.meta),
                   reinterpret_cast<void**>(&a.counters), reinterpret_cast<void**>(&a.argmaxV),
                   reinterpret_cast<void**>(&a.argmaxI)};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    *ptrs[i] = p;
    p += align256(sizes[i]);
  }
  MS_CUDA_CHECK(cudaMemset(a.counters, 0, T * m_.kvHeads * 4));
  a.capTokens = capTokens;
  a.capRows = capRows;
  a.capPartial = capPartial;
  a.capMeta = capMeta;
}

void CudaBackend::freeArena(Arena& a) {
  if (a.mem) cudaFree(a.mem);
  a = Arena();
}

void CudaBackend::clearGraphs() {
  for (auto& [key, g] : graphs_) {
    if (g.exec) cudaGraphExecDestroy(g.exec);
    if (g.hostMeta) cudaFreeHost(g.hostMeta);
    if (g.devMeta) cudaFree(g.devMeta);
  }
  graphs_.clear();
}

Status CudaBackend::loadTensorRows(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                   int64_t rowBegin, const void* data, size_t numBytes) {
  return guarded([&] { return weights_->loadRows(name, dtype, shape, rowBegin, data, numBytes); });
}

Status CudaBackend::randomInit(uint64_t seed, float std) {
  return guarded([&] {
    weights_->randomInit(seed, std, stream_);
    return Status::Ok();
  });
}

Status CudaBackend::finalize() {
  return guarded([&] {
    if (finalized_) return Status::Error(Code::BAD_ARGUMENT, "finalize was already called");
    Status st = weights_->finalize();
    if (!st.ok()) return st;
    planMemory();
    finalized_ = true;
    return Status::Ok();
  });
}

Status CudaBackend::readPages(const int32_t* ids, int n, uint8_t* out) {
  return guarded([&] {
    ensureKvPool();
    for (int i = 0; i < n; i++)
      MS_CUDA_CHECK(cudaMemcpyAsync(out + size_t(i) * pageBytes_, pool_ + int64_t(ids[i]) * pageElems_, pageBytes_,
                                    cudaMemcpyDeviceToHost, stream_));
    MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return Status::Ok();
  });
}

Status CudaBackend::writePages(const int32_t* ids, int n, const uint8_t* in) {
  return guarded([&] {
    ensureKvPool();
    for (int i = 0; i < n; i++)
      MS_CUDA_CHECK(cudaMemcpyAsync(pool_ + int64_t(ids[i]) * pageElems_, in + size_t(i) * pageBytes_, pageBytes_,
                                    cudaMemcpyHostToDevice, stream_));
    MS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return Status::Ok();
  });
}

Status checkCudaBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o, int* device) {
  auto bad = [](Code c, const std::string& msg) { return Status::Error(c, msg); };
  std::smatch match;
  if (!std::regex_match(o.device, match, std::regex("cuda:([0-9]+)")))
    return bad(Code::BAD_ARGUMENT, "device '" + o.device + "' is not cuda:N");
  *device = std::stoi(match[1].str());
  if (m.vocab <= 0 || m.hidden <= 0 || m.intermediate <= 0 || m.layers <= 0 || m.heads <= 0 || m.kvHeads <= 0 ||
      m.heads % m.kvHeads != 0)
    return bad(Code::BAD_ARGUMENT, "invalid model config (sizes must be positive, heads % kvHeads == 0)");
  if (!isSupportedHeadDim(m.headDim))
    return bad(Code::BAD_ARGUMENT, "the CUDA backend supports headDim 16, 32, 64 or 128 (got " +
                                       std::to_string(m.headDim) + ")");
  if (!isSupportedGqa(m.heads / m.kvHeads))
    return bad(Code::BAD_ARGUMENT, "the CUDA backend supports heads / kvHeads from 1 to " + std::to_string(kMaxGqa) +
                                       " (got " + std::to_string(m.heads / m.kvHeads) + ")");
  if (m.hidden % 8 != 0 || m.intermediate % 8 != 0 || m.hidden > 16384)
    return bad(Code::BAD_ARGUMENT,
               "the CUDA backend needs hidden and intermediate sizes that are multiples of 8, hidden <= 16384");
  if (kv.numPages < 0 || kv.pageSize <= 0)
    return bad(Code::BAD_ARGUMENT, "numPages must be >= 0 (0 = auto) and pageSize positive");
  Status planSt = checkPlanOptions(o);
  if (!planSt.ok()) return planSt;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || *device >= count)
    return bad(Code::NO_DEVICE, "device '" + o.device + "' not found (" +
                                    (e != cudaSuccess ? std::string(cudaGetErrorString(e))
                                                      : std::to_string(count) + " CUDA devices") +
                                    ")");
  return Status::Ok();
}

}  // namespace ms::cuda

namespace ms {

std::unique_ptr<Backend> makeCudaBackend(const ModelConfig& m, const KvConfig& kv, const BackendOptions& o,
                                         Status* st) {
  return cuda::buildCudaBackend<cuda::CudaBackend>(m, kv, o, st);
}

void* allocPinnedHost(size_t bytes, int device) {
  void* p = nullptr;
  if (cudaSetDevice(device) != cudaSuccess || cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
    cudaGetLastError();  // no device (or no memory to lock): the caller stages in ordinary memory
    return nullptr;
  }
  return p;
}

void freePinnedHost(void* p) {
  if (p) cudaFreeHost(p);
}

}  // namespace ms
