#include <immintrin.h>

#include "mlfs/kernels.h"

namespace mlfs::kernels::avx512 {

float dot_f32(const float* a, const float* b, std::size_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  acc0 = _mm512_add_ps(acc0, acc1);
  if (i < n) {  // masked tail: no scalar loop, no read past the end
    const std::size_t rem = n - i;
    const __mmask16 m0 = rem >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << rem) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, a + i), _mm512_maskz_loadu_ps(m0, b + i), acc0);
    if (rem > 16) {
      const __mmask16 m1 = static_cast<__mmask16>((1u << (rem - 16)) - 1);
      acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, a + i + 16),
                             _mm512_maskz_loadu_ps(m1, b + i + 16), acc0);
    }
  }
  return _mm512_reduce_add_ps(acc0);
}

}  // namespace mlfs::kernels::avx512
