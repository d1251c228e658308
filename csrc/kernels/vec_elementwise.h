// The row/elementwise kernels (bias+GELU, LayerNorm, softmax) written once with GCC/Clang vector
// extensions and instantiated by each ISA file for its vector width (16 lanes on AVX-512, 8 on
// AVX2, 4 on NEON): the compiler lowers the same code to each ISA's instructions under that file's
// flags. exp and erf are polynomial approximations (relative error ~2e-7 / absolute ~2e-7), the
// same approach as PyTorch's vectorised CPU kernels.
//
// Anonymous namespace: see tiling.h (each ISA file must get its own copy).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace {

// Vector types per width (GCC drops vector_size on a typedef that depends on a template argument).
template <int W>
struct VecTypes;
template <>
struct VecTypes<4> {
  typedef float F __attribute__((vector_size(16)));
  typedef int32_t I __attribute__((vector_size(16)));
};
template <>
struct VecTypes<8> {
  typedef float F __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
};
template <>
struct VecTypes<16> {
  typedef float F __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
};

template <int W>
struct VecMath {
  using F = typename VecTypes<W>::F;
  using I = typename VecTypes<W>::I;

  static F splat(float v) { return F{} + v; }
  static F load(const float* p) {
    F v;
    std::memcpy(&v, p, sizeof(F));
    return v;
  }
  static void store(float* p, F v) { std::memcpy(p, &v, sizeof(F)); }
  // The first n < W lanes from p, the rest `fill`; and the matching partial store.
  static F load_partial(const float* p, std::size_t n, float fill) {
    float tmp[W];
    for (int i = 0; i < W; ++i) tmp[i] = fill;
    std::memcpy(tmp, p, n * 4);
    return load(tmp);
  }
  static void store_partial(float* p, std::size_t n, F v) {
    float tmp[W];
    store(tmp, v);
    std::memcpy(p, tmp, n * 4);
  }
  static F select(I mask, F a, F b) { return mask ? a : b; }
  static float hsum(F v) {
    float s = 0.f;
    for (int i = 0; i < W; ++i) s += v[i];
    return s;
  }
  static float hmax(F v) {
    float m = v[0];
    for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
    return m;
  }

  // e^x for x <= 0 (all that softmax and erf need): x = n ln2 + r, |r| <= ln2 / 2, e^r by a
  // degree-6 polynomial, 2^n through the exponent bits. Below -87.3 (2^n would be subnormal) gives 0.
  static F exp_nonpositive(F x) {
    const I underflow = x < -87.3f;
    const F xc = select(underflow, splat(0.f), x);
    const I n = __builtin_convertvector(xc * 1.44269504088896341f - 0.5f, I);  // round (x <= 0)
    const F nf = __builtin_convertvector(n, F);
    F r = xc - nf * 0.693145751953125f;  // ln2 split in two for an exact reduction
    r = r - nf * 1.428606765330187045e-06f;
    F p = splat(1.0f / 720.f);
    p = p * r + 1.0f / 120.f;
    p = p * r + 1.0f / 24.f;
    p = p * r + 1.0f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const I bits = (n + 127) << 23;
    F scale;
    std::memcpy(&scale, &bits, sizeof(F));
    return select(underflow, splat(0.f), p * scale);
  }

  // erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7).
  static F erf(F x) {
    const I neg = x < 0.f;
    const F a = select(neg, -x, x);
    const F t = 1.0f / (1.0f + 0.3275911f * a);
    F p = splat(1.061405429f);
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const F y = 1.0f - p * t * exp_nonpositive(-a * a);
    return select(neg, -y, y);
  }

  static F gelu(F v) { return 0.5f * v * (1.0f + erf(v * 0.70710678118654752f)); }

  static void bias_gelu(std::size_t M, std::size_t N, const float* bias, float* y, std::size_t ldy) {
    for (std::size_t i = 0; i < M; ++i) {
      float* row = y + i * ldy;
      std::size_t n = 0;
      for (; n + W <= N; n += W) store(row + n, gelu(load(row + n) + (bias ? load(bias + n) : splat(0.f))));
      if (n < N) {
        const F b = bias ? load_partial(bias + n, N - n, 0.f) : splat(0.f);
        store_partial(row + n, N - n, gelu(load_partial(row + n, N - n, 0.f) + b));
      }
    }
  }

  // v = x (+ residual) over one row, in vector blocks with a zero-padded tail.
  struct RowSum {
    const float* x;
    const float* r;
    std::size_t N;
    F block(std::size_t n) const { return load(x + n) + (r ? load(r + n) : splat(0.f)); }
    F tail(std::size_t n) const {
      return load_partial(x + n, N - n, 0.f) + (r ? load_partial(r + n, N - n, 0.f) : splat(0.f));
    }
  };

  static void layernorm(std::size_t M, std::size_t N, const float* x, std::size_t ldx, const float* residual,
                        std::size_t ldr, const float* gamma, const float* beta, float eps, float* out,
                        std::size_t ldo) {
    for (std::size_t i = 0; i < M; ++i) {
      const RowSum v{x + i * ldx, residual ? residual + i * ldr : nullptr, N};
      F s = splat(0.f);
      std::size_t n = 0;
      for (; n + W <= N; n += W) s += v.block(n);
      if (n < N) s += v.tail(n);
      const float mean = hsum(s) / static_cast<float>(N);
      F sq = splat(0.f);
      for (n = 0; n + W <= N; n += W) {
        const F d = v.block(n) - mean;
        sq += d * d;
      }
      if (n < N) {
        float tmp[W] = {};
        for (std::size_t j = 0; j < N - n; ++j) tmp[j] = 1.f;
        const F d = (v.tail(n) - mean) * load(tmp);  // padding lanes must not count
        sq += d * d;
      }
      const float inv = 1.0f / std::sqrt(hsum(sq) / static_cast<float>(N) + eps);
      float* o = out + i * ldo;
      for (n = 0; n + W <= N; n += W) store(o + n, (v.block(n) - mean) * inv * load(gamma + n) + load(beta + n));
      if (n < N)
        store_partial(o + n, N - n,
                      (v.tail(n) - mean) * inv * load_partial(gamma + n, N - n, 0.f) +
                          load_partial(beta + n, N - n, 0.f));
    }
  }

  static void rmsnorm(std::size_t M, std::size_t N, const float* x, std::size_t ldx, const float* gamma, float eps,
                      float* out, std::size_t ldo) {
    for (std::size_t i = 0; i < M; ++i) {
      const float* row = x + i * ldx;
      F sq = splat(0.f);
      std::size_t n = 0;
      for (; n + W <= N; n += W) sq += load(row + n) * load(row + n);
      if (n < N) {
        const F t = load_partial(row + n, N - n, 0.f);
        sq += t * t;
      }
      const float inv = 1.0f / std::sqrt(hsum(sq) / static_cast<float>(N) + eps);
      float* o = out + i * ldo;
      for (n = 0; n + W <= N; n += W) store(o + n, load(row + n) * inv * load(gamma + n));
      if (n < N) store_partial(o + n, N - n, load_partial(row + n, N - n, 0.f) * inv * load_partial(gamma + n, N - n, 0.f));
    }
  }

  // silu(v) * u without overflow: e = exp(-|v|) <= 1, silu = v / (1 + e) for v >= 0, v e / (1 + e) below.
  static F silu_mul(F v, F u) {
    const I neg = v < 0.f;
    const F e = exp_nonpositive(select(neg, v, -v));
    return select(neg, v * e, v) / (1.0f + e) * u;
  }

  static void silu_mul(std::size_t M, std::size_t N, float* gate, std::size_t ldg, const float* up, std::size_t ldu) {
    for (std::size_t i = 0; i < M; ++i) {
      float* g = gate + i * ldg;
      const float* u = up + i * ldu;
      std::size_t n = 0;
      for (; n + W <= N; n += W) store(g + n, silu_mul(load(g + n), load(u + n)));
      if (n < N) store_partial(g + n, N - n, silu_mul(load_partial(g + n, N - n, 0.f), load_partial(u + n, N - n, 0.f)));
    }
  }

  // tanh by the rational 13/6 minimax approximation Eigen uses (x clamped to ±7.9053, where float
  // tanh is ±1): relative error <= 3.4e-7 over the whole range, tiny |x| included (no 1 - e^-2x
  // cancellation).
  static F tanh(F x) {
    const float c = 7.90531110763549805f;
    x = select(x > c, splat(c), x);
    x = select(x < -c, splat(-c), x);
    const F x2 = x * x;
    F p = splat(-2.76076847742355e-16f);
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    F q = splat(1.19825839466702e-06f);
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
  }

  // GELU, tanh form (GPT-2, Gemma's GeGLU): 0.5 g (1 + tanh(z)) [* up], z = sqrt(2/pi) (g + 0.044715 g^3),
  // computed as g * sigmoid(2z) the way silu_mul is: 1 + tanh(z) would cancel to a few ulps for g << 0.
  static void gelu_tanh_mul(std::size_t M, std::size_t N, float* gate, std::size_t ldg, const float* up,
                            std::size_t ldu) {
    auto f = [](F g, F u) {
      const F t = 1.5957691216057308f * (g + 0.044715f * g * g * g);  // 2z
      const I neg = t < 0.f;
      const F e = exp_nonpositive(select(neg, t, -t));
      return g * (select(neg, e, splat(1.f)) / (1.0f + e)) * u;
    };
    for (std::size_t i = 0; i < M; ++i) {
      float* g = gate + i * ldg;
      const float* u = up ? up + i * ldu : nullptr;
      std::size_t n = 0;
      for (; n + W <= N; n += W) store(g + n, f(load(g + n), u ? load(u + n) : splat(1.f)));
      if (n < N)
        store_partial(g + n, N - n, f(load_partial(g + n, N - n, 0.f), u ? load_partial(u + n, N - n, 0.f) : splat(1.f)));
    }
  }

  // Gemma 2's soft-capping: cap * tanh(scale * x / cap).
  static void softcap(std::size_t M, std::size_t N, float* x, std::size_t ldx, float scale, float cap) {
    const float k = scale / cap;
    for (std::size_t i = 0; i < M; ++i) {
      float* row = x + i * ldx;
      std::size_t n = 0;
      for (; n + W <= N; n += W) store(row + n, cap * tanh(load(row + n) * k));
      if (n < N) store_partial(row + n, N - n, cap * tanh(load_partial(row + n, N - n, 0.f) * k));
    }
  }

  static void softmax(std::size_t M, std::size_t N, float* x, std::size_t ldx, const float* mask, float scale) {
    for (std::size_t i = 0; i < M; ++i) {
      float* row = x + i * ldx;
      auto logits = [&](std::size_t n) { return load(row + n) * scale + (mask ? load(mask + n) : splat(0.f)); };
      auto logits_tail = [&](std::size_t n) {
        return load_partial(row + n, N - n, 0.f) * scale +
               (mask ? load_partial(mask + n, N - n, 0.f) : splat(0.f));
      };
      F mx = splat(-INFINITY);
      std::size_t n = 0;
      for (; n + W <= N; n += W) mx = select(logits(n) > mx, logits(n), mx);
      float row_max = hmax(mx);
      for (std::size_t j = n; j < N; ++j) {
        const float v = row[j] * scale + (mask ? mask[j] : 0.f);
        row_max = v > row_max ? v : row_max;
      }
      if (row_max == -INFINITY) {  // fully masked: zeros, never NaN
        for (n = 0; n < N; ++n) row[n] = 0.f;
        continue;
      }
      F sum = splat(0.f);
      for (n = 0; n + W <= N; n += W) {
        const F e = exp_nonpositive(logits(n) - row_max);
        store(row + n, e);
        sum += e;
      }
      if (n < N) {
        F e = exp_nonpositive(logits_tail(n) - row_max);
        store_partial(row + n, N - n, e);
        float tmp[W];
        store(tmp, e);
        for (std::size_t j = N - n; j < static_cast<std::size_t>(W); ++j) tmp[j] = 0.f;
        sum += load(tmp);
      }
      const float inv = 1.0f / hsum(sum);
      for (n = 0; n + W <= N; n += W) store(row + n, load(row + n) * inv);
      for (; n < N; ++n) row[n] *= inv;
    }
  }
};

}  // namespace
