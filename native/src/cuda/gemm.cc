#include "gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <string>
#include <vector>

#include "check.h"

#define MS_CUBLAS_CHECK(expr)                                                                          \
  do {                                                                                                 \
    cublasStatus_t ms_st_ = (expr);                                                                    \
    if (ms_st_ != CUBLAS_STATUS_SUCCESS)                                                               \
      throw ::ms::cuda::CudaError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #expr \
                                  ": cublas status " + std::to_string(int(ms_st_)),                   \
                                  ms_st_ == CUBLAS_STATUS_ALLOC_FAILED);                               \
  } while (0)

namespace ms::cuda {

// cuBLASLt is column-major: row-major Y (T, O) is column-major (O, T) = W (O, K) . X^T (K, T),
// with W read as the transpose of its column-major (K, O) view.
struct Gemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo;
  std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's top results, best first
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

Gemm::Gemm() {
  MS_CUBLAS_CHECK(cublasLtCreate(&handle_));
  workspaceBytes_ = size_t(64) << 20;
  MS_CUDA_CHECK(cudaMalloc(&workspace_, workspaceBytes_));
}

Gemm::~Gemm() {
  for (auto& [key, p] : plans_) delete p;
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

Gemm::Plan& Gemm::plan(int T, int O, int K, OutMode mode) {
  auto key = std::make_tuple(T, O, K, int(mode));
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  if (plans_.size() > 512) {  // prefill lengths vary: keep the cache bounded
    for (auto& [k, p] : plans_) delete p;
    plans_.clear();
  }
  Plan* p = new Plan();
  try {
    cudaDataType_t outType = mode == OutMode::Bf16 ? CUDA_R_16BF : CUDA_R_32F;
    MS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    MS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    MS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, K, O, K));
    MS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, K, T, K));
    MS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, outType, O, T, O));
    cublasLtMatmulPreference_t pref;
    MS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspaceBytes_,
                                         sizeof workspaceBytes_);
    cublasLtMatmulHeuristicResult_t res[8];
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->c, p->c, pref, 8, res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      throw CudaError("cuBLASLt has no algorithm for T=" + std::to_string(T) + " O=" + std::to_string(O) +
                          " K=" + std::to_string(K),
                      false);
    p->algo = res[0].algo;
    for (int i = 0; i < found; i++) p->candidates.push_back(res[i].algo);
  } catch (...) {
    delete p;
    throw;
  }
  plans_[key] = p;
  return *p;
}

void Gemm::run(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  if (T == 0) return;
  Plan& p = plan(T, O, K, mode);
  const float alpha = 1.f, beta = mode == OutMode::F32Add ? 1.f : 0.f;
  MS_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, W, p.a, X, p.b, &beta, Y, p.c, Y, p.c, &p.algo, workspace_,
                                 workspaceBytes_, s));
}

float Gemm::tune(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s) {
  Plan& p = plan(T, O, K, mode);
  const float alpha = 1.f, beta = mode == OutMode::F32Add ? 1.f : 0.f;
  cudaEvent_t a, b;
  MS_CUDA_CHECK(cudaEventCreate(&a));
  MS_CUDA_CHECK(cudaEventCreate(&b));
  float best = 1e30f;
  for (const cublasLtMatmulAlgo_t& algo : p.candidates) {
    auto once = [&] {
      return cublasLtMatmul(handle_, p.op, &alpha, W, p.a, X, p.b, &beta, Y, p.c, Y, p.c, &algo, workspace_,
                            workspaceBytes_, s);
    };
    if (once() != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that cannot run this shape
    std::vector<float> t;
    for (int i = 0; i < 3; i++) {
      MS_CUDA_CHECK(cudaEventRecord(a, s));
      MS_CUBLAS_CHECK(once());
      MS_CUDA_CHECK(cudaEventRecord(b, s));
      MS_CUDA_CHECK(cudaEventSynchronize(b));
      float ms;
      MS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    if (t[1] < best) {
      best = t[1];
      p.algo = algo;
    }
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}

}  // namespace ms::cuda
