// The engine's thread pool: every task runs exactly once, for any mix of thread counts and task
// counts, including regions right after the pool grows (a new worker must not miss its first region).
#include <atomic>
#include <cstdio>
#include <vector>

#include "mlfs/thread_pool.h"

int main() {
  int failures = 0;
  mlfs::ThreadPool pool;
  for (int round = 0; round < 1000; ++round) {
    const int threads = 1 + round % 5;
    const std::size_t n_tasks = static_cast<std::size_t>(round % 7);
    if (round % 97 == 0) pool.reserve(1 + (round / 97) % 6);  // grow while regions run
    pool.reserve(threads);
    std::vector<std::atomic<int>> hits(n_tasks);
    std::atomic<int> bad_slot{0};
    pool.parallel_for(n_tasks, threads, [&](std::size_t t, int slot) {
      hits[t].fetch_add(1);
      if (slot < 0 || slot >= pool.capacity()) bad_slot.fetch_add(1);
    });
    for (std::size_t t = 0; t < n_tasks; ++t)
      if (hits[t].load() != 1) {
        std::printf("FAIL round %d: task %zu ran %d times\n", round, t, hits[t].load());
        ++failures;
      }
    if (bad_slot.load()) {
      std::printf("FAIL round %d: slot out of range\n", round);
      ++failures;
    }
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
