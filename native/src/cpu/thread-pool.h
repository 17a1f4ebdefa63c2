// A small persistent thread pool for the CPU backend. The caller of run() works too, so a pool
// of N threads starts N-1 workers. Tasks are claimed dynamically (an atomic counter), which
// balances causal attention where later tokens cost more. Workers spin briefly after a job
// (forward calls issue dozens of short jobs back to back), then sleep on a condition variable.
// Threads that compute run at a lower priority (nice +kComputeNice on Linux) so that the
// process's event loop wins the CPU whenever it has work: a long prefill must not delay replies.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ms {

constexpr int kComputeNice = 5;

class ThreadPool {
 public:
  explicit ThreadPool(int numThreads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return numThreads_; }
  // Runs fn(task, thread) for task in [0, numTasks), thread in [0, size()); returns when all are
  // done. Not re-entrant: one run() at a time (the backend serialises its calls).
  void run(int numTasks, const std::function<void(int task, int thread)>& fn);

 private:
  void workerLoop(int thread);
  void drain(int thread);

  int numThreads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> nextTask_{0};
  std::atomic<int> numActive_{0};
  int numTasks_ = 0;
  const std::function<void(int, int)>* fn_ = nullptr;
  bool stop_ = false;
};

}  // namespace ms
