// The addon's per-backend worker: a queue of jobs run in order on one dedicated thread, each
// settling a Promise on the JS thread through a thread-safe function. Included by addon.cc only.
#pragma once
#include <napi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "addon-gate.h"
#include "backend.h"

namespace ms::addon {

inline const char* codeName(ms::Code c) {
  switch (c) {
    case ms::Code::OK: return "OK";
    case ms::Code::BAD_ARGUMENT: return "BAD_ARGUMENT";
    case ms::Code::BAD_CHECKPOINT: return "BAD_CHECKPOINT";
    case ms::Code::OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case ms::Code::NO_DEVICE: return "NO_DEVICE";
    case ms::Code::OVER_PLAN: return "OVER_PLAN";
    case ms::Code::DEVICE_MEMORY: return "DEVICE_MEMORY";
    case ms::Code::MASK_TIMEOUT: return "MASK_TIMEOUT";
    default: return "NATIVE_ERROR";
  }
}

inline Napi::Error makeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

[[noreturn]] inline void fail(Napi::Env env, const std::string& code, const std::string& message) {
  throw makeError(env, code, message);
}

// One queued call: `run` on the backend thread, then `settle` on the JS thread.
struct Job {
  std::function<ms::Status(ms::Backend&)> run;
  Napi::ObjectReference out;  // resolved with (undefined when empty)
  Napi::Promise::Deferred deferred;
  std::vector<Napi::ObjectReference> keep;  // buffers the thread reads or writes
  int64_t gateId = -1;                      // its mask gate (Worker::gates), unregistered when it settles
  ms::Status status;
  explicit Job(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

// Shared by the JS object, its thread and the queued jobs. Lifecycle: close() (or GC) sets
// `stop`; the thread finishes the queue, frees the backend and releases the tsfn, whose finalizer
// (JS thread) joins it. At process exit the cleanup hook sets `abandon` and joins at once.
struct Worker {
  std::unique_ptr<ms::Backend> backend;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job*> queue;
  bool stop = false;
  bool abandon = false;
  std::thread thread;
  Napi::ThreadSafeFunction tsfn;
  bool hookAdded = false;  // JS thread only
  int pending = 0;         // JS thread only: jobs not yet settled (the tsfn is ref'd while > 0)
  GateTable gates;         // JS thread only: mask gates of queued and running forwards

  // JS thread.
  void requestStop(bool abandonQueue) {
    gates.cancelAll();  // a forward waiting for masks that will never come fails now
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
      abandon = abandon || abandonQueue;
    }
    cv.notify_one();
  }

  static void onExit(void* arg) {
    Worker* w = static_cast<Worker*>(arg);
    w->hookAdded = false;
    w->requestStop(true);
    if (w->thread.joinable()) w->thread.join();
  }

  static void settle(Napi::Env env, Job* job, std::shared_ptr<Worker> self) {
    Napi::HandleScope scope(env);
    if (job->status.ok())
      job->deferred.Resolve(job->out.IsEmpty() ? env.Undefined() : job->out.Value());
    else
      job->deferred.Reject(makeError(env, codeName(job->status.code), job->status.message).Value());
    if (job->gateId >= 0) self->gates.remove(uint32_t(job->gateId));
    if (--self->pending == 0) self->tsfn.Unref(env);
    delete job;
  }

  void loop(std::weak_ptr<Worker> weak) {
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (abandon || queue.empty()) break;
        job = queue.front();
        queue.pop_front();
      }
      try {
        job->status = job->run(*backend);
      } catch (const std::exception& e) {
        job->status = ms::Status::Error(ms::Code::NATIVE_ERROR, e.what());
      }
      std::shared_ptr<Worker> self = weak.lock();  // alive: the tsfn finalizer holds it
      tsfn.BlockingCall(job, [self](Napi::Env env, Napi::Function, Job* job) {
        if (env != nullptr) settle(env, job, self);  // at teardown the job leaks
      });
    }
    backend.reset();
    tsfn.Release();
  }
};

}  // namespace ms::addon
