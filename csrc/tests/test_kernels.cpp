// Every ISA's kernels against the scalar reference (namespace ref), on shapes that exercise vector
// bodies, tails and prefix slices (leading dimensions larger than the slice), M = 1 and M > 1.
// int8 GEMM results must equal the reference bit for bit when the scales are 1 (exact int32 math).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "mlfs/kernels.h"

namespace {

using namespace mlfs;
using namespace mlfs::kernels;

std::mt19937 rng(1234);

std::vector<float> randn(std::size_t n, float sd = 1.f) {
  std::normal_distribution<float> dist(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<int8_t> rand_i8(std::size_t n) {
  std::uniform_int_distribution<int> dist(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(dist(rng));
  return v;
}

// max |got - want| / (1 + |want|) over the M x N output, with a sentinel check outside it.
double max_rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
    if (std::isnan(want[i])) continue;
    worst = std::fmax(worst, std::fabs(got[i] - want[i]) / (1.0 + std::fabs(want[i])));
  }
  return worst;
}

// Outputs are ldy > N wide: the columns past N keep their initial values in `want`, so comparing
// whole buffers also checks that no kernel writes outside its slice.
struct GemmShape {
  std::size_t M, N, K, N_full, K_full;
};

const GemmShape kGemmShapes[] = {
    {1, 1, 1, 1, 1},        {1, 17, 5, 17, 5},       {1, 100, 33, 130, 40},  {3, 16, 16, 16, 16},
    {7, 31, 19, 64, 64},    {6, 64, 64, 64, 64},     {13, 129, 67, 200, 96}, {1, 384, 384, 1536, 384},
    {7, 300, 384, 1536, 384}, {2, 5, 3, 48, 9}, {5, 95, 20, 96, 24}, {1, 70, 64, 70, 64},
    {17, 40, 36, 64, 40},   {33, 100, 64, 130, 64},  // past the few-rows int8 tile (kFewRows = 16)
};

void test_gemm_f32_f16() {
  for (const auto& s : kGemmShapes) {
    const std::size_t ldx = s.K_full + 3, ldy = s.N + 5;
    auto x = randn(s.M * ldx);
    auto Wt = randn(s.K_full * s.N_full, 0.2f);  // KN layout, full matrix; the slice is a stride
    std::vector<uint16_t> Wh(Wt.size());
    ref::f32_to_f16(Wt.size(), Wt.data(), Wh.data());
    auto bias = randn(s.N_full);
    auto y0 = randn(s.M * ldy);
    for (bool accumulate : {false, true})
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        const float alpha = accumulate ? 0.5f : 1.f;
        std::vector<float> want32 = y0, want16 = y0;
        ref::gemm_f32(s.M, s.N, s.K, alpha, x.data(), ldx, Wt.data(), s.N_full, b, want32.data(), ldy, accumulate);
        ref::gemm_f16(s.M, s.N, s.K, x.data(), ldx, Wh.data(), s.N_full, b, want16.data(), ldy, accumulate);
        for (Isa isa : supported_isas()) {
          const auto& t = table_for(isa);
          std::vector<float> got32 = y0, got16 = y0;
          t.gemm_f32(s.M, s.N, s.K, alpha, x.data(), ldx, Wt.data(), s.N_full, b, got32.data(), ldy, accumulate);
          t.gemm_f16(s.M, s.N, s.K, x.data(), ldx, Wh.data(), s.N_full, b, got16.data(), ldy, accumulate);
          const double tol = 2e-6 * std::sqrt(static_cast<double>(s.K) + 1.0) * 4;
          CHECK(max_rel_err(got32, want32) <= tol, "gemm_f32 isa=%s M=%zu N=%zu K=%zu acc=%d bias=%d err=%g",
                isa_name(isa), s.M, s.N, s.K, accumulate, with_bias, max_rel_err(got32, want32));
          CHECK(max_rel_err(got16, want16) <= tol, "gemm_f16 isa=%s M=%zu N=%zu K=%zu acc=%d bias=%d err=%g",
                isa_name(isa), s.M, s.N, s.K, accumulate, with_bias, max_rel_err(got16, want16));
        }
      }
  }
}

// 4-bit group-wise "P16" panels x block-int8 activations: K (the slice) a multiple of 32 and below
// K_full, N any (partial panels included) and below N_full, ragged M, x with ldx > K and y with
// ldy > N; column sub-ranges at panel starts (how the runner splits outputs over threads). Every
// ISA's quantize_blocks_q8 must be bit-identical to the reference.
void test_gemm_q4() {
  const GemmShape shapes[] = {{1, 1, 32, 1, 32},   {1, 17, 32, 17, 64},   {1, 100, 64, 131, 96},
                              {3, 16, 32, 16, 32}, {7, 31, 64, 64, 64},   {13, 129, 96, 200, 128},
                              {5, 9, 32, 40, 64},  {1, 576, 576, 1536, 576}, {6, 300, 384, 1536, 384}};
  std::uniform_int_distribution<int> qd(0, 15);
  for (const auto& s : shapes) {
    const std::size_t ldx = s.K_full + 3, ldy = s.N + 5, G = s.K_full / 32, ldw = packed_q4_ld(s.K_full);
    auto x = randn(s.M * ldx);
    for (std::size_t k = 0; k < 32 && k < s.K; ++k) x[k] = 0.f;  // an all-zero block (scale 1)
    std::vector<uint8_t> q(s.N_full * s.K_full);
    for (auto& v : q) v = static_cast<uint8_t>(qd(rng));
    auto Sf = randn(G * s.N_full, 0.05f), Zf = randn(G * s.N_full, 0.3f);
    std::vector<uint16_t> S(Sf.size()), Z(Zf.size());
    ref::f32_to_f16(Sf.size(), Sf.data(), S.data());
    ref::f32_to_f16(Zf.size(), Zf.data(), Z.data());
    std::vector<uint8_t> Wq(packed_q4_size(s.N_full, s.K_full), 0xAB);
    pack_q4_panels(s.N_full, s.K_full, q.data(), s.K_full, S.data(), Z.data(), s.N_full, Wq.data());
    // the layout itself: q4_weight reads back what pack wrote
    bool layout_ok = true;
    for (std::size_t n = 0; n < s.N_full; ++n)
      for (std::size_t k = 0; k < s.K_full; ++k) {
        const std::size_t g = (k / 32) * s.N_full + n;
        const float want = f16_to_f32_scalar(S[g]) * q[n * s.K_full + k] + f16_to_f32_scalar(Z[g]);
        layout_ok &= q4_weight(Wq.data(), ldw, k, n) == want;
      }
    CHECK(layout_ok, "pack_q4_panels N=%zu K=%zu", s.N_full, s.K_full);
    // activations: per-block quantisation, every ISA bit-identical to the reference
    const std::size_t ldq = s.K_full + 32, ldd = G + 1;
    std::vector<int8_t> xq(s.M * ldq, 0);
    std::vector<float> d(s.M * ldd, 0.f);
    std::vector<int32_t> xs(s.M * ldd, 0);
    ref::quantize_blocks_q8(s.M, s.K, x.data(), ldx, xq.data(), ldq, d.data(), xs.data(), ldd);
    for (Isa isa : supported_isas()) {
      std::vector<int8_t> xq2(s.M * ldq, 0);
      std::vector<float> d2(s.M * ldd, 0.f);
      std::vector<int32_t> xs2(s.M * ldd, 0);
      table_for(isa).quantize_blocks_q8(s.M, s.K, x.data(), ldx, xq2.data(), ldq, d2.data(), xs2.data(), ldd);
      CHECK(xq2 == xq && d2 == d && xs2 == xs, "quantize_blocks_q8 isa=%s M=%zu K=%zu", isa_name(isa), s.M, s.K);
    }
    CHECK(d[0] == 1.f && xs[0] == 0, "quantize_blocks_q8: an all-zero block has scale 1 and sum 0");
    // and the quantisation is close to x (|x - d q| <= d / 2)
    bool close = true;
    for (std::size_t i = 0; i < s.M; ++i)
      for (std::size_t k = 0; k < s.K; ++k)
        close &= std::fabs(x[i * ldx + k] - d[i * ldd + k / 32] * xq[i * ldq + k]) <= 0.5001f * d[i * ldd + k / 32];
    CHECK(close, "quantize_blocks_q8 error bound M=%zu K=%zu", s.M, s.K);
    auto bias = randn(s.N_full);
    auto y0 = randn(s.M * ldy);
    for (bool accumulate : {false, true})
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        std::vector<float> want = y0;
        ref::gemm_q4(s.M, s.N, s.K, xq.data(), ldq, d.data(), xs.data(), ldd, Wq.data(), ldw, b, want.data(), ldy,
                     accumulate);
        // the reference against its definition in floats (dequantised W times dequantised x)
        if (!accumulate && with_bias) {
          double worst = 0.0;
          for (std::size_t i = 0; i < s.M; ++i)
            for (std::size_t n = 0; n < s.N; ++n) {
              double v = bias[n];
              for (std::size_t k = 0; k < s.K; ++k)
                v += static_cast<double>(d[i * ldd + k / 32]) * xq[i * ldq + k] * q4_weight(Wq.data(), ldw, k, n);
              worst = std::fmax(worst, std::fabs(v - want[i * ldy + n]) / (1.0 + std::fabs(v)));
            }
          CHECK(worst <= 1e-5, "ref::gemm_q4 vs its definition M=%zu N=%zu K=%zu err=%g", s.M, s.N, s.K, worst);
        }
        for (Isa isa : supported_isas()) {
          std::vector<float> got = y0;
          table_for(isa).gemm_q4(s.M, s.N, s.K, xq.data(), ldq, d.data(), xs.data(), ldd, Wq.data(), ldw, b,
                                 got.data(), ldy, accumulate);
          const double tol = 2e-6 * std::sqrt(static_cast<double>(s.K) + 1.0) * 4;
          CHECK(max_rel_err(got, want) <= tol, "gemm_q4 isa=%s M=%zu N=%zu K=%zu acc=%d bias=%d err=%g",
                isa_name(isa), s.M, s.N, s.K, accumulate, with_bias, max_rel_err(got, want));
          if (s.N > 16) {  // a column sub-range at a panel start (how the engine splits outputs over threads)
            const std::size_t n0 = 16;
            std::vector<float> part = y0;
            table_for(isa).gemm_q4(s.M, s.N - n0, s.K, xq.data(), ldq, d.data(), xs.data(), ldd,
                                   Wq.data() + (n0 / 16) * ldw, ldw, b ? b + n0 : nullptr, part.data() + n0, ldy,
                                   accumulate);
            bool same = true;
            for (std::size_t i = 0; i < s.M; ++i)
              for (std::size_t n = 0; n < s.N + 5; ++n) {
                const float want_v = n < n0 ? y0[i * ldy + n] : want[i * ldy + n];
                same &= std::fabs(part[i * ldy + n] - want_v) <= tol * (1.0 + std::fabs(want_v));
              }
            CHECK(same, "gemm_q4 column range isa=%s M=%zu N=%zu", isa_name(isa), s.M, s.N);
          }
        }
      }
  }
}

void test_rmsnorm_silu() {
  for (std::size_t N : {1, 5, 16, 33, 576})
    for (std::size_t M : {1, 4}) {
      const std::size_t ld = N + 3;
      auto x = randn(M * ld, 2.f), gamma = randn(N), up = randn(M * ld);
      std::vector<float> want(M * ld, -7.f);
      ref::rmsnorm_f32(M, N, x.data(), ld, gamma.data(), 1e-5f, want.data(), ld);
      std::vector<float> gate = randn(M * ld, 4.f);
      gate[0] = -100.f;  // exp overflow territory for a naive silu
      std::vector<float> want_s = gate;
      ref::silu_mul_f32(M, N, want_s.data(), ld, up.data(), ld);
      for (Isa isa : supported_isas()) {
        std::vector<float> got(M * ld, -7.f);
        table_for(isa).rmsnorm_f32(M, N, x.data(), ld, gamma.data(), 1e-5f, got.data(), ld);
        CHECK(max_rel_err(got, want) <= 1e-5, "rmsnorm isa=%s M=%zu N=%zu err=%g", isa_name(isa), M, N,
              max_rel_err(got, want));
        std::vector<float> inplace = x;
        table_for(isa).rmsnorm_f32(M, N, inplace.data(), ld, gamma.data(), 1e-5f, inplace.data(), ld);
        bool same = true;
        for (std::size_t i = 0; i < M; ++i)
          for (std::size_t n = 0; n < N; ++n)
            same &= std::fabs(inplace[i * ld + n] - want[i * ld + n]) <= 1e-5f * (1.f + std::fabs(want[i * ld + n]));
        CHECK(same, "rmsnorm in place isa=%s M=%zu N=%zu", isa_name(isa), M, N);
        std::vector<float> got_s = gate;
        table_for(isa).silu_mul_f32(M, N, got_s.data(), ld, up.data(), ld);
        CHECK(max_rel_err(got_s, want_s) <= 2e-6, "silu_mul isa=%s M=%zu N=%zu err=%g", isa_name(isa), M, N,
              max_rel_err(got_s, want_s));
      }
    }
}

// gelu_tanh_mul and softcap: the scalar reference against known values, every ISA's vector version
// (a rational tanh) against the reference, small and large arguments alike.
void test_gelu_tanh_softcap() {
  float g[4] = {1.f, -2.f, 0.f, 3.f}, u[4] = {2.f, 1.f, 5.f, -1.f};
  ref::gelu_tanh_mul_f32(1, 4, g, 4, u, 4);
  const float want_g[4] = {2.f * 0.8411920f, -0.0454023f, 0.f, -2.9963627f};  // torch gelu(approximate='tanh')
  for (int i = 0; i < 4; ++i) CHECK(std::fabs(g[i] - want_g[i]) <= 1e-6f * (1.f + std::fabs(want_g[i])), "gelu_tanh %d", i);
  float c[3] = {100.f, -1.f, 0.f};
  ref::softcap_f32(1, 3, c, 3, 0.5f, 30.f);
  const float want_c[3] = {30.f * std::tanh(50.f / 30.f), 30.f * std::tanh(-0.5f / 30.f), 0.f};
  for (int i = 0; i < 3; ++i) CHECK(std::fabs(c[i] - want_c[i]) <= 1e-6f * (1.f + std::fabs(want_c[i])), "softcap %d", i);
  for (Isa isa : supported_isas())
    for (std::size_t N : {1, 7, 33})
      for (std::size_t M : {1, 3}) {
        const std::size_t ld = N + 2;
        auto x = randn(M * ld, 3.f), up = randn(M * ld);
        std::vector<float> want = x, got = x, want_n = x, got_n = x, want_c2 = x, got_c2 = x;
        ref::gelu_tanh_mul_f32(M, N, want.data(), ld, up.data(), ld);
        table_for(isa).gelu_tanh_mul_f32(M, N, got.data(), ld, up.data(), ld);
        ref::gelu_tanh_mul_f32(M, N, want_n.data(), ld, nullptr, ld);
        table_for(isa).gelu_tanh_mul_f32(M, N, got_n.data(), ld, nullptr, ld);
        ref::softcap_f32(M, N, want_c2.data(), ld, 0.25f, 50.f);
        table_for(isa).softcap_f32(M, N, got_c2.data(), ld, 0.25f, 50.f);
        std::vector<float> want_c3 = x, got_c3 = x;  // arguments past the clamp of the vector tanh (|x| > 7.9)
        ref::softcap_f32(M, N, want_c3.data(), ld, 8.f, 2.f);
        table_for(isa).softcap_f32(M, N, got_c3.data(), ld, 8.f, 2.f);
        CHECK(max_rel_err(got, want) <= 2e-6 && max_rel_err(got_n, want_n) <= 2e-6 &&
                  max_rel_err(got_c2, want_c2) <= 2e-6 && max_rel_err(got_c3, want_c3) <= 2e-6,
              "gelu_tanh_mul / softcap isa=%s M=%zu N=%zu", isa_name(isa), M, N);
      }
}

void test_quantize_and_gemm_i8() {
  for (const auto& s : kGemmShapes) {
    const std::size_t ldx = s.K_full + 2, ldq = packed_k4(s.K_full) + 4, ldy = s.N + 3;
    auto x = randn(s.M * ldx, 3.f);
    if (s.M > 2) std::fill(x.begin() + ldx, x.begin() + 2 * ldx, 0.f);  // a zero row: scale 1
    // Reference quantisation; every ISA must reproduce it bit for bit.
    std::vector<int8_t> xq_want(s.M * ldq, 99);
    std::vector<float> sc_want(s.M);
    std::vector<int32_t> sum_want(s.M);
    ref::quantize_rows_i8(s.M, s.K, x.data(), ldx, xq_want.data(), ldq, sc_want.data(), sum_want.data());
    for (Isa isa : supported_isas()) {
      std::vector<int8_t> xq(s.M * ldq, 99);
      std::vector<float> sc(s.M);
      std::vector<int32_t> sum(s.M);
      table_for(isa).quantize_rows_i8(s.M, s.K, x.data(), ldx, xq.data(), ldq, sc.data(), sum.data());
      CHECK(xq == xq_want && sc == sc_want && sum == sum_want, "quantize_rows_i8 isa=%s M=%zu K=%zu",
            isa_name(isa), s.M, s.K);
    }
    // Full int8 weight [N_full, K_full] packed to P32K4; the kernels see the (N, K) prefix slice.
    auto Wfull = rand_i8(s.N_full * s.K_full);
    std::vector<int8_t> Wq(packed_i8_size(s.N_full, s.K_full));
    pack_p32k4_i8(s.N_full, s.K_full, Wfull.data(), s.K_full, Wq.data());
    const std::size_t ldw = packed_i8_ld(s.K_full);
    for (std::size_t n = 0; n < packed_n32(s.N_full); ++n)  // the layout formula of kernels.h, padding zero
      for (std::size_t k = 0; k < packed_k4(s.K_full); ++k) {
        const int8_t want = n < s.N_full && k < s.K_full ? Wfull[n * s.K_full + k] : 0;
        CHECK(Wq[(n / 32) * ldw + (k / 4) * 128 + (n % 32) * 4 + k % 4] == want, "pack_p32k4_i8 n=%zu k=%zu", n, k);
      }
    auto w_scale = randn(s.N_full, 0.01f);
    auto bias = randn(s.N_full);
    auto y0 = randn(s.M * ldy);
    const std::vector<float> ones_n(s.N_full, 1.f), ones_m(s.M, 1.f);
    for (bool accumulate : {false, true}) {
      // Unit scales, no bias: y must be the exact int32 sums (|acc| < 2^24 here).
      std::vector<float> exact_want(s.M * ldy, 0.f);
      ref::gemm_i8(s.M, s.N, s.K, xq_want.data(), ldq, ones_m.data(), sum_want.data(), Wq.data(), ldw,
                   ones_n.data(), nullptr, exact_want.data(), ldy, false);
      for (std::size_t i = 0; i < s.M; ++i)  // and the reference is the plain dot product
        for (std::size_t n = 0; n < s.N; ++n) {
          int64_t acc = 0;
          for (std::size_t k = 0; k < s.K; ++k) acc += int64_t{xq_want[i * ldq + k]} * Wfull[n * s.K_full + k];
          CHECK(exact_want[i * ldy + n] == static_cast<float>(acc), "ref gemm_i8 i=%zu n=%zu", i, n);
        }
      std::vector<float> scaled_want = y0;
      ref::gemm_i8(s.M, s.N, s.K, xq_want.data(), ldq, sc_want.data(), sum_want.data(), Wq.data(), ldw,
                   w_scale.data(), bias.data(), scaled_want.data(), ldy, accumulate);
      for (Isa isa : supported_isas()) {
        const auto& t = table_for(isa);
        std::vector<float> exact(s.M * ldy, 0.f), scaled = y0;
        t.gemm_i8(s.M, s.N, s.K, xq_want.data(), ldq, ones_m.data(), sum_want.data(), Wq.data(), ldw,
                  ones_n.data(), nullptr, exact.data(), ldy, false);
        t.gemm_i8(s.M, s.N, s.K, xq_want.data(), ldq, sc_want.data(), sum_want.data(), Wq.data(), ldw,
                  w_scale.data(), bias.data(), scaled.data(), ldy, accumulate);
        CHECK(exact == exact_want, "gemm_i8 exact isa=%s M=%zu N=%zu K=%zu", isa_name(isa), s.M, s.N, s.K);
        if (s.N > kI8Panel) {  // a column sub-range from the second panel on (how threads split a layer)
          std::vector<float> part(s.M * ldy, 0.f);
          t.gemm_i8(s.M, s.N - kI8Panel, s.K, xq_want.data(), ldq, ones_m.data(), sum_want.data(), Wq.data() + ldw,
                    ldw, ones_n.data() + kI8Panel, nullptr, part.data() + kI8Panel, ldy, false);
          bool same = true;
          for (std::size_t i = 0; i < s.M; ++i)
            for (std::size_t n = kI8Panel; n < s.N; ++n) same &= part[i * ldy + n] == exact_want[i * ldy + n];
          CHECK(same, "gemm_i8 panel sub-range isa=%s M=%zu N=%zu K=%zu", isa_name(isa), s.M, s.N, s.K);
        }
        CHECK(max_rel_err(scaled, scaled_want) <= 1e-6, "gemm_i8 scaled isa=%s M=%zu N=%zu K=%zu acc=%d err=%g",
              isa_name(isa), s.M, s.N, s.K, accumulate, max_rel_err(scaled, scaled_want));
      }
    }
  }
}

void test_bias_gelu() {
  for (std::size_t N : {1, 7, 16, 17, 100, 1536})
    for (std::size_t M : {1, 3}) {
      const std::size_t ldy = N + 2;
      auto y0 = randn(M * ldy, 3.f);
      y0[0] = 0.f;
      auto bias = randn(N);
      for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
        std::vector<float> want = y0;
        ref::bias_gelu_f32(M, N, b, want.data(), ldy);
        for (Isa isa : supported_isas()) {
          std::vector<float> got = y0;
          table_for(isa).bias_gelu_f32(M, N, b, got.data(), ldy);
          CHECK(max_rel_err(got, want) <= 2e-6, "bias_gelu isa=%s M=%zu N=%zu err=%g", isa_name(isa), M, N,
                max_rel_err(got, want));
        }
      }
    }
}

void test_layernorm() {
  for (std::size_t N : {1, 5, 16, 33, 384})
    for (std::size_t M : {1, 4}) {
      const std::size_t ld = N + 3;
      auto x = randn(M * ld, 2.f), res = randn(M * ld), gamma = randn(N), beta = randn(N);
      for (auto& v : x) v += 5.f;  // a large mean: the variance must not cancel
      for (bool with_res : {false, true}) {
        const float* r = with_res ? res.data() : nullptr;
        std::vector<float> want(M * ld, -7.f);
        ref::layernorm_f32(M, N, x.data(), ld, r, ld, gamma.data(), beta.data(), 1e-12f, want.data(), ld);
        for (Isa isa : supported_isas()) {
          std::vector<float> got(M * ld, -7.f);
          table_for(isa).layernorm_f32(M, N, x.data(), ld, r, ld, gamma.data(), beta.data(), 1e-12f, got.data(), ld);
          CHECK(max_rel_err(got, want) <= 1e-5, "layernorm isa=%s M=%zu N=%zu res=%d err=%g", isa_name(isa), M, N,
                with_res, max_rel_err(got, want));
          std::vector<float> inplace = x;  // out aliases x (the engine's residual stream)
          table_for(isa).layernorm_f32(M, N, inplace.data(), ld, r, ld, gamma.data(), beta.data(), 1e-12f,
                                       inplace.data(), ld);
          bool same = true;
          for (std::size_t i = 0; i < M; ++i)
            for (std::size_t n = 0; n < N; ++n)
              same &= std::fabs(inplace[i * ld + n] - want[i * ld + n]) <= 1e-5f * (1.f + std::fabs(want[i * ld + n]));
          CHECK(same, "layernorm in place isa=%s M=%zu N=%zu", isa_name(isa), M, N);
        }
      }
    }
}

void test_softmax() {
  for (std::size_t N : {1, 3, 16, 19, 128, 130})
    for (std::size_t M : {1, 5}) {
      const std::size_t ld = N + 1;
      auto x0 = randn(M * ld, 4.f);
      std::vector<float> mask(N, 0.f);
      for (std::size_t n = 0; n < N; n += 3) mask[n] = -3.4028234e38f;  // HF's padding value
      std::vector<float> all_masked(N, -INFINITY);
      for (const float* m : {static_cast<const float*>(nullptr), static_cast<const float*>(mask.data()),
                             static_cast<const float*>(all_masked.data())}) {
        std::vector<float> want = x0;
        ref::softmax_f32(M, N, want.data(), ld, m, 0.17677669f);
        for (Isa isa : supported_isas()) {
          std::vector<float> got = x0;
          table_for(isa).softmax_f32(M, N, got.data(), ld, m, 0.17677669f);
          CHECK(max_rel_err(got, want) <= 2e-6, "softmax isa=%s M=%zu N=%zu err=%g", isa_name(isa), M, N,
                max_rel_err(got, want));
        }
      }
    }
}

void test_f16_conversion() {
  // Every half, both directions: f16 -> f32 must be exact and f32 -> f16 must round-trip.
  std::vector<uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> want(all.size());
  ref::f16_to_f32(all.size(), all.data(), want.data());
  // And floats that need rounding: ties, subnormal halves, overflow to inf.
  std::vector<float> floats = randn(1001, 100.f);
  for (float v : {65504.f, 65519.f, 65520.f, 1e6f, -1e6f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f,
                  1.0009765625f + 0.00048828125f, 6.1035156e-05f, -0.f, INFINITY, -INFINITY})
    floats.push_back(v);
  std::vector<uint16_t> want_h(floats.size());
  ref::f32_to_f16(floats.size(), floats.data(), want_h.data());
  for (Isa isa : supported_isas()) {
    std::vector<float> got(all.size());
    table_for(isa).f16_to_f32(all.size(), all.data(), got.data());
    bool exact = true;
    for (std::size_t i = 0; i < got.size(); ++i)
      exact &= std::isnan(want[i]) ? std::isnan(got[i]) : std::memcmp(&got[i], &want[i], 4) == 0;
    CHECK(exact, "f16_to_f32 isa=%s", isa_name(isa));
    std::vector<uint16_t> back(all.size());
    table_for(isa).f32_to_f16(got.size(), got.data(), back.data());
    bool round_trip = true;
    for (std::size_t i = 0; i < back.size(); ++i) round_trip &= std::isnan(want[i]) || back[i] == all[i];
    CHECK(round_trip, "f32_to_f16 round trip isa=%s", isa_name(isa));
    std::vector<uint16_t> got_h(floats.size());
    table_for(isa).f32_to_f16(floats.size(), floats.data(), got_h.data());
    CHECK(got_h == want_h, "f32_to_f16 rounding isa=%s", isa_name(isa));
  }
  CHECK(f32_to_f16_scalar(65520.f) == 0x7c00 && f32_to_f16_scalar(65519.f) == 0x7bff &&
            f32_to_f16_scalar(2.9802322e-8f) == 0 && f32_to_f16_scalar(2.9802326e-8f) == 1,
        "f32_to_f16_scalar rounding edge cases");
}

void test_dot() {
  for (std::size_t n : {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 384, 1536, 1537}) {
    auto a = randn(n), b = randn(n);
    const float want = ref::dot_f32(a.data(), b.data(), n);
    for (Isa isa : supported_isas()) {
      const float got = table_for(isa).dot_f32(a.data(), b.data(), n);
      const float tol = 1e-5f * std::sqrt(static_cast<float>(n) + 1.f) * 4.f;
      CHECK(std::fabs(got - want) <= tol, "dot_f32 isa=%s n=%zu got %g want %g", isa_name(isa), n, got, want);
    }
  }
}

}  // namespace

int main() {
  std::printf("ISAs: ");
  for (Isa isa : supported_isas()) std::printf("%s ", isa_name(isa));
  std::printf("(selected: %s)\n", isa_name(selected_isa()));
  test_dot();
  test_gemm_f32_f16();
  test_quantize_and_gemm_i8();
  test_gemm_q4();
  test_rmsnorm_silu();
  test_gelu_tanh_softcap();
  test_bias_gelu();
  test_layernorm();
  test_softmax();
  test_f16_conversion();
  return mlfs_test::report("test_kernels");
}
