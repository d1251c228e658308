// Scalar references of the three GEMMs and the int8 activation quantiser: the definitions the
// per-ISA kernels are tested against (double accumulation for the float paths, exact int32 for
// int8).
#include <cmath>
#include <cstring>

#include "mlfs/kernels.h"

namespace mlfs::kernels::ref {

namespace {
inline void store(float* y, float v, bool accumulate) { *y = accumulate ? *y + v : v; }
}  // namespace

float dot_f32(const float* a, const float* b, size_t n) {
  // Double accumulation: the reference is the yardstick, so it should be the most accurate one.
  double acc = 0.0;
  for (size_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(acc);
}

void gemm_f32(size_t M, size_t N, size_t K, float alpha, const float* x, size_t ldx,
              const float* Wt, size_t ldw, const float* bias, float* y, size_t ldy,
              bool accumulate) {
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (size_t k = 0; k < K; ++k) acc += static_cast<double>(x[i * ldx + k]) * Wt[k * ldw + n];
      double v = alpha * acc + (bias ? bias[n] : 0.0);
      store(&y[i * ldy + n], static_cast<float>(v), accumulate);
    }
}

void gemm_f16(size_t M, size_t N, size_t K, const float* x, size_t ldx, const uint16_t* Wt,
              size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (size_t k = 0; k < K; ++k)
        acc += static_cast<double>(x[i * ldx + k]) * f16_to_f32_scalar(Wt[k * ldw + n]);
      double v = acc + (bias ? bias[n] : 0.0);
      store(&y[i * ldy + n], static_cast<float>(v), accumulate);
    }
}

void quantize_rows_i8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq,
                      float* scale, int32_t* x_sum) {
  for (size_t i = 0; i < M; ++i) {
    const float* row = x + i * ldx;
    float amax = 0.f;
    for (size_t k = 0; k < K; ++k) amax = std::fmax(amax, std::fabs(row[k]));
    // Same float32 operations as mlfs_edge.quant.scheme.quantize_per_row (division, not a
    // reciprocal multiply; nearbyint rounds half to even like torch.round).
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    int32_t sum = 0;
    for (size_t k = 0; k < K; ++k) {
      float q = std::nearbyint(row[k] / s);
      q = std::fmin(std::fmax(q, -127.f), 127.f);
      xq[i * ldq + k] = static_cast<int8_t>(q);
      sum += static_cast<int32_t>(q);
    }
    for (size_t k = K; k < packed_k4(K); ++k) xq[i * ldq + k] = 0;
    scale[i] = s;
    x_sum[i] = sum;
  }
}

void gemm_i8(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* x_scale,
             const int32_t* /*x_sum: only the VNNI kernels need it*/, const int8_t* Wq, size_t ldw,
             const float* w_scale, const float* bias, float* y, size_t ldy, bool accumulate) {
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n) {
      int32_t acc = 0;
      for (size_t k = 0; k < K; ++k)
        acc += static_cast<int32_t>(xq[i * ldq + k]) *
               Wq[(n / kI8Panel) * ldw + (k / 4) * 4 * kI8Panel + (n % kI8Panel) * 4 + k % 4];
      float v = static_cast<float>(acc) * (x_scale[i] * w_scale[n]);
      if (bias) v += bias[n];
      store(&y[i * ldy + n], v, accumulate);
    }
}

void quantize_blocks_q8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq, float* d,
                        int32_t* xs, size_t ldd) {
  for (size_t i = 0; i < M; ++i)
    for (size_t b = 0; b < K / kQ4Group; ++b) {
      const float* blk = x + i * ldx + b * kQ4Group;
      float amax = 0.f;
      for (size_t k = 0; k < kQ4Group; ++k) amax = std::fmax(amax, std::fabs(blk[k]));
      const float s = amax > 0.f ? amax / 127.f : 1.f;  // as quantize_rows_i8: division, half-even
      int32_t sum = 0;
      for (size_t k = 0; k < kQ4Group; ++k) {
        const float q = std::fmin(std::fmax(std::nearbyint(blk[k] / s), -127.f), 127.f);
        xq[i * ldq + b * kQ4Group + k] = static_cast<int8_t>(q);
        sum += static_cast<int32_t>(q);
      }
      d[i * ldd + b] = s;
      xs[i * ldd + b] = sum;
    }
}

void gemm_q4(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* d, const int32_t* xs,
             size_t ldd, const uint8_t* Wq, size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  for (size_t i = 0; i < M; ++i)
    for (size_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (size_t g = 0; g < K / kQ4Group; ++g) {
        int32_t dot = 0;
        for (size_t j = 0; j < kQ4Group; ++j) {
          const size_t k = g * kQ4Group + j, s = j / 8, t = j % 8;
          const uint8_t* blk = Wq + (n / kQ4Panel) * ldw + g * kQ4BlockBytes;
          const int q = (blk[s * 64 + (n % kQ4Panel) * 4 + t % 4] >> (4 * (t / 4))) & 15;
          dot += static_cast<int32_t>(xq[i * ldq + k]) * q;
        }
        const uint8_t* blk = Wq + (n / kQ4Panel) * ldw + g * kQ4BlockBytes;
        uint16_t sh, zh;
        std::memcpy(&sh, blk + 256 + 2 * (n % kQ4Panel), 2);
        std::memcpy(&zh, blk + 288 + 2 * (n % kQ4Panel), 2);
        acc += static_cast<double>(d[i * ldd + g]) *
               (static_cast<double>(f16_to_f32_scalar(sh)) * dot +
                static_cast<double>(f16_to_f32_scalar(zh)) * xs[i * ldd + g]);
      }
      double v = acc + (bias ? bias[n] : 0.0);
      store(&y[i * ldy + n], static_cast<float>(v), accumulate);
    }
}

}  // namespace mlfs::kernels::ref
