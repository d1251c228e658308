// The native tests' one assertion: CHECK(cond, printf-format, ...) prints the failing line and
// counts it, so a test reports every mismatch rather than stopping at the first. main() ends with
// `return report("name")`.
#pragma once
#include <cstdio>

namespace mlfs_test {
inline int failures = 0;

inline int report(const char* name) {
  std::printf("%s: %d failure(s)\n", name, failures);
  return failures == 0 ? 0 : 1;
}
}  // namespace mlfs_test

#define CHECK(cond, ...)                              \
  do {                                                \
    if (!(cond)) {                                    \
      std::printf("FAIL %s:%d ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                       \
      std::printf("\n");                              \
      ++mlfs_test::failures;                          \
    }                                                 \
  } while (0)
