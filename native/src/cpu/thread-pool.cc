#include "thread-pool.h"

#include <chrono>
#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ms {

namespace {
// How long an idle worker polls for the next job before sleeping.
constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Lowers the calling thread's priority once (Linux nice values are per thread).
void lowerPriority() {
#if defined(__linux__)
  thread_local bool isLowered = false;
  if (isLowered) return;
  isLowered = true;
  int tid = int(syscall(SYS_gettid));
  int nice = getpriority(PRIO_PROCESS, tid);
  setpriority(PRIO_PROCESS, tid, nice + kComputeNice);
#endif
}
}  // namespace

ThreadPool::ThreadPool(int numThreads) : numThreads_(numThreads < 1 ? 1 : numThreads) {
  for (int t = 1; t < numThreads_; t++) workers_.emplace_back([this, t] { workerLoop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::drain(int thread) {
  for (;;) {
    int task = nextTask_.fetch_add(1, std::memory_order_relaxed);
    if (task >= numTasks_) break;
    (*fn_)(task, thread);
  }
}

void ThreadPool::run(int numTasks, const std::function<void(int, int)>& fn) {
  if (numTasks <= 0) return;
  lowerPriority();  // the caller computes too
  if (numThreads_ == 1 || numTasks == 1) {
    for (int i = 0; i < numTasks; i++) fn(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    numTasks_ = numTasks;
    nextTask_.store(0, std::memory_order_relaxed);
    numActive_.store(numThreads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  drain(0);
  // Workers that have not started yet still join this job and find nothing left. Past the spin
  // window, yield: on a busy machine the worker we wait for may need this core.
  auto t0 = std::chrono::steady_clock::now();
  for (int spins = 0; numActive_.load(std::memory_order_acquire) > 0; spins++) {
    cpuRelax();
    if (spins % 256 == 255 && std::chrono::steady_clock::now() - t0 > kSpin) std::this_thread::yield();
  }
}

void ThreadPool::workerLoop(int thread) {
  lowerPriority();
  uint64_t seen = 0;
  for (;;) {
    auto t0 = std::chrono::steady_clock::now();
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      cpuRelax();
      if (++spins % 256 == 0 && std::chrono::steady_clock::now() - t0 > kSpin) {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    drain(thread);
    numActive_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace ms
