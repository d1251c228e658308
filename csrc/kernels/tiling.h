// Register tiling shared by the per-ISA GEMM files: walk y in tiles of up to MR rows x NB vector
// blocks and call a tile kernel instantiated for the exact tile shape, so the accumulators of
// every tile (edges included) live in registers with compile-time trip counts.
//
// Everything here is in an anonymous namespace on purpose: each ISA file is compiled with its own
// flags, and a shared inline/template symbol could be merged by the linker into the copy compiled
// with the highest ISA and then run on a CPU without it.
#pragma once
#include <cstddef>
#include <utility>

// Fully unroll a loop over a tile's rows or blocks: GCC otherwise keeps a memory copy of the
// accumulator array and stores it on every K step.
#if defined(__clang__)
#define MLFS_UNROLL _Pragma("unroll")
#else
#define MLFS_UNROLL _Pragma("GCC unroll 16")
#endif

namespace {

// Calls tile.template run<mr, nb>(m0, n0, n_valid) over the whole M x N output; block = columns per
// vector block. The last block column of a tile may be partial (n_valid < nb * block): the tile
// kernel masks it.
template <int MR, int NB, typename Tile>
struct TileGrid {
  template <int mr, int nb>
  static void call(const Tile& tile, std::size_t m0, std::size_t n0, std::size_t n_valid) {
    tile.template run<mr, nb>(m0, n0, n_valid);
  }

  template <std::size_t... I>
  static constexpr auto row_table(std::index_sequence<I...>) {
    using Fn = void (*)(const Tile&, std::size_t, std::size_t, std::size_t);
    // [mr - 1][nb - 1]
    struct Table { Fn fn[MR][NB]; };
    Table t{};
    ((fill_row<static_cast<int>(I) + 1>(t.fn[I], std::make_index_sequence<NB>{})), ...);
    return t;
  }
  template <int mr, typename Fn, std::size_t... J>
  static constexpr void fill_row(Fn (&row)[NB], std::index_sequence<J...>) {
    ((row[J] = &call<mr, static_cast<int>(J) + 1>), ...);
  }

  static void run(const Tile& tile, std::size_t M, std::size_t N, std::size_t block) {
    static constexpr auto table = row_table(std::make_index_sequence<MR>{});
    const std::size_t tile_cols = NB * block;
    // Column tiles outside, row tiles inside: one column tile's weights stay in L1/L2 while every
    // row tile streams past them.
    for (std::size_t n0 = 0; n0 < N; n0 += tile_cols) {
      const std::size_t n_valid = N - n0 < tile_cols ? N - n0 : tile_cols;
      const std::size_t nb = (n_valid + block - 1) / block;
      for (std::size_t m0 = 0; m0 < M; m0 += MR) {
        const std::size_t mr = M - m0 < MR ? M - m0 : MR;
        table.fn[mr - 1][nb - 1](tile, m0, n0, n_valid);
      }
    }
  }
};

}  // namespace
