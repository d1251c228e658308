// Baseline ARMv8-A NEON: f32 and f16 GEMMs, int8 GEMM with smull + sadalp (no dot product
// instruction at this level), the int8 quantiser, and the row kernels (shared vector code, 4 lanes).
#include <arm_neon.h>

#include <cmath>

#include "../vec_elementwise.h"
#include "neon_tiles.h"

namespace mlfs::kernels::neon {
namespace {

// Products of 8 byte pairs widen to int16 (|p| <= 127 * 127), then pairs add into int32 lanes:
// lo holds (c0 k01, c0 k23, c1 k01, c1 k23), hi the same for c2, c3; finish adds neighbours.
struct DotSmull {
  struct Acc {
    int32x4_t lo, hi;
  };
  static constexpr int kTileBlocks = 2;  // two accumulators per block: fewer blocks per tile
  static Acc zero() { return {vdupq_n_s32(0), vdupq_n_s32(0)}; }
  static void accumulate(Acc& acc, int8x16_t w, int8x16_t x) {
    acc.lo = vpadalq_s16(acc.lo, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    acc.hi = vpadalq_s16(acc.hi, vmull_high_s8(w, x));
  }
  static int32x4_t finish(const Acc& acc) { return vpaddq_s32(acc.lo, acc.hi); }
};

using V = VecMath<4>;

}  // namespace

void gemm_f32(size_t M, size_t N, size_t K, float alpha, const float* x, size_t ldx,
              const float* Wt, size_t ldw, const float* bias, float* y, size_t ldy,
              bool accumulate) {
  run_float_gemm<Neon, 4>(M, N, K, alpha, x, ldx, Wt, ldw, bias, y, ldy, accumulate);
}

void gemm_f16(size_t M, size_t N, size_t K, const float* x, size_t ldx, const uint16_t* Wt,
              size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  run_float_gemm<Neon, 4>(M, N, K, 1.f, x, ldx, Wt, ldw, bias, y, ldy, accumulate);
}

void gemm_q4(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* d, const int32_t* xs,
             size_t ldd, const uint8_t* Wq, size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  run_q4_gemm<DotSmull>(M, N, K, xq, ldq, d, xs, ldd, Wq, ldw, bias, y, ldy, accumulate);
}

void gemm_i8(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* x_scale,
             const int32_t* /*x_sum: signed x signed, no offset*/, const int8_t* Wq, size_t ldw,
             const float* w_scale, const float* bias, float* y, size_t ldy, bool accumulate) {
  run_i8_gemm<DotSmull>(M, N, K, xq, ldq, x_scale, Wq, ldw, w_scale, bias, y, ldy, accumulate);
}

void quantize_rows_i8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq,
                      float* scale, int32_t* x_sum) {
  for (size_t i = 0; i < M; ++i) {
    const float* row = x + i * ldx;
    float32x4_t amax4 = vdupq_n_f32(0.f);
    size_t k = 0;
    for (; k + 4 <= K; k += 4) amax4 = vmaxq_f32(amax4, vabsq_f32(vld1q_f32(row + k)));
    float amax = vmaxvq_f32(amax4);
    for (; k < K; ++k) amax = std::fmax(amax, std::fabs(row[k]));
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    // Division and round-half-even (vrndnq), bit-identical to the reference.
    const float32x4_t vs = vdupq_n_f32(s), lo = vdupq_n_f32(-127.f), hi = vdupq_n_f32(127.f);
    int32x4_t sum4 = vdupq_n_s32(0);
    int8_t* out = xq + i * ldq;
    for (k = 0; k + 4 <= K; k += 4) {
      const float32x4_t q = vminq_f32(vmaxq_f32(vrndnq_f32(vdivq_f32(vld1q_f32(row + k), vs)), lo), hi);
      const int32x4_t qi = vcvtq_s32_f32(q);
      sum4 = vaddq_s32(sum4, qi);
      const int8x8_t q8 = vmovn_s16(vcombine_s16(vmovn_s32(qi), vdup_n_s16(0)));
      vst1_lane_s32(reinterpret_cast<int32_t*>(out + k), vreinterpret_s32_s8(q8), 0);
    }
    int32_t sum = vaddvq_s32(sum4);
    for (; k < K; ++k) {
      const float q = std::fmin(std::fmax(std::nearbyint(row[k] / s), -127.f), 127.f);
      out[k] = static_cast<int8_t>(q);
      sum += static_cast<int32_t>(q);
    }
    for (k = K; k < packed_k4(K); ++k) out[k] = 0;
    scale[i] = s;
    x_sum[i] = sum;
  }
}

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
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  for (; i < n; ++i) dst[i] = f32_to_f16_scalar(src[i]);
}

void f16_to_f32(size_t n, const uint16_t* src, float* dst) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  for (; i < n; ++i) dst[i] = f16_to_f32_scalar(src[i]);
}

}  // namespace mlfs::kernels::neon
