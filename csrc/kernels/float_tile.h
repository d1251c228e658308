// The fp32/fp16-weight GEMM register tile, written once for every ISA: acc[r][b] += x[r, k] *
// W(k, block b) over k < K, then y = alpha * acc + bias (+ y). Each ISA file supplies a small
// `Isa` struct of vector primitives and instantiates it under its own compiler flags:
//
//   using Vec, Mask;                              a vector of kBlock fp32 lanes; which lanes exist
//   static constexpr std::size_t kBlock;          lanes per vector
//   Mask mask(std::size_t n_valid, int b);        the lanes of block b in a tile of n_valid columns
//   Vec zero();  Vec broadcast(const float* p);   0; *p in every lane
//   Vec fma(Vec a, Vec b, Vec c);                 a * b + c
//   Vec load(const float* p, Mask m);             masked fp32 load (lanes outside m are 0)
//   Vec load(const uint16_t* p, Mask m);          masked fp16 load, converted to fp32
//   void store(float* y, Mask m, Vec v, bool accumulate);  y = v (+ y), masked
//
// Partial blocks (the last columns of a prefix slice) are masked, so a sub-network's GEMM never
// reads or writes outside its slice. Anonymous namespace: see tiling.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tiling.h"

namespace {

template <typename Isa, typename WeightT>
struct FloatTile {
  std::size_t K;
  float alpha;
  const float* x;
  std::size_t ldx;
  const WeightT* W;
  std::size_t ldw;
  const float* bias;
  float* y;
  std::size_t ldy;
  bool accumulate;

  template <int MR, int NB>
  void run(std::size_t m0, std::size_t n0, std::size_t n_valid) const {
    using Vec = typename Isa::Vec;
    constexpr std::size_t kBlock = Isa::kBlock;
    typename Isa::Mask mask[NB];
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) mask[b] = Isa::mask(n_valid, b);
    Vec acc[MR][NB];
    MLFS_UNROLL
    for (int r = 0; r < MR; ++r)
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) acc[r][b] = Isa::zero();
    const float* xr = x + m0 * ldx;
    const WeightT* wk = W + n0;
    for (std::size_t k = 0; k < K; ++k, wk += ldw) {
      Vec w[NB];
      MLFS_UNROLL
      for (int b = 0; b < NB; ++b) w[b] = Isa::load(wk + b * kBlock, mask[b]);
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r) {
        const Vec xv = Isa::broadcast(xr + r * ldx + k);
        MLFS_UNROLL
        for (int b = 0; b < NB; ++b) acc[r][b] = Isa::fma(xv, w[b], acc[r][b]);
      }
    }
    const float a = alpha;
    const Vec va = Isa::broadcast(&a);
    MLFS_UNROLL
    for (int b = 0; b < NB; ++b) {
      const Vec bv = bias ? Isa::load(bias + n0 + b * kBlock, mask[b]) : Isa::zero();
      MLFS_UNROLL
      for (int r = 0; r < MR; ++r)
        Isa::store(y + (m0 + r) * ldy + n0 + b * kBlock, mask[b], Isa::fma(acc[r][b], va, bv), accumulate);
    }
  }
};

// fp32 and fp16 GEMMs with the tile shapes every ISA uses: a 1 x 8-block tile for M = 1 (more
// independent accumulators hide the FMA latency of a GEMV), 6 x NB otherwise.
template <typename Isa, int NB, typename WeightT>
void run_float_gemm(std::size_t M, std::size_t N, std::size_t K, float alpha, const float* x, std::size_t ldx,
                    const WeightT* W, std::size_t ldw, const float* bias, float* y, std::size_t ldy,
                    bool accumulate) {
  if (M == 0 || N == 0) return;
  using Tile = FloatTile<Isa, WeightT>;
  const Tile tile{K, alpha, x, ldx, W, ldw, bias, y, ldy, accumulate};
  if (M == 1)
    TileGrid<1, 2 * NB, Tile>::run(tile, M, N, Isa::kBlock);
  else
    TileGrid<6, NB, Tile>::run(tile, M, N, Isa::kBlock);
}

}  // namespace
