// Kernel throughput on one core: GOP/s (2 * M * N * K / time) of every GEMM on every supported ISA,
// for the shapes given on the command line (default: MiniLM's M=128 and M=1, K=384, N=1536).
// Prints one JSON object per line; benchmarks/bench_kernels.py runs it and makes the table.
// Usage: bench_kernels [--min-time SECONDS] [M,N,K ...]
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mlfs/kernels.h"

namespace {

using namespace mlfs;
using namespace mlfs::kernels;
using Clock = std::chrono::steady_clock;

struct Timing {
  double best, median;  // seconds per call
};

// Seconds per call over batches of calls sized to ~0.5 ms, repeated for min_time seconds. The
// machine is shared, so the best batch (least disturbed) is the kernel's speed; the median shows
// the noise.
Timing time_per_call(const std::function<void()>& fn, double min_time) {
  fn();  // warm caches
  std::size_t batch = 1;
  for (;;) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < batch; ++i) fn();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (dt > 5e-4 || batch > (1u << 20)) break;
    batch *= 2;
  }
  std::vector<double> samples;
  const auto start = Clock::now();
  while (samples.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < min_time) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < batch; ++i) fn();
    samples.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / batch);
  }
  std::sort(samples.begin(), samples.end());
  return {samples.front(), samples[samples.size() / 2]};
}

void report(const char* kernel, Isa isa, std::size_t M, std::size_t N, std::size_t K, Timing t) {
  const double ops = 2.0 * M * N * K;
  std::printf("{\"kernel\": \"%s\", \"isa\": \"%s\", \"M\": %zu, \"N\": %zu, \"K\": %zu, "
              "\"us_best\": %.3f, \"us_median\": %.3f, \"gops\": %.2f, \"gops_median\": %.2f}\n",
              kernel, isa_name(isa), M, N, K, t.best * 1e6, t.median * 1e6, ops / t.best * 1e-9,
              ops / t.median * 1e-9);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  double min_time = 0.5;
  std::vector<std::array<std::size_t, 3>> shapes;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--min-time") == 0 && a + 1 < argc) {
      min_time = std::atof(argv[++a]);
    } else {
      std::size_t m, n, k;
      if (std::sscanf(argv[a], "%zu,%zu,%zu", &m, &n, &k) != 3 || !m || !n || !k) {
        std::fprintf(stderr, "bad shape '%s': expected M,N,K\n", argv[a]);
        return 2;
      }
      shapes.push_back({m, n, k});
    }
  }
  if (shapes.empty()) shapes = {{128, 1536, 384}, {1, 1536, 384}};

  std::mt19937 rng(0);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (const auto& [M, N, K] : shapes) {
    std::vector<float> x(M * K), Wt(K * N), bias(N), y(M * N), w_scale(N, 0.01f), x_scale(M);
    for (auto& v : x) v = dist(rng);
    for (auto& v : Wt) v = 0.05f * dist(rng);
    std::vector<uint16_t> Wh(K * N);
    ref::f32_to_f16(Wh.size(), Wt.data(), Wh.data());
    std::vector<int8_t> Wfull(N * K), Wq(packed_i8_size(N, K)), xq(M * packed_k4(K));
    for (auto& v : Wfull) v = static_cast<int8_t>(static_cast<int>(dist(rng) * 40) % 127);
    pack_p32k4_i8(N, K, Wfull.data(), K, Wq.data());
    std::vector<int32_t> x_sum(M);
    const std::size_t ldq = packed_k4(K);
    for (Isa isa : supported_isas()) {
      const KernelTable& t = table_for(isa);
      // The scalar reference is orders of magnitude slower: time it briefly.
      const double budget = isa == Isa::scalar ? 0.05 : min_time;
      report("gemm_f32", isa, M, N, K, time_per_call([&] {
        t.gemm_f32(M, N, K, 1.f, x.data(), K, Wt.data(), N, bias.data(), y.data(), N, false);
      }, budget));
      report("gemm_f16", isa, M, N, K, time_per_call([&] {
        t.gemm_f16(M, N, K, x.data(), K, Wh.data(), N, bias.data(), y.data(), N, false);
      }, budget));
      t.quantize_rows_i8(M, K, x.data(), K, xq.data(), ldq, x_scale.data(), x_sum.data());
      report("gemm_i8", isa, M, N, K, time_per_call([&] {
        t.gemm_i8(M, N, K, xq.data(), ldq, x_scale.data(), x_sum.data(), Wq.data(), packed_i8_ld(K), w_scale.data(),
                  bias.data(), y.data(), N, false);
      }, budget));
      report("quantize+gemm_i8", isa, M, N, K, time_per_call([&] {
        t.quantize_rows_i8(M, K, x.data(), K, xq.data(), ldq, x_scale.data(), x_sum.data());
        t.gemm_i8(M, N, K, xq.data(), ldq, x_scale.data(), x_sum.data(), Wq.data(), packed_i8_ld(K), w_scale.data(),
                  bias.data(), y.data(), N, false);
      }, budget));
    }
  }
  return 0;
}
