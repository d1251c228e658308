// Scalar references of the elementwise / row kernels (GELU, LayerNorm, softmax, fp16 conversion).
#include <cmath>
#include <cstring>
#include <limits>

#include "mlfs/kernels.h"

namespace mlfs::kernels {

uint16_t f32_to_f16_scalar(float f) {
  // Round to nearest even via the float unit for subnormal halves and integer rounding for normal
  // ones (F. Giesen's float_to_half_fast3_rtne); agrees bit for bit with F16C / ARM FCVT.
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint16_t out;
  if (u >= (127u + 16u) << 23) {                      // |f| >= 65536, inf or NaN
    out = u > 0x7f800000u ? static_cast<uint16_t>(0x7e00u | ((u >> 13) & 0x3ffu)) : 0x7c00u;
  } else if (u < (113u << 23)) {                      // result is subnormal (or zero)
    const uint32_t magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    float magic, v;
    std::memcpy(&magic, &magic_bits, 4);
    std::memcpy(&v, &u, 4);
    v += magic;  // the FPU rounds the mantissa at the half-subnormal ulp, to nearest even
    uint32_t vb;
    std::memcpy(&vb, &v, 4);
    out = static_cast<uint16_t>(vb - magic_bits);
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + mant_odd;  // rebias + round half even
    out = static_cast<uint16_t>(u >> 13);                              // may carry into inf: right
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

float f16_to_f32_scalar(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  } else {  // zero or subnormal: mant * 2^-24, exact in float
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    std::memcpy(&u, &v, 4);
    u |= sign;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

namespace ref {

void bias_gelu_f32(size_t M, size_t N, const float* bias, float* y, size_t ldy) {
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n) {
      const double v = static_cast<double>(y[i * ldy + n]) + (bias ? bias[n] : 0.0);
      y[i * ldy + n] = static_cast<float>(0.5 * v * (1.0 + std::erf(v * 0.70710678118654752440)));
    }
}

void layernorm_f32(size_t M, size_t N, const float* x, size_t ldx, const float* residual,
                   size_t ldr, const float* gamma, const float* beta, float eps, float* out,
                   size_t ldo) {
  for (size_t i = 0; i < M; ++i) {
    double mean = 0.0, var = 0.0;
    auto value = [&](size_t n) {
      return static_cast<double>(x[i * ldx + n]) + (residual ? residual[i * ldr + n] : 0.f);
    };
    for (size_t n = 0; n < N; ++n) mean += value(n);
    mean /= static_cast<double>(N);
    for (size_t n = 0; n < N; ++n) var += (value(n) - mean) * (value(n) - mean);
    var /= static_cast<double>(N);
    const double inv = 1.0 / std::sqrt(var + eps);
    // out may alias x or residual: each output reads only its own inputs and the row statistics.
    for (size_t n = 0; n < N; ++n)
      out[i * ldo + n] = static_cast<float>((value(n) - mean) * inv * gamma[n] + beta[n]);
  }
}

void softmax_f32(size_t M, size_t N, float* x, size_t ldx, const float* mask, float scale) {
  for (size_t i = 0; i < M; ++i) {
    float* row = x + i * ldx;
    double mx = -std::numeric_limits<double>::infinity();
    for (size_t n = 0; n < N; ++n) {
      const double v = static_cast<double>(scale) * row[n] + (mask ? mask[n] : 0.f);
      if (v > mx) mx = v;
    }
    if (mx == -std::numeric_limits<double>::infinity()) {  // fully masked row: zeros, not NaN
      for (size_t n = 0; n < N; ++n) row[n] = 0.f;
      continue;
    }
    double sum = 0.0;
    for (size_t n = 0; n < N; ++n)
      sum += std::exp(static_cast<double>(scale) * row[n] + (mask ? mask[n] : 0.f) - mx);
    for (size_t n = 0; n < N; ++n)
      row[n] = static_cast<float>(
          std::exp(static_cast<double>(scale) * row[n] + (mask ? mask[n] : 0.f) - mx) / sum);
  }
}

void rmsnorm_f32(size_t M, size_t N, const float* x, size_t ldx, const float* gamma, float eps, float* out,
                 size_t ldo) {
  for (size_t i = 0; i < M; ++i) {
    double ss = 0.0;
    for (size_t n = 0; n < N; ++n) ss += static_cast<double>(x[i * ldx + n]) * x[i * ldx + n];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(N) + eps);
    for (size_t n = 0; n < N; ++n) out[i * ldo + n] = static_cast<float>(x[i * ldx + n] * inv * gamma[n]);
  }
}

void silu_mul_f32(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu) {
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n) {
      const double g = gate[i * ldg + n];
      gate[i * ldg + n] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i * ldu + n]);
    }
}

void gelu_tanh_mul_f32(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu) {
  const double c = std::sqrt(2.0 / 3.14159265358979323846);
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n) {
      const double g = gate[i * ldg + n];
      const double u = up ? up[i * ldu + n] : 1.0;
      gate[i * ldg + n] = static_cast<float>(0.5 * g * (1.0 + std::tanh(c * (g + 0.044715 * g * g * g))) * u);
    }
}

void softcap_f32(size_t M, size_t N, float* x, size_t ldx, float scale, float cap) {
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n)
      x[i * ldx + n] = static_cast<float>(cap * std::tanh(static_cast<double>(scale) * x[i * ldx + n] / cap));
}

void f32_to_f16(size_t n, const float* src, uint16_t* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = f32_to_f16_scalar(src[i]);
}

void f16_to_f32(size_t n, const uint16_t* src, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32_scalar(src[i]);
}

}  // namespace ref
}  // namespace mlfs::kernels
