// The one check of a step against the memory plan, shared by every backend: a batch past the
// planned caps (tokens, sequences, context) is refused with OVER_PLAN before anything runs, so a
// backend never has to grow a buffer in the step path.
#pragma once
#include <string>

#include "../backend.h"

namespace ms {

inline Status checkStepPlan(const Batch& b, const MemoryPlan& p) {
  auto over = [&](const std::string& what) {
    return Status::Error(Code::OVER_PLAN, "step over the memory plan: " + what +
                                              " (plan: maxBatchTokens " + std::to_string(p.maxBatchTokens) +
                                              ", maxNumSeqs " + std::to_string(p.maxNumSeqs) + ", maxContext " +
                                              std::to_string(p.maxContext) + ")");
  };
  if (b.numTokens > p.maxBatchTokens)
    return over(std::to_string(b.numTokens) + " tokens > maxBatchTokens " + std::to_string(p.maxBatchTokens));
  if (b.numSeqs > p.maxNumSeqs)
    return over(std::to_string(b.numSeqs) + " sequences > maxNumSeqs " + std::to_string(p.maxNumSeqs));
  for (int s = 0; s < b.numSeqs; s++) {
    const long long end = (long long)b.startPos[s] + b.seqLens[s];
    if (end > p.maxContext)
      return over("sequence " + std::to_string(s) + " reaches position " + std::to_string(end) + " > maxContext " +
                  std::to_string(p.maxContext));
  }
  return Status::Ok();
}

// BAD_ARGUMENT naming the option unless the caps are usable.
inline Status checkPlanOptions(const BackendOptions& o) {
  if (o.maxBatchTokens < 1) return Status::Error(Code::BAD_ARGUMENT, "maxBatchTokens must be >= 1");
  if (o.maxNumSeqs < 1) return Status::Error(Code::BAD_ARGUMENT, "maxNumSeqs must be >= 1");
  if (!(o.gpuMemoryUtilization > 0 && o.gpuMemoryUtilization <= 1))
    return Status::Error(Code::BAD_ARGUMENT, "gpuMemoryUtilization must be in (0, 1]");
  return Status::Ok();
}

// Sequences per step the plan holds: every sequence of a step has at least one token, so the
// cap is min(maxNumSeqs, maxBatchTokens).
inline int plannedNumSeqs(const BackendOptions& o) { return o.maxNumSeqs < o.maxBatchTokens ? o.maxNumSeqs : o.maxBatchTokens; }

}  // namespace ms
