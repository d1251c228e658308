#include "mlfs/kernels.h"

namespace mlfs::kernels::ref {

float dot_f32(const float* a, const float* b, std::size_t n) {
  // Double accumulation: the reference is the yardstick, so it should be the most accurate one.
  double acc = 0.0;
  for (std::size_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(acc);
}

}  // namespace mlfs::kernels::ref
