// AVX2 row kernels: the shared vector code at 8 lanes, and fp16 conversion with F16C.
#include <immintrin.h>

#include "../vec_elementwise.h"
#include "mlfs/kernels.h"

namespace mlfs::kernels::avx2 {

using V = VecMath<8>;

void bias_gelu_f32(size_t M, size_t N, const float* bias, float* y, size_t ldy) { V::bias_gelu(M, N, bias, y, ldy); }

void layernorm_f32(size_t M, size_t N, const float* x, size_t ldx, const float* residual, size_t ldr,
                   const float* gamma, const float* beta, float eps, float* out, size_t ldo) {
  V::layernorm(M, N, x, ldx, residual, ldr, gamma, beta, eps, out, ldo);
}

void rmsnorm_f32(size_t M, size_t N, const float* x, size_t ldx, const float* gamma, float eps, float* out,
                 size_t ldo) {
  V::rmsnorm(M, N, x, ldx, gamma, eps, out, ldo);
}

void silu_mul_f32(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu) {
  V::silu_mul(M, N, gate, ldg, up, ldu);
}

void gelu_tanh_mul_f32(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu) {
  V::gelu_tanh_mul(M, N, gate, ldg, up, ldu);
}

void softcap_f32(size_t M, size_t N, float* x, size_t ldx, float scale, float cap) { V::softcap(M, N, x, ldx, scale, cap); }

void softmax_f32(size_t M, size_t N, float* x, size_t ldx, const float* mask, float scale) {
  V::softmax(M, N, x, ldx, mask, scale);
}

void f32_to_f16(size_t n, const float* src, uint16_t* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) dst[i] = f32_to_f16_scalar(src[i]);
}

void f16_to_f32(size_t n, const uint16_t* src, float* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = f16_to_f32_scalar(src[i]);
}

}  // namespace mlfs::kernels::avx2
