#include "mlfs/thread_pool.h"

#include <algorithm>

namespace mlfs {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// ~50 us of polling on current cores: longer than the gap between two GEMMs of one forward pass,
// far shorter than the gap between two requests.
constexpr int kSpinIterations = 2000;

}  // namespace

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::reserve(int threads) {
  threads = std::min(threads, kMaxWorkers + 1);
  while (capacity() < threads) {
    const int index = static_cast<int>(workers_.size());
    // The worker waits for regions after the current one; read here, not in the new thread, which
    // may start only after the caller has already published the next region.
    const std::uint64_t current = generation_.load(std::memory_order_acquire);
    workers_.emplace_back([this, index, current] { worker_loop(index, current); });
  }
}

void ThreadPool::worker_loop(int index, std::uint64_t seen) {
  for (;;) {
    std::uint64_t now = seen;
    for (int i = 0; i < kSpinIterations && now == seen; ++i) {
      cpu_relax();
      now = generation_.load(std::memory_order_acquire);
    }
    if (now == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_.load() || generation_.load(std::memory_order_acquire) != seen; });
      now = generation_.load(std::memory_order_acquire);
    }
    if (stop_.load()) return;
    seen = now;
    if (index >= static_cast<int>(now & 0xFFu)) continue;  // this region needs fewer threads
    const Task& fn = *fn_;
    for (std::size_t t; (t = next_task_.fetch_add(1, std::memory_order_relaxed)) < n_tasks_;) fn(t, index + 1);
    busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(std::size_t n_tasks, int threads, const Task& fn) {
  const int helpers = std::min<int>({threads - 1, static_cast<int>(workers_.size()),
                                     static_cast<int>(std::min<std::size_t>(n_tasks, kMaxWorkers + 1)) - 1});
  if (helpers <= 0) {
    for (std::size_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  fn_ = &fn;
  n_tasks_ = n_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  busy_workers_.store(helpers, std::memory_order_relaxed);
  {
    // Under the mutex so a worker between its predicate check and its sleep cannot miss the wake-up.
    std::lock_guard<std::mutex> lock(mutex_);
    const std::uint64_t sequence = (generation_.load(std::memory_order_relaxed) >> 8) + 1;
    generation_.store((sequence << 8) | static_cast<std::uint64_t>(helpers), std::memory_order_release);
  }
  wake_.notify_all();
  for (std::size_t t; (t = next_task_.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) fn(t, 0);
  // The workers' last tasks are short; yield rather than sleep so the region ends promptly.
  while (busy_workers_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

}  // namespace mlfs
