// AVX-512 GEMMs (f32, f16 via F16C-style vcvtph2ps, int8 via VNNI vpdpbusd) and the int8
// activation quantiser. Layouts and the VNNI compensation are described in mlfs/kernels.h.
// Register tiles: MR rows x NB blocks of 16 columns; every block load and store is masked by the
// columns that exist, so tails and prefix slices never touch memory outside the slice.
#include <immintrin.h>

#include <cstring>

#include "../float_tile.h"
#include "mlfs/kernels.h"

namespace mlfs::kernels::avx512 {
namespace {

constexpr std::size_t kBlock = 16;  // fp32 / int32 lanes per zmm

inline __mmask16 block_mask(std::size_t n_valid, int b) {
  const std::size_t first = static_cast<std::size_t>(b) * kBlock;
  if (n_valid >= first + kBlock) return 0xFFFF;
  return static_cast<__mmask16>((1u << (n_valid - first)) - 1u);
}

// y = v (+ y), masked; v already holds alpha * acc + bias.
inline void store_block(float* y, __mmask16 m, __m512 v, bool accumulate) {
  if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, y));
  _mm512_mask_storeu_ps(y, m, v);
}

// Vector primitives of the shared fp32/fp16 tile (../float_tile.h): 16 lanes, AVX-512 masks.
struct Avx512 {
  using Vec = __m512;
  using Mask = __mmask16;
  static constexpr std::size_t kBlock = 16;
  static Mask mask(std::size_t n_valid, int b) { return block_mask(n_valid, b); }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static Vec load(const uint16_t* p, Mask m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
  static void store(float* y, Mask m, Vec v, bool accumulate) { store_block(y, m, v, accumulate); }
};

// acc += u8(w) . s8(x) in groups of 4 bytes. Inline asm because GCC 12 does not keep a loop-carried
// _mm512_dpbusd_epi32 accumulator in place: it copies every accumulator through another register
// (and the stack) on each step, which halves the throughput; "+v" pins the accumulator.
inline void dpbusd(__m512i& acc, __m512i w_u8, __m512i x_s8) {
  __asm__("vpdpbusd %[x], %[w], %[acc]" : [acc] "+v"(acc) : [w] "v"(w_u8), [x] "v"(x_s8));
}

// int8: acc[r][b] += sum_{k in group g} (w + 128) * xq over K-groups of 4, then the compensation
// -128 * x_sum[r] and the rescale. A P32K4 block of 16 columns is one 64-byte zmm (16 x 4 bytes).
// Mirrors the AVX2 tile's panel addressing (this file compiles here but cannot run on the AVX2 dev box).
struct I8Tile {
  std::size_t groups;  // ceil(K / 4)
  const int8_t* xq;
  std::size_t ldq;
  const float* x_scale;
  const int32_t* x_sum;
  const int8_t* W;
  std::size_t ldw;
  const float* w_scale;
  const float* bias;
  float* y;
  std::size_t ldy;
  bool accumulate;

  template <int MR, int NB>
  void run(std::size_t m0, std::size_t n0, std::size_t n_valid) const {
    __mmask16 mask[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) mask[b] = block_mask(n_valid, b);
    __m512i acc[MR][NB];
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r)
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_si512();
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    const int8_t* xr = xq + m0 * ldq;
    // Block b's 16 columns lie in one whole P32K4 panel: unmasked loads (see the AVX2 tile).
    const int8_t* wb[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) {
      const std::size_t c = n0 + b * kBlock;
      wb[b] = W + (c / kI8Panel) * ldw + (c % kI8Panel) * 4;
    }
    for (std::size_t g = 0; g < groups; ++g) {
      __m512i w[NB];
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b)
        w[b] = _mm512_xor_si512(_mm512_loadu_si512(wb[b] + g * 4 * kI8Panel), flip);
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        int32_t x4;
        std::memcpy(&x4, xr + r * ldq + 4 * g, 4);
        const __m512i xv = _mm512_set1_epi32(x4);
        MLFS_UNROLL
        for (int b = 0; b < NB; ++b) dpbusd(acc[r][b], w[b], xv);
      }
    }
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) {
      const std::size_t n = n0 + b * kBlock;
      const __m512 ws = _mm512_maskz_loadu_ps(mask[b], w_scale + n);
      const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask[b], bias + n) : _mm512_setzero_ps();
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m512i exact = _mm512_sub_epi32(acc[r][b], _mm512_set1_epi32(128 * x_sum[m0 + r]));
        const __m512 s = _mm512_mul_ps(_mm512_set1_ps(x_scale[m0 + r]), ws);
        store_block(y + (m0 + r) * ldy + n, mask[b], _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), s, bv),
                    accumulate);
      }
    }
  }
};

}  // namespace

void gemm_f32(size_t M, size_t N, size_t K, float alpha, const float* x, size_t ldx,
              const float* Wt, size_t ldw, const float* bias, float* y, size_t ldy,
              bool accumulate) {
  run_float_gemm<Avx512, 4>(M, N, K, alpha, x, ldx, Wt, ldw, bias, y, ldy, accumulate);
}

void gemm_f16(size_t M, size_t N, size_t K, const float* x, size_t ldx, const uint16_t* Wt,
              size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  run_float_gemm<Avx512, 4>(M, N, K, 1.f, x, ldx, Wt, ldw, bias, y, ldy, accumulate);
}

// ---- q4 "P16" panels x block-int8 activations (layout and definition: mlfs/kernels.h) ----
// Mirrors the AVX2 kernel (gemm_avx2.cpp) with one zmm = the whole 16-column panel: per group of
// 32 inputs, 4 aligned 64-byte loads give 8 u8 operands after `& 15` / `>> 4 & 15`, and vpdpbusd
// (u8 weights x s8 activations, a 4-byte broadcast) sums them straight into int32 per column; then
// y += S * (d * acc) + Z * (d * xs) with the group's fp16 S / Z converted by vcvtph2ps. Rows are
// tiled by up to 4 so the unpacked weights serve every row. NOTE: compiled but never executed on
// the AVX2-only development machine; the native test runs it wherever the CPU has AVX-512 VNNI.
namespace {

template <int MR>
void q4_tile(std::size_t G, const int8_t* xq, std::size_t ldq, const float* d, const int32_t* xs, std::size_t ldd,
             const uint8_t* blk, std::size_t n_valid, const float* bias, float* y, std::size_t ldy,
             bool accumulate) {
  const __m512i m4 = _mm512_set1_epi8(15);
  __m512 yv[MR];
  MLFS_UNROLL
  for (int r = 0; r < MR; ++r) yv[r] = _mm512_setzero_ps();
  for (std::size_t g = 0; g < G; ++g, blk += kQ4BlockBytes) {
    __m512i w[8];
    MLFS_UNROLL
    for (int s = 0; s < 4; ++s) {
      const __m512i raw = _mm512_loadu_si512(blk + s * 64);
      w[2 * s] = _mm512_and_si512(raw, m4);
      w[2 * s + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
    }
    const __m512 S = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 256)));
    const __m512 Z = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 288)));
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r) {
      const int8_t* xg = xq + r * ldq + g * kQ4Group;
      __m512i acc = _mm512_setzero_si512();
      MLFS_UNROLL
      for (int i = 0; i < 8; ++i) {
        int32_t x4;
        std::memcpy(&x4, xg + 4 * i, 4);
        dpbusd(acc, w[i], _mm512_set1_epi32(x4));
      }
      const float dg = d[r * ldd + g];
      yv[r] = _mm512_fmadd_ps(S, _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(dg)), yv[r]);
      yv[r] = _mm512_fmadd_ps(Z, _mm512_set1_ps(dg * static_cast<float>(xs[r * ldd + g])), yv[r]);
    }
  }
  const __mmask16 m = block_mask(n_valid, 0);
  const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias) : _mm512_setzero_ps();
  MLFS_UNROLL
  for (int r = 0; r < MR; ++r) store_block(y + r * ldy, m, _mm512_add_ps(yv[r], bv), accumulate);
}

}  // namespace

void gemm_q4(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* d, const int32_t* xs,
             size_t ldd, const uint8_t* Wq, size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  if (M == 0 || N == 0) return;
  const size_t G = K / kQ4Group;
  for (size_t n0 = 0; n0 < N; n0 += kQ4Panel) {
    const uint8_t* panel = Wq + (n0 / kQ4Panel) * ldw;
    const size_t nv = N - n0 < kQ4Panel ? N - n0 : kQ4Panel;
    const float* b = bias ? bias + n0 : nullptr;
    for (size_t m0 = 0; m0 < M; m0 += 4) {
      const int8_t* xr = xq + m0 * ldq;
      const float* dr = d + m0 * ldd;
      const int32_t* sr = xs + m0 * ldd;
      float* yr = y + m0 * ldy + n0;
      switch (M - m0 < 4 ? M - m0 : 4) {
        case 1: q4_tile<1>(G, xr, ldq, dr, sr, ldd, panel, nv, b, yr, ldy, accumulate); break;
        case 2: q4_tile<2>(G, xr, ldq, dr, sr, ldd, panel, nv, b, yr, ldy, accumulate); break;
        case 3: q4_tile<3>(G, xr, ldq, dr, sr, ldd, panel, nv, b, yr, ldy, accumulate); break;
        default: q4_tile<4>(G, xr, ldq, dr, sr, ldd, panel, nv, b, yr, ldy, accumulate); break;
      }
    }
  }
}

void gemm_i8(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* x_scale,
             const int32_t* x_sum, const int8_t* Wq, size_t ldw, const float* w_scale,
             const float* bias, float* y, size_t ldy, bool accumulate) {
  if (M == 0 || N == 0) return;
  const I8Tile tile{(K + 3) / 4, xq, ldq, x_scale, x_sum, Wq, ldw, w_scale, bias, y, ldy, accumulate};
  if (M == 1)
    TileGrid<1, 8, I8Tile>::run(tile, M, N, kBlock);
  else
    TileGrid<6, 4, I8Tile>::run(tile, M, N, kBlock);
}

void quantize_rows_i8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq,
                      float* scale, int32_t* x_sum) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (size_t i = 0; i < M; ++i) {
    const float* row = x + i * ldx;
    __m512 amax = _mm512_setzero_ps();
    for (size_t k = 0; k < K; k += kBlock) {
      const __mmask16 m = block_mask(K - k, 0);
      amax = _mm512_max_ps(amax, _mm512_and_ps(_mm512_maskz_loadu_ps(m, row + k), abs_mask));
    }
    const float a = _mm512_reduce_max_ps(amax);
    const float s = a > 0.f ? a / 127.f : 1.f;
    // Division, not a reciprocal multiply, and round-half-even conversion: bit-identical to the
    // reference (and to torch's x / scale then round).
    const __m512 vs = _mm512_set1_ps(s);
    const __m512 lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
    __m512i sum = _mm512_setzero_si512();
    int8_t* out = xq + i * ldq;
    for (size_t k = 0; k < K; k += kBlock) {
      const __mmask16 m = block_mask(K - k, 0);
      __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(m, row + k), vs);
      q = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT), lo), hi);
      const __m512i qi = _mm512_cvtps_epi32(q);
      sum = _mm512_add_epi32(sum, qi);
      _mm_mask_storeu_epi8(out + k, m, _mm512_cvtepi32_epi8(qi));
    }
    for (size_t k = K; k < packed_k4(K); ++k) out[k] = 0;
    scale[i] = s;
    x_sum[i] = _mm512_reduce_add_epi32(sum);
  }
}

}  // namespace mlfs::kernels::avx512
