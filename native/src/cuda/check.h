// Error checking for the CUDA backend: every runtime call and every kernel launch is checked with
// its file and line. Failures throw CudaError; the backend's public methods turn it into a Status.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "../backend.h"

namespace ms::cuda {

class CudaError : public std::runtime_error {
 public:
  CudaError(const std::string& what, bool isOom) : std::runtime_error(what), isOom_(isOom) {}
  bool isOom() const { return isOom_; }

 private:
  bool isOom_;
};

// A backend Status carried through the exception path (e.g. a mask gate's MASK_TIMEOUT), so its
// code reaches the caller unchanged.
class StatusError : public std::runtime_error {
 public:
  StatusError(Code code, const std::string& what) : std::runtime_error(what), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

[[noreturn]] inline void throwCuda(cudaError_t e, const char* expr, const char* file, int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + expr + ": " + cudaGetErrorName(e) + " (" +
                      cudaGetErrorString(e) + ")",
                  e == cudaErrorMemoryAllocation);
}

}  // namespace ms::cuda

// Checks a CUDA runtime call.
#define MS_CUDA_CHECK(expr)                                                         \
  do {                                                                              \
    cudaError_t ms_err_ = (expr);                                                   \
    if (ms_err_ != cudaSuccess) ::ms::cuda::throwCuda(ms_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Checks the launch just made (configuration errors; faults show up at the next sync).
#define MS_LAUNCH_CHECK(name)                                                        \
  do {                                                                               \
    cudaError_t ms_err_ = cudaGetLastError();                                        \
    if (ms_err_ != cudaSuccess) ::ms::cuda::throwCuda(ms_err_, name, __FILE__, __LINE__); \
  } while (0)
