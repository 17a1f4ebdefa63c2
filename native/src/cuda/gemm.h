// Matrix products through cuBLASLt (the only file that needs its headers, so the kernels compile
// without them). Y (T, O) = X (T, K) . W (O, K)^T with X, W bf16 row-major, f32 accumulation.
#pragma once
#include <cstddef>
#include <map>
#include <tuple>
#include <vector>

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

  // What tune() kept for a shape: its time, and which candidate it is (rank in the heuristic's
  // list, and the split-K count tune() set on it, 0 when the heuristic's configuration ran as is).
  struct Choice {
    float ms = 0.f;
    int rank = 0;
    int splitK = 0;
  };
  // Times the candidates for this shape on these buffers and keeps the fastest for later runs:
  // the heuristic's top algorithms (up to 8) as they come, and with splitK its best few again with
  // the dot product split in 2..16 parts (cuBLASLt's split-K with the parts reduced in f32 in the
  // workspace by a separate step: deterministic, the f32 sum order is fixed per configuration; only
  // configurations cublasLtMatmulAlgoCheck accepts within the fixed workspace). Not during capture.
  // Ws: copies of the weight (one per layer) taken in turn, so no timed run finds its weight in L2.
  Choice tune(const bf16* X, int T, const std::vector<const bf16*>& Ws, int O, int K, void* Y, OutMode mode,
              cudaStream_t s, bool splitK = false);
  // Makes candidate (rank in the heuristic's list, split-K count) this shape's choice, as tune()
  // would have kept it (a run recorded what another run's tune() chose: bench/gpu/profile.sh).
  // False when this run has no such candidate (the heuristic listed other algorithms).
  bool pin(int T, int O, int K, OutMode mode, int rank, int splitK);
  // Kernel checks: the number of candidates tune() would time for this shape (with splitK), and one
  // run of candidate i (false where cuBLASLt refuses it at run time); the plan keeps its choice.
  int numCandidates(int T, int O, int K, OutMode mode);
  bool runCandidate(int i, const bf16* X, int T, const bf16* W, int O, int K, void* Y, OutMode mode, cudaStream_t s,
                    Choice* what = nullptr);
  // Bytes of the fixed workspace (split-K partials live there): allocated at construction, before
  // the engine's memory plan measures what the backend holds.
  size_t workspaceBytes() const { return workspaceBytes_; }

 private:
  struct Plan;
  Plan& plan(int T, int O, int K, OutMode mode);
  void addSplitKCandidates(Plan& p, int K);
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspaceBytes_ = 0;
  std::map<std::tuple<int, int, int, int>, Plan*> plans_;
};

}  // namespace ms::cuda
