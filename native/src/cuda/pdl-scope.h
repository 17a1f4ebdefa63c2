// Whether launchPdl (pdl.h) asks for programmatic dependent launch, per thread. A backend sets it
// from its options (BackendOptions::pdl) for the length of each of its calls with a PdlScope, so a
// captured graph and an eager step of one backend launch alike and two backends on their own
// threads never disagree. [default on]; off is for measuring what PDL is worth. Host code only
// (included by .cc files as well as by pdl.h).
#pragma once

namespace ms::cuda {

inline thread_local bool tPdlEnabled = true;
inline bool pdlEnabled() { return tPdlEnabled; }

// Sets pdlEnabled() for this thread until the scope ends.
class PdlScope {
 public:
  explicit PdlScope(bool on) : saved_(tPdlEnabled) { tPdlEnabled = on; }
  ~PdlScope() { tPdlEnabled = saved_; }
  PdlScope(const PdlScope&) = delete;
  PdlScope& operator=(const PdlScope&) = delete;

 private:
  bool saved_;
};

}  // namespace ms::cuda
