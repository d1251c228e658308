#include "mlfs/thread_pool.h"

#include <algorithm>

namespace mlfs {

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::reserve(int threads) {
  while (capacity() < threads) {
    const int index = static_cast<int>(workers_.size());
    workers_.emplace_back([this, index] { worker_loop(index); });
  }
}

void ThreadPool::worker_loop(int index) {
  std::uint64_t seen = 0;
  for (;;) {
    const Task* fn;
    std::size_t n;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && index < active_workers_); });
      if (stop_) return;
      seen = generation_;
      fn = fn_;
      n = n_tasks_;
    }
    for (std::size_t t; (t = next_task_.fetch_add(1, std::memory_order_relaxed)) < n;) (*fn)(t, index + 1);
    busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(std::size_t n_tasks, int threads, const Task& fn) {
  const int helpers = std::min<int>({threads - 1, static_cast<int>(workers_.size()),
                                     static_cast<int>(n_tasks) - 1});
  if (helpers <= 0) {
    for (std::size_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    n_tasks_ = n_tasks;
    active_workers_ = helpers;
    next_task_.store(0, std::memory_order_relaxed);
    busy_workers_.store(helpers, std::memory_order_relaxed);
    ++generation_;
  }
  wake_.notify_all();
  for (std::size_t t; (t = next_task_.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) fn(t, 0);
  // The workers' last tasks are short; yield rather than sleep so the region ends promptly.
  while (busy_workers_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

}  // namespace mlfs
