// SamplingExtras (backend.h) on the CUDA backend, host side: the planned device buffers (penalty
// state per slot, the extras buffer that eager steps and captured graphs read at fixed addresses,
// the logprob outputs) with their pinned staging, and the packing of one batch into them. The
// kernels that read them: logit-processing.h and sampling.h.
//
// Planned once (memory-plan.cc), for the largest step: capRows rows (maxNumSeqs, or the largest
// graph bucket when that is more), biasCap bias
// entries per window (a longer list goes in several windows, eager only), a mask row per row,
// histCap history entries per rebuild chunk, numSlots penalty slots (= maxNumSeqs; the engine
// keeps slot ids below it). Nothing is allocated in a step.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../backend.h"
#include "logit-processing.h"

namespace ms::cuda {

struct ExtrasCaps {
  int capRows = 0;     // rows of a step or graph bucket
  int vocab = 0;
  int numSlots = 0;    // penalty slots
  int biasCap = 1 << 16;   // bias entries in the buffer at once
  int histCap = 1 << 18;   // history entries per rebuild chunk
};

// What pack() put in the staging.
struct PackedExtras {
  int numRows = 0;      // rows packed (graphs: the bucket, padding rows without extras)
  int numBias = 0;      // bias entries of the whole batch
  int numMaskRows = 0;
  bool hasLogprobs = false;
};

class DeviceExtras {
 public:
  DeviceExtras() = default;
  ~DeviceExtras() { release(); }
  DeviceExtras(const DeviceExtras&) = delete;
  DeviceExtras& operator=(const DeviceExtras&) = delete;

  void allocate(const ExtrasCaps& caps);
  void release();
  const ExtrasCaps& caps() const { return caps_; }
  // The planned bytes on the device (penalty state included).
  size_t deviceBytes() const { return deviceBytes_; }

  // "" when the batch's extras fit the plan (slots below numSlots, rows below capRows).
  std::string check(const Batch& b) const;
  // Rebuilds the penalty slots of the batch's reset rows on `s` (eager, before the step's
  // kernels; a long history goes in chunks through the staging, waiting for each).
  void rebuildSlots(const Batch& b, cudaStream_t s);
  // Packs rows [0, numRows) into the staging (rows past b.numSeqs: no extras) and copies them,
  // the first bias window and the mask rows to the device on `s`.
  PackedExtras pack(const Batch& b, int numRows, cudaStream_t s);
  // Kernel arguments for rows [row0, row0 + rows) of the batch over `logits` (those rows), the
  // bias window that is on the device.
  ExtrasArgs args(float* logits, int row0, int rows, const int32_t* sampleParams, const int32_t* tokens) const;
  // Eager: applies the bias of rows [row0, row0 + rows) window by window (windows past the first
  // are staged and copied here; the stream is waited for before the staging is reused).
  void applyBiasWindows(ExtrasArgs a, cudaStream_t s);
  // The last pack(): a graph replays only when its bias fits one window.
  const PackedExtras& packed() const { return packed_; }
  // After the step's kernels: copies the logprob rows to the staging (async on s) ...
  void downloadLogprobs(const Batch& b, cudaStream_t s);
  // ... and, once the stream is done, into b.extras->logprobsOut / topIdsOut.
  void finishLogprobs(const Batch& b) const;

 private:
  void stageBiasWindow(int window, cudaStream_t s);

  ExtrasCaps caps_;
  int maskWords_ = 0;
  size_t deviceBytes_ = 0;
  // Device: one allocation. counts (numSlots, vocab) | params (capRows, kExtraInts) | bias tokens,
  // values (biasCap) | mask (capRows, maskWords) | out (capRows, kLogprobInts) | lse (capRows) f64
  // | history entries (histCap, 2).
  void* dev_ = nullptr;
  int32_t* counts_ = nullptr;
  int32_t* params_ = nullptr;
  int32_t* biasTok_ = nullptr;
  float* biasVal_ = nullptr;
  uint32_t* mask_ = nullptr;
  int32_t* out_ = nullptr;
  double* lse_ = nullptr;
  int32_t* hist_ = nullptr;
  // Pinned staging of the same regions (params, bias, mask, out, history).
  void* host_ = nullptr;
  int32_t* hParams_ = nullptr;
  int32_t* hBiasTok_ = nullptr;
  float* hBiasVal_ = nullptr;
  uint32_t* hMask_ = nullptr;
  int32_t* hOut_ = nullptr;
  int32_t* hHist_ = nullptr;
  // The batch's bias list, sorted by token within each row (stable); window w of it is entries
  // [w * biasCap, (w + 1) * biasCap).
  std::vector<int32_t> sortedTok_;
  std::vector<float> sortedVal_;
  std::vector<int> order_;
  int stagedWindow_ = -1;
  PackedExtras packed_;
};

}  // namespace ms::cuda
