// Every ISA's kernels against the scalar reference, on shapes that exercise vector bodies and tails.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "mlfs/kernels.h"

namespace {
int failures = 0;
#define CHECK(cond, ...)                     \
  do {                                       \
    if (!(cond)) {                           \
      std::printf("FAIL %s:%d ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);              \
      std::printf("\n");                     \
      ++failures;                            \
    }                                        \
  } while (0)
}  // namespace

int main() {
  using namespace mlfs;
  std::mt19937 rng(1234);
  std::normal_distribution<float> dist(0.f, 1.f);
  const auto isas = supported_isas();
  std::printf("ISAs: ");
  for (Isa isa : isas) std::printf("%s ", isa_name(isa));
  std::printf("\n");
  for (std::size_t n : {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 384, 1536, 1537}) {
    std::vector<float> a(n), b(n);
    for (auto& v : a) v = dist(rng);
    for (auto& v : b) v = dist(rng);
    const float want = kernels::ref::dot_f32(a.data(), b.data(), n);
    for (Isa isa : isas) {
      const float got = kernels::table_for(isa).dot_f32(a.data(), b.data(), n);
      const float tol = 1e-5f * std::sqrt(static_cast<float>(n) + 1.f) * 4.f;
      CHECK(std::fabs(got - want) <= tol, "dot_f32 isa=%s n=%zu got %g want %g", isa_name(isa), n, got, want);
    }
  }
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
