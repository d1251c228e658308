// A fixed set of worker threads, created once and reused for every parallel region of a forward
// pass (thread start-up costs tens of microseconds; a MiniLM forward has ~60 parallel regions).
// Between regions a worker spins briefly before sleeping, so back-to-back regions (one per GEMM)
// do not pay a futex wake-up each.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
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
  void worker_loop(int index, std::uint64_t seen);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  // The current region, published by the release store of generation_, which carries the region's
  // sequence number (high bits) and how many workers take part (low 8 bits): workers with a smaller
  // index pull tasks from next_task_; the others never touch fn_ / n_tasks_, so the caller may
  // rewrite them as soon as the participants are done.
  static constexpr int kMaxWorkers = 255;
  const Task* fn_ = nullptr;
  std::size_t n_tasks_ = 0;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::size_t> next_task_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace mlfs
