// A fixed set of worker threads, created once and reused for every parallel region of a forward
// pass (thread start-up costs tens of microseconds; a MiniLM forward has ~50 parallel regions).
#pragma once
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mlfs {

class ThreadPool {
 public:
  ThreadPool() = default;
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Make sure `threads` threads can run at once (the caller counts as one); never shrinks.
  void reserve(int threads);
  int capacity() const { return static_cast<int>(workers_.size()) + 1; }

  // Run fn(task, slot) for task in [0, n_tasks) on up to `threads` threads (the caller takes part,
  // as slot 0; a worker is slot index + 1, so per-thread scratch can be indexed by slot) and return
  // when all are done. Not re-entrant: one parallel region at a time per pool.
  using Task = std::function<void(std::size_t task, int slot)>;
  void parallel_for(std::size_t n_tasks, int threads, const Task& fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  // The current region: workers with index < active_workers_ pull tasks from next_task_.
  const Task* fn_ = nullptr;
  std::size_t n_tasks_ = 0;
  int active_workers_ = 0;
  std::uint64_t generation_ = 0;
  std::atomic<std::size_t> next_task_{0};
  std::atomic<int> busy_workers_{0};
  bool stop_ = false;
};

}  // namespace mlfs
