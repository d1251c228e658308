// ARMv8.6-A + i8mm: the int8 GEMM with smmla, a 2x8 by 8x2 int8 matrix multiply into a 2x2 int32
// tile per instruction (twice the work of sdot). Two consecutive P32K4 groups of a 4-column block
// zip into the 2-column x 8-k operands smmla wants, so the packed layout is the same as for sdot.
// Everything else inherits the dotprod level.
#include <arm_neon.h>

#include "neon_tiles.h"

namespace mlfs::kernels::i8mm {
namespace {

// Up to 4 x 8 k-values of row r: 8 bytes, or only the first 4 (a lone last group; the rest zero).
inline int8x8_t load_x8(const int8_t* p, bool half) {
  if (!half) return vld1_s8(p);
  int32_t v;
  std::memcpy(&v, p, 4);
  return vreinterpret_s8_s32(vset_lane_s32(v, vdup_n_s32(0), 0));
}

struct I8mmTile {
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
    constexpr int P = (MR + 1) / 2;  // row pairs; an odd last row pairs with zeros
    std::size_t count[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) count[b] = block_count(n_valid, b);
    int32x4_t acc[P][NB][2];  // [pair][block][columns 0-1 | 2-3], lanes (r0c0, r0c1, r1c0, r1c1)
    MLFS_UNROLL
    for (int p = 0; p < P; ++p)
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) acc[p][b][0] = acc[p][b][1] = vdupq_n_s32(0);
    const int8_t* xr = xq + m0 * ldq;
    const int8_t* wb[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) wb[b] = w_block(W, ldw, n0 + b * kBlock);
    for (std::size_t g = 0; g < groups; g += 2) {
      const bool lone = g + 1 == groups;  // odd group count: the last group has no partner
      int8x16_t w01[NB], w23[NB];
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) {
        const int8_t* p = wb[b] + g * kGroupBytes;
        const int32x4_t lo = vreinterpretq_s32_s8(load_w_block(p));
        const int32x4_t hi = lone ? vdupq_n_s32(0) : vreinterpretq_s32_s8(load_w_block(p + kGroupBytes));
        w01[b] = vreinterpretq_s8_s32(vzip1q_s32(lo, hi));  // column 0: k0-7, column 1: k0-7
        w23[b] = vreinterpretq_s8_s32(vzip2q_s32(lo, hi));
      }
      MLFS_UNROLL
      for (int p = 0; p < P; ++p) {
        const int8x8_t r0 = load_x8(xr + (2 * p) * ldq + 4 * g, lone);
        const int8x8_t r1 = 2 * p + 1 < MR ? load_x8(xr + (2 * p + 1) * ldq + 4 * g, lone) : vdup_n_s8(0);
        const int8x16_t a = vcombine_s8(r0, r1);
        MLFS_UNROLL
        for (int b = 0; b < NB; ++b) {
          acc[p][b][0] = vmmlaq_s32(acc[p][b][0], a, w01[b]);
          acc[p][b][1] = vmmlaq_s32(acc[p][b][1], a, w23[b]);
        }
      }
    }
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) {
      const std::size_t n = n0 + b * kBlock;
      const float32x4_t ws = load_f32(w_scale + n, count[b]);
      const float32x4_t bv = bias ? load_f32(bias + n, count[b]) : vdupq_n_f32(0.f);
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        const int p = r / 2;
        const int32x4_t row = r % 2 == 0 ? vcombine_s32(vget_low_s32(acc[p][b][0]), vget_low_s32(acc[p][b][1]))
                                         : vcombine_s32(vget_high_s32(acc[p][b][0]), vget_high_s32(acc[p][b][1]));
        const float32x4_t s = vmulq_n_f32(ws, x_scale[m0 + r]);
        store_block(y + (m0 + r) * ldy + n, count[b], vfmaq_f32(bv, vcvtq_f32_s32(row), s), accumulate);
      }
    }
  }
};

}  // namespace

void gemm_i8(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* x_scale,
             const int32_t* /*x_sum: signed x signed, no offset*/, const int8_t* Wq, size_t ldw,
             const float* w_scale, const float* bias, float* y, size_t ldy, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (M == 1) {  // a single row would leave half of every smmla empty: sdot is the better GEMV
    dotprod::gemm_i8(M, N, K, xq, ldq, x_scale, nullptr, Wq, ldw, w_scale, bias, y, ldy, accumulate);
    return;
  }
  const I8mmTile tile{(K + 3) / 4, xq, ldq, x_scale, Wq, ldw, w_scale, bias, y, ldy, accumulate};
  TileGrid<4, 3, I8mmTile>::run(tile, M, N, kBlock);
}

}  // namespace mlfs::kernels::i8mm
