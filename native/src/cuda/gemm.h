// Matrix products through cuBLASLt (the only file that needs its headers, so the kernels compile
// without them). Y (T, O) = X (T, K) . W (O, K)^T with X, W bf16 row-major, f32 accumulation.
#pragma once
#include <cstddef>
#include <map>
#include <tuple>

#include "kernels.h"

struct cublasLtContext;
typedef struct cublasLtContext* cublasLtHandle_t;

namespace ms::cuda {

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  // Captured into CUDA graphs as is: the workspace is fixed and no call allocates.
  void run(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s);
  // Times the heuristic's candidate algorithms (up to 8) for this shape on these buffers and keeps
  // the fastest for later runs; returns its time in ms. Not during graph capture.
  float tune(const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s);

 private:
  struct Plan;
  Plan& plan(int T, int O, int K, OutMode mode);
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspaceBytes_ = 0;
  std::map<std::tuple<int, int, int, int>, Plan*> plans_;
};

}  // namespace ms::cuda
