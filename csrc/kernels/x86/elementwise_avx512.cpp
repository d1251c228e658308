// AVX-512 row kernels: the shared vector code at 16 lanes, and fp16 conversion (vcvtps2ph/vcvtph2ps).
#include <immintrin.h>

#include "../vec_elementwise.h"
#include "mlfs/kernels.h"

namespace mlfs::kernels::avx512 {

using V = VecMath<16>;

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
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_mask_storeu_epi16(dst + i, m, h);
  }
}

void f16_to_f32(size_t n, const uint16_t* src, float* dst) {
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
  }
}

}  // namespace mlfs::kernels::avx512
