// ARMv8.2-A + dotprod: the int8 GEMM with sdot (4 int8 products summed into each int32 lane, one
// instruction per 16 weights), int8 and 4-bit. Everything else inherits the NEON level.
#include <arm_neon.h>

#include "neon_tiles.h"

namespace mlfs::kernels::dotprod {
namespace {

struct DotSdot {
  using Acc = int32x4_t;
  static constexpr int kTileBlocks = 4;
  static Acc zero() { return vdupq_n_s32(0); }
  static void accumulate(Acc& acc, int8x16_t w, int8x16_t x) { acc = vdotq_s32(acc, w, x); }
  static int32x4_t finish(Acc acc) { return acc; }
};

}  // namespace

void gemm_i8(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* x_scale,
             const int32_t* /*x_sum: signed x signed, no offset*/, const int8_t* Wq, size_t ldw,
             const float* w_scale, const float* bias, float* y, size_t ldy, bool accumulate) {
  run_i8_gemm<DotSdot>(M, N, K, xq, ldq, x_scale, Wq, ldw, w_scale, bias, y, ldy, accumulate);
}

void gemm_q4(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* d, const int32_t* xs,
             size_t ldd, const uint8_t* Wq, size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate) {
  run_q4_gemm<DotSdot>(M, N, K, xq, ldq, d, xs, ldd, Wq, ldw, bias, y, ldy, accumulate);
}

}  // namespace mlfs::kernels::dotprod
