// AVX2 + FMA + F16C GEMMs and the int8 activation quantiser. Same tiling as the AVX-512 file with
// 8-lane blocks; partial blocks use vpmaskmov (fp32 / int32 lanes) or a small staging copy (fp16).
// int8 without VNNI: |x| (u8) times sign(w, x) (s8) with vpmaddubsw is exact here because
// |x|, |w| <= 127 (two products sum to at most 32258 < 32767), then vpmaddwd sums pairs to int32.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "../float_tile.h"
#include "mlfs/kernels.h"

namespace mlfs::kernels::avx2 {
namespace {

constexpr std::size_t kBlock = 8;  // fp32 / int32 lanes per ymm
constexpr std::size_t kFewRows = 16;  // up to this many rows the int8 GEMM takes the wide tile (gemm_i8)

// Lane mask for block b of a tile with n_valid columns; `full` tells whether all 8 lanes are valid.
struct BlockMask {
  __m256i lanes;
  std::size_t count;
};

inline BlockMask block_mask(std::size_t n_valid, int b) {
  const std::size_t first = static_cast<std::size_t>(b) * kBlock;
  const std::size_t count = n_valid >= first + kBlock ? kBlock : n_valid - first;
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return {_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), idx), count};
}

inline __m256 load_f32(const float* p, const BlockMask& m) {
  return m.count == kBlock ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m.lanes);
}

inline void store_block(float* y, const BlockMask& m, __m256 v, bool accumulate) {
  if (accumulate) v = _mm256_add_ps(v, load_f32(y, m));
  if (m.count == kBlock)
    _mm256_storeu_ps(y, v);
  else
    _mm256_maskstore_ps(y, m.lanes, v);
}

// Vector primitives of the shared fp32/fp16 tile (../float_tile.h): 8 lanes, vpmaskmov masks.
struct Avx2 {
  using Vec = __m256;
  using Mask = BlockMask;
  static constexpr std::size_t kBlock = 8;
  static Mask mask(std::size_t n_valid, int b) { return block_mask(n_valid, b); }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec load(const float* p, const Mask& m) { return load_f32(p, m); }
  static Vec load(const uint16_t* p, const Mask& m) {
    if (m.count == kBlock) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    uint16_t staged[kBlock] = {};
    std::memcpy(staged, p, m.count * sizeof(uint16_t));
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(staged)));
  }
  static void store(float* y, const Mask& m, Vec v, bool accumulate) { store_block(y, m, v, accumulate); }
};

struct I8Tile {
  std::size_t groups;  // ceil(K / 4)
  const int8_t* xq;
  std::size_t ldq;
  const float* x_scale;
  const int8_t* W;
  std::size_t ldw;
  const float* w_scale;
  const float* bias;
  float* y;
  std::size_t ldy;
  bool accumulate;

  template <int MR, int NB>
  void run(std::size_t m0, std::size_t n0, std::size_t n_valid) const {
    BlockMask mask[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) mask[b] = block_mask(n_valid, b);
    __m256i acc[MR][NB];
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r)
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) acc[r][b] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t* xr = xq + m0 * ldq;
    // Block b's 8 columns lie in one P32K4 panel (whole, so loads need no mask: a partial block's
    // extra columns are padding or columns past the slice, dropped on store).
    const int8_t* wb[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) {
      const std::size_t c = n0 + b * kBlock;
      wb[b] = W + (c / kI8Panel) * ldw + (c % kI8Panel) * 4;
    }
    for (std::size_t g = 0; g < groups; ++g) {
      __m256i w[NB];
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b)
        w[b] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[b] + g * 4 * kI8Panel));
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        int32_t x4;
        std::memcpy(&x4, xr + r * ldq + 4 * g, 4);
        const __m256i xv = _mm256_set1_epi32(x4);
        const __m256i x_abs = _mm256_abs_epi8(xv);
        MLFS_UNROLL
        for (int b = 0; b < NB; ++b) {
          const __m256i pairs = _mm256_maddubs_epi16(x_abs, _mm256_sign_epi8(w[b], xv));
          acc[r][b] = _mm256_add_epi32(acc[r][b], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) {
      const std::size_t n = n0 + b * kBlock;
      const __m256 ws = load_f32(w_scale + n, mask[b]);
      const __m256 bv = bias ? load_f32(bias + n, mask[b]) : _mm256_setzero_ps();
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m256 s = _mm256_mul_ps(_mm256_set1_ps(x_scale[m0 + r]), ws);
        store_block(y + (m0 + r) * ldy + n, mask[b], _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][b]), s, bv),
                    accumulate);
      }
    }
  }
};

}  // namespace

void gemm_f32(size_t M, size_t N, size_t K, float alpha, const float* x, size_t ldx,
              const float* Wt, size_t ldw, const float* bias, float* y, size_t ldy,
              bool accumulate) {
  run_float_gemm<Avx2, 2>(M, N, K, alpha, x, ldx, Wt, ldw, bias, y, ldy, accumulate);
}

void gemm_f16(size_t M, size_t N, size_t K, const float* x, size_t ldx, const uint16_t* Wt,
              size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  run_float_gemm<Avx2, 2>(M, N, K, 1.f, x, ldx, Wt, ldw, bias, y, ldy, accumulate);
}

void gemm_i8(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* x_scale,
             const int32_t* /*x_sum: no u8 offset on this path*/, const int8_t* Wq, size_t ldw,
             const float* w_scale, const float* bias, float* y, size_t ldy, bool accumulate) {
  if (M == 0 || N == 0) return;
  const I8Tile tile{(K + 3) / 4, xq, ldq, x_scale, Wq, ldw, w_scale, bias, y, ldy, accumulate};
  // A tile 4 blocks wide reads each group's whole 128-byte panel row (two cache lines) at once; a
  // 2-block tile reads one line per pass, and the adjacent-line prefetcher fetches the other anyway,
  // so every weight byte came from memory twice. Few rows (decode, speculative verification) are
  // bound by those reads: they take the wide tile. Many rows (prefill) are bound by the multiplies
  // and reuse each column tile from cache: the 4-row tile with 8 accumulators.
  if (M == 1)
    TileGrid<1, 4, I8Tile>::run(tile, M, N, kBlock);
  else if (M <= kFewRows)
    TileGrid<2, 4, I8Tile>::run(tile, M, N, kBlock);
  else
    TileGrid<4, 2, I8Tile>::run(tile, M, N, kBlock);
}

// ---- q4 "P16" panels x block-int8 activations (layout and definition: mlfs/kernels.h) ----
// Per group of 32 inputs and half-panel of 8 columns, 4 loads of 32 bytes (8 columns x 4 bytes)
// give 8 u8 operands after `& 15` / `>> 4 & 15`; vpmaddubsw (u8 weights x s8 activations, a 4-byte
// broadcast) sums pairs to int16 and the 8 results are added in int16 (each lane holds 16
// products, |sum| <= 16 * 15 * 127 = 30480 < 32767: exact), then one vpmaddwd widens to int32 per
// column; the group's fp16 scales / minimums (F16C) turn it into fp32:
//   y += S * (d * acc) + Z * (d * xs).
// M = 1 walks each panel once with both halves (a single sequential stream); M > 1 walks it once
// per half with up to 4 rows, so the 8 unpacked weight vectors are reused by every row.
namespace {

template <int MR, int NH>
inline void q4_panel(std::size_t G, const int8_t* xq, std::size_t ldq, const float* d, const int32_t* xs,
                     std::size_t ldd, const uint8_t* blk, int h0, __m256 (&yv)[MR][NH]) {
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256i ones = _mm256_set1_epi16(1);
  MLFS_UNROLL
  for (int r = 0; r < MR; ++r)
    MLFS_UNROLL
    for (int h = 0; h < NH; ++h) yv[r][h] = _mm256_setzero_ps();
  for (std::size_t g = 0; g < G; ++g, blk += kQ4BlockBytes) {
    __m256i w[NH][8];
    MLFS_UNROLL
    for (int h = 0; h < NH; ++h)
      MLFS_UNROLL
      for (int s = 0; s < 4; ++s) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + s * 64 + (h0 + h) * 32));
        w[h][2 * s] = _mm256_and_si256(raw, m4);
        w[h][2 * s + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
      }
    __m256 S[NH], Z[NH];
    MLFS_UNROLL
    for (int h = 0; h < NH; ++h) {
      S[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 256 + (h0 + h) * 16)));
      Z[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 288 + (h0 + h) * 16)));
    }
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r) {
      const int8_t* xg = xq + r * ldq + g * kQ4Group;
      __m256i xb[8];
      MLFS_UNROLL
      for (int i = 0; i < 8; ++i) {
        int32_t x4;
        std::memcpy(&x4, xg + 4 * i, 4);
        xb[i] = _mm256_set1_epi32(x4);
      }
      const float dg = d[r * ldd + g];
      const __m256 vd = _mm256_set1_ps(dg);
      const __m256 vds = _mm256_set1_ps(dg * static_cast<float>(xs[r * ldd + g]));
      MLFS_UNROLL
      for (int h = 0; h < NH; ++h) {
        __m256i s16 = _mm256_maddubs_epi16(w[h][0], xb[0]);
        MLFS_UNROLL
        for (int i = 1; i < 8; ++i) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[h][i], xb[i]));
        const __m256 acc = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
        yv[r][h] = _mm256_fmadd_ps(S[h], _mm256_mul_ps(acc, vd), yv[r][h]);
        yv[r][h] = _mm256_fmadd_ps(Z[h], vds, yv[r][h]);
      }
    }
  }
}

// Rows m0..m0+MR of half-panels h0..h0+NH of the panel at columns n0 (n_valid of its 16 exist).
template <int MR, int NH>
void q4_tile(std::size_t G, const int8_t* xq, std::size_t ldq, const float* d, const int32_t* xs, std::size_t ldd,
             const uint8_t* panel, int h0, std::size_t n_valid, const float* bias, float* y, std::size_t ldy,
             bool accumulate) {
  __m256 yv[MR][NH];
  q4_panel<MR, NH>(G, xq, ldq, d, xs, ldd, panel, h0, yv);
  MLFS_UNROLL
  for (int h = 0; h < NH; ++h) {
    const int b = h0 + h;
    if (n_valid <= static_cast<std::size_t>(b) * kBlock) break;
    const BlockMask m = block_mask(n_valid, b);
    const __m256 bv = bias ? load_f32(bias + b * kBlock, m) : _mm256_setzero_ps();
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r) store_block(y + r * ldy + b * kBlock, m, _mm256_add_ps(yv[r][h], bv), accumulate);
  }
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
    if (M == 1) {
      q4_tile<1, 2>(G, xq, ldq, d, xs, ldd, panel, 0, nv, b, y + n0, ldy, accumulate);
      continue;
    }
    for (int h = 0; h < 2 && static_cast<size_t>(h) * kBlock < nv; ++h)
      for (size_t m0 = 0; m0 < M; m0 += 4) {
        const int8_t* xr = xq + m0 * ldq;
        const float* dr = d + m0 * ldd;
        const int32_t* sr = xs + m0 * ldd;
        float* yr = y + m0 * ldy + n0;
        switch (M - m0 < 4 ? M - m0 : 4) {
          case 1: q4_tile<1, 1>(G, xr, ldq, dr, sr, ldd, panel, h, nv, b, yr, ldy, accumulate); break;
          case 2: q4_tile<2, 1>(G, xr, ldq, dr, sr, ldd, panel, h, nv, b, yr, ldy, accumulate); break;
          case 3: q4_tile<3, 1>(G, xr, ldq, dr, sr, ldd, panel, h, nv, b, yr, ldy, accumulate); break;
          default: q4_tile<4, 1>(G, xr, ldq, dr, sr, ldd, panel, h, nv, b, yr, ldy, accumulate); break;
        }
      }
  }
}

void quantize_blocks_q8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq, float* d,
                        int32_t* xs, size_t ldd) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
  for (size_t i = 0; i < M; ++i)
    for (size_t b = 0; b < K / kQ4Group; ++b) {
      const float* blk = x + i * ldx + b * kQ4Group;
      __m256 v[4];
      __m256 amax8 = _mm256_setzero_ps();
      for (int j = 0; j < 4; ++j) {
        v[j] = _mm256_loadu_ps(blk + 8 * j);
        amax8 = _mm256_max_ps(amax8, _mm256_and_ps(v[j], abs_mask));
      }
      __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
      m = _mm_max_ps(m, _mm_movehl_ps(m, m));
      m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
      const float amax = _mm_cvtss_f32(m);
      const float s = amax > 0.f ? amax / 127.f : 1.f;  // division and half-even: as the reference
      const __m256 vs = _mm256_set1_ps(s);
      __m256i sum8 = _mm256_setzero_si256();
      int8_t* out = xq + i * ldq + b * kQ4Group;
      for (int j = 0; j < 4; ++j) {
        __m256 q = _mm256_round_ps(_mm256_div_ps(v[j], vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256i qi = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, lo), hi));
        sum8 = _mm256_add_epi32(sum8, qi);
        const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + 8 * j), _mm_packs_epi16(q16, q16));
      }
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
      d[i * ldd + b] = s;
      xs[i * ldd + b] = _mm_cvtsi128_si32(s4);
    }
}

void quantize_rows_i8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq,
                      float* scale, int32_t* x_sum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (size_t i = 0; i < M; ++i) {
    const float* row = x + i * ldx;
    __m256 amax8 = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + kBlock <= K; k += kBlock)
      amax8 = _mm256_max_ps(amax8, _mm256_and_ps(_mm256_loadu_ps(row + k), abs_mask));
    float lanes[kBlock];
    _mm256_storeu_ps(lanes, amax8);
    float amax = 0.f;
    for (float v : lanes) amax = std::fmax(amax, v);
    for (; k < K; ++k) amax = std::fmax(amax, std::fabs(row[k]));
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    // Division and round-half-even, bit-identical to the reference (see ref::quantize_rows_i8).
    const __m256 vs = _mm256_set1_ps(s);
    const __m256 lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
    __m256i sum8 = _mm256_setzero_si256();
    int8_t* out = xq + i * ldq;
    for (k = 0; k + kBlock <= K; k += kBlock) {
      __m256 q = _mm256_div_ps(_mm256_loadu_ps(row + k), vs);
      q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m256i qi = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, lo), hi));
      sum8 = _mm256_add_epi32(sum8, qi);
      const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + k), _mm_packs_epi16(q16, q16));
    }
    int32_t sums[kBlock];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), sum8);
    int32_t sum = 0;
    for (int32_t v : sums) sum += v;
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

}  // namespace mlfs::kernels::avx2
