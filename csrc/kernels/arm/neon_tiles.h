// AArch64 GEMM tiles shared by the NEON levels (neon, dotprod, i8mm): the same register tiling as
// the x86 files with 4-lane blocks. NEON has no masked loads, so a partial block (the last columns
// of a slice) is staged through a small zero-filled copy; full blocks load directly.
// The int8 tile takes a Dot policy: plain NEON (smull + sadalp) or ARMv8.2 sdot.
// Anonymous namespace: see ../tiling.h.
#pragma once
#include <arm_neon.h>

#include <cstring>

#include "../float_tile.h"
#include "mlfs/kernels.h"

namespace {

constexpr std::size_t kBlock = 4;  // fp32 / int32 lanes per q register

inline std::size_t block_count(std::size_t n_valid, int b) {
  const std::size_t first = static_cast<std::size_t>(b) * kBlock;
  return n_valid >= first + kBlock ? kBlock : n_valid - first;
}

template <typename T, std::size_t Lanes>
inline void stage(const T* p, std::size_t count, T (&out)[Lanes]) {
  for (std::size_t i = 0; i < Lanes; ++i) out[i] = T{};
  std::memcpy(out, p, count * sizeof(T));
}

inline float32x4_t load_f32(const float* p, std::size_t count) {
  if (count == kBlock) return vld1q_f32(p);
  float tmp[kBlock];
  stage(p, count, tmp);
  return vld1q_f32(tmp);
}

inline void store_block(float* y, std::size_t count, float32x4_t v, bool accumulate) {
  if (accumulate) v = vaddq_f32(v, load_f32(y, count));
  if (count == kBlock) {
    vst1q_f32(y, v);
  } else {
    float tmp[kBlock];
    vst1q_f32(tmp, v);
    std::memcpy(y, tmp, count * sizeof(float));
  }
}

// Vector primitives of the shared fp32/fp16 tile (../float_tile.h): 4 lanes; a "mask" is the
// number of valid lanes (partial blocks are staged).
struct Neon {
  using Vec = float32x4_t;
  using Mask = std::size_t;
  static constexpr std::size_t kBlock = 4;
  static Mask mask(std::size_t n_valid, int b) { return block_count(n_valid, b); }
  static Vec zero() { return vdupq_n_f32(0.f); }
  static Vec broadcast(const float* p) { return vld1q_dup_f32(p); }
  static Vec fma(Vec a, Vec b, Vec c) { return vfmaq_f32(c, a, b); }
  static Vec load(const float* p, Mask count) { return load_f32(p, count); }
  static Vec load(const uint16_t* p, Mask count) {  // FCVTL: fp16 -> fp32 is baseline ARMv8 NEON
    if (count == kBlock) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
    uint16_t tmp[kBlock];
    stage(p, count, tmp);
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(tmp)));
  }
  static void store(float* y, Mask count, Vec v, bool accumulate) { store_block(y, count, v, accumulate); }
};

// One P32K4 block of 4 columns is 16 bytes: [c0 k0..3][c1 k0..3][c2 k0..3][c3 k0..3]. Panels
// are whole (padded to 32 columns), so even a partial block loads directly; its extra columns are
// dropped on store.
inline int8x16_t load_w_block(const int8_t* p) { return vld1q_s8(p); }

// Start of the 4-column block at column c (c % 4 == 0) of a P32K4 weight with panel stride ldw.
inline const int8_t* w_block(const int8_t* W, std::size_t ldw, std::size_t c) {
  return W + (c / mlfs::kernels::kI8Panel) * ldw + (c % mlfs::kernels::kI8Panel) * 4;
}
constexpr std::size_t kGroupBytes = 4 * mlfs::kernels::kI8Panel;  // one K-group of a panel

template <typename Dot>
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
    std::size_t count[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) count[b] = block_count(n_valid, b);
    typename Dot::Acc acc[MR][NB];
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r)
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) acc[r][b] = Dot::zero();
    const int8_t* xr = xq + m0 * ldq;
    const int8_t* wb[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) wb[b] = w_block(W, ldw, n0 + b * kBlock);
    for (std::size_t g = 0; g < groups; ++g) {
      int8x16_t w[NB];
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) w[b] = load_w_block(wb[b] + g * kGroupBytes);
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        int32_t x4;
        std::memcpy(&x4, xr + r * ldq + 4 * g, 4);
        const int8x16_t xv = vreinterpretq_s8_s32(vdupq_n_s32(x4));  // the 4 k's, once per column
        MLFS_UNROLL
        for (int b = 0; b < NB; ++b) Dot::accumulate(acc[r][b], w[b], xv);
      }
    }
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) {
      const std::size_t n = n0 + b * kBlock;
      const float32x4_t ws = load_f32(w_scale + n, count[b]);
      const float32x4_t bv = bias ? load_f32(bias + n, count[b]) : vdupq_n_f32(0.f);
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        const float32x4_t s = vmulq_n_f32(ws, x_scale[m0 + r]);
        store_block(y + (m0 + r) * ldy + n, count[b], vfmaq_f32(bv, vcvtq_f32_s32(Dot::finish(acc[r][b])), s),
                    accumulate);
      }
    }
  }
};

template <typename Dot>
void run_i8_gemm(std::size_t M, std::size_t N, std::size_t K, const int8_t* xq, std::size_t ldq,
                 const float* x_scale, const int8_t* Wq, std::size_t ldw, const float* w_scale,
                 const float* bias, float* y, std::size_t ldy, bool accumulate) {
  if (M == 0 || N == 0) return;
  using Tile = I8Tile<Dot>;
  const Tile tile{(K + 3) / 4, xq, ldq, x_scale, Wq, ldw, w_scale, bias, y, ldy, accumulate};
  if (M == 1)
    TileGrid<1, 8, Tile>::run(tile, M, N, kBlock);
  else
    TileGrid<4, Dot::kTileBlocks, Tile>::run(tile, M, N, kBlock);
}

// ---- q4 "P16" panels x block-int8 activations (layout and definition: mlfs/kernels.h) ----
// A panel's 16 columns are 4 quads; per group of 32 inputs and quad, 4 loads of 16 bytes (4 columns
// x 4 bytes) give 8 operands after `& 15` / `>> 4` (u8 in [0, 15], also valid s8), multiplied by a
// 4-byte activation broadcast with the Dot policy (sdot, or smull + sadalp) into int32 per column,
// then y += S * (d * acc) + Z * (d * xs) with the group's fp16 S / Z widened by fcvtl.
// M = 1 walks each panel once with all 4 quads (one sequential stream); M > 1 walks it once per
// quad with up to 4 rows, so the 8 unpacked weight vectors serve every row.
template <typename Dot, int MR, int NQ>
void q4_tile(std::size_t G, const int8_t* xq, std::size_t ldq, const float* d, const int32_t* xs, std::size_t ldd,
             const uint8_t* blk, int q0, std::size_t n_valid, const float* bias, float* y, std::size_t ldy,
             bool accumulate) {
  using mlfs::kernels::kQ4BlockBytes;
  using mlfs::kernels::kQ4Group;
  const uint8x16_t m4 = vdupq_n_u8(15);
  float32x4_t yv[MR][NQ];
  MLFS_UNROLL
  for (int r = 0; r < MR; ++r)
    MLFS_UNROLL
    for (int q = 0; q < NQ; ++q) yv[r][q] = vdupq_n_f32(0.f);
  for (std::size_t g = 0; g < G; ++g, blk += kQ4BlockBytes) {
    MLFS_UNROLL
    for (int q = 0; q < NQ; ++q) {
      int8x16_t w[8];
      MLFS_UNROLL
      for (int s = 0; s < 4; ++s) {
        const uint8x16_t raw = vld1q_u8(blk + s * 64 + (q0 + q) * 16);
        w[2 * s] = vreinterpretq_s8_u8(vandq_u8(raw, m4));
        w[2 * s + 1] = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
      }
      uint16_t sh[4], zh[4];
      std::memcpy(sh, blk + 256 + (q0 + q) * 8, 8);
      std::memcpy(zh, blk + 288 + (q0 + q) * 8, 8);
      const float32x4_t S = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sh)));
      const float32x4_t Z = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(zh)));
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        const int8_t* xg = xq + r * ldq + g * kQ4Group;
        typename Dot::Acc acc = Dot::zero();
        MLFS_UNROLL
        for (int i = 0; i < 8; ++i) {
          int32_t x4;
          std::memcpy(&x4, xg + 4 * i, 4);
          Dot::accumulate(acc, w[i], vreinterpretq_s8_s32(vdupq_n_s32(x4)));
        }
        const float dg = d[r * ldd + g];
        const float32x4_t accf = vmulq_n_f32(vcvtq_f32_s32(Dot::finish(acc)), dg);
        yv[r][q] = vfmaq_f32(yv[r][q], S, accf);
        yv[r][q] = vfmaq_n_f32(yv[r][q], Z, dg * static_cast<float>(xs[r * ldd + g]));
      }
    }
  }
  MLFS_UNROLL
  for (int q = 0; q < NQ; ++q) {
    const int b = q0 + q;
    if (n_valid <= static_cast<std::size_t>(b) * kBlock) break;
    const std::size_t count = block_count(n_valid, b);
    const float32x4_t bv = bias ? load_f32(bias + b * kBlock, count) : vdupq_n_f32(0.f);
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r) store_block(y + r * ldy + b * kBlock, count, vaddq_f32(yv[r][q], bv), accumulate);
  }
}

template <typename Dot>
void run_q4_gemm(std::size_t M, std::size_t N, std::size_t K, const int8_t* xq, std::size_t ldq, const float* d,
                 const int32_t* xs, std::size_t ldd, const uint8_t* Wq, std::size_t ldw, const float* bias, float* y,
                 std::size_t ldy, bool accumulate) {
  using mlfs::kernels::kQ4Group;
  using mlfs::kernels::kQ4Panel;
  if (M == 0 || N == 0) return;
  const std::size_t G = K / kQ4Group;
  for (std::size_t n0 = 0; n0 < N; n0 += kQ4Panel) {
    const uint8_t* panel = Wq + (n0 / kQ4Panel) * ldw;
    const std::size_t nv = N - n0 < kQ4Panel ? N - n0 : kQ4Panel;
    const float* b = bias ? bias + n0 : nullptr;
    if (M == 1) {
      q4_tile<Dot, 1, 4>(G, xq, ldq, d, xs, ldd, panel, 0, nv, b, y + n0, ldy, accumulate);
      continue;
    }
    for (int q = 0; q < 4 && static_cast<std::size_t>(q) * kBlock < nv; ++q)
      for (std::size_t m0 = 0; m0 < M; m0 += 4) {
        const int8_t* xr = xq + m0 * ldq;
        const float* dr = d + m0 * ldd;
        const int32_t* sr = xs + m0 * ldd;
        float* yr = y + m0 * ldy + n0;
        switch (M - m0 < 4 ? M - m0 : 4) {
          case 1: q4_tile<Dot, 1, 1>(G, xr, ldq, dr, sr, ldd, panel, q, nv, b, yr, ldy, accumulate); break;
          case 2: q4_tile<Dot, 2, 1>(G, xr, ldq, dr, sr, ldd, panel, q, nv, b, yr, ldy, accumulate); break;
          case 3: q4_tile<Dot, 3, 1>(G, xr, ldq, dr, sr, ldd, panel, q, nv, b, yr, ldy, accumulate); break;
          default: q4_tile<Dot, 4, 1>(G, xr, ldq, dr, sr, ldd, panel, q, nv, b, yr, ldy, accumulate); break;
        }
      }
  }
}

}  // namespace
