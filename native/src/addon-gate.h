// Masks supplied late (backend.h MaskGate) on the addon side: a forward with
// `sampling.maskGate = { id, timeoutMs }` registers a gate under `id`; `supplyMasks(id, masks)`
// (JS thread, synchronous) opens it. The backend's thread waits on it between the logits and the
// sampling. Included by addon.cc only.
//
// Lifecycle of one gate (every step but the wait runs on the JS thread):
//   1. registered with its forward's job (forward / forwardWithSend);
//   2. opened once: supplyMasks (masks, or null = none), or cancelled (the backend closes), or
//      timed out by its waiter (MASK_TIMEOUT);
//   3. unregistered when its job settles, which also drops the reference that kept the supplied
//      masks alive: the backend reads them in place (no copy on the JS thread).
#pragma once
#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "backend.h"

namespace ms::addon {

// How long the backend's thread waited at gates (maskGateStats): the device idles for masks at
// most this long (CPU: exactly; CUDA: the host waits while the queued forward still runs).
struct GateStats {
  std::atomic<int64_t> numWaits{0};
  std::atomic<int64_t> waitNs{0};
};

class Gate : public ms::MaskGate {
 public:
  Gate(uint32_t id, int timeoutMs, std::shared_ptr<GateStats> stats) : id_(id), timeout_(timeoutMs), stats_(std::move(stats)) {}

  // Opens the gate with `masks` (null: none); false when it is no longer waiting for them.
  bool open(const uint32_t* masks) { return settle(masks ? State::kMasks : State::kNone, masks); }
  // Opens the gate with an error for its waiter (the backend closes).
  void cancel() { settle(State::kCancelled, nullptr); }

  ms::Status wait(const uint32_t** masks) override {
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    const bool isOpen = cv_.wait_for(lock, timeout_, [&] { return state_ != State::kPending; });
    stats_->numWaits++;
    stats_->waitNs += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    if (!isOpen) {
      state_ = State::kTimedOut;  // a late supplyMasks now answers false
      return ms::Status::Error(ms::Code::MASK_TIMEOUT, "the masks of gate " + std::to_string(id_) + " were not supplied within " +
                                                           std::to_string(timeout_.count()) + " ms (sampling.maskGate.timeoutMs)");
    }
    if (state_ == State::kCancelled)
      return ms::Status::Error(ms::Code::NATIVE_ERROR, "the backend closed while gate " + std::to_string(id_) + " waited for masks");
    *masks = masks_;
    return ms::Status::Ok();
  }

 private:
  enum class State { kPending, kMasks, kNone, kCancelled, kTimedOut };
  bool settle(State to, const uint32_t* masks) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (state_ != State::kPending) return false;
      state_ = to;
      masks_ = masks;
    }
    cv_.notify_all();
    return true;
  }

  const uint32_t id_;
  const std::chrono::milliseconds timeout_;
  const std::shared_ptr<GateStats> stats_;
  std::mutex mu_;
  std::condition_variable cv_;
  State state_ = State::kPending;
  const uint32_t* masks_ = nullptr;
};

// The gates of one backend's queued and running forwards, by id. JS thread only.
class GateTable {
 public:
  struct Entry {
    std::shared_ptr<Gate> gate;
    size_t numWords = 0;              // numSeqs * ceil(vocab / 32): the masks' length
    Napi::ObjectReference masks;      // the supplied Uint32Array, alive until the job settles
  };

  bool has(uint32_t id) const { return gates_.count(id) > 0; }
  std::shared_ptr<Gate> add(uint32_t id, int timeoutMs, size_t numWords) {
    Entry& e = gates_[id];
    e.gate = std::make_shared<Gate>(id, timeoutMs, stats);
    e.numWords = numWords;
    return e.gate;
  }
  Entry* find(uint32_t id) {
    auto it = gates_.find(id);
    return it == gates_.end() ? nullptr : &it->second;
  }
  void remove(uint32_t id) { gates_.erase(id); }
  // Shared with the gates (their waits run on the backend's thread).
  const std::shared_ptr<GateStats> stats = std::make_shared<GateStats>();
  // Every gate still waiting fails its forward (close, process exit): no backend thread hangs.
  void cancelAll() {
    for (auto& [id, e] : gates_) e.gate->cancel();
  }

 private:
  std::map<uint32_t, Entry> gates_;
};

}  // namespace ms::addon
