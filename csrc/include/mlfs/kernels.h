// Kernel API: one table of function pointers per ISA, filled by csrc/kernels/dispatch.cpp.
// Every entry has a scalar reference (namespace ref) that the native and Python tests compare
// each ISA's version against.
//
// Conventions (all kernels):
// - Row-major 2-D operands are (pointer, leading dimension in elements); element (r, c) is
//   p[r * ld + c]. Shapes and strides are explicit, nothing is allocated, no global state: every
//   kernel is re-entrant, so the engine may call it from several threads on disjoint sub-ranges.
// - Sub-ranges: rows of x/y are split by offsetting x, y (and x_scale/x_sum) by m0 rows; columns by
//   offsetting the weight pointer by n0 columns (see the layouts below), bias/w_scale by n0, y by n0.
// - Nullable pointers are marked; everything else must be non-null when its extent is > 0.
//
// WEIGHT LAYOUTS (the packed file stores weights in these; pack_* below produce them).
// A Linear weight is W [N_out, K_in] (PyTorch's layout). The engine keeps it *transposed*, so that
// one broadcast of x[i, k] multiplies N contiguous weights (no horizontal sums) and so that a
// sub-network's prefix slice W[:n, :k] stays a stride into the full buffer — never a copy:
// - f32 / f16 "KN": Wt [K_full, N_full] row-major, element (k, n) = Wt[k * ldw + n], ldw = N_full.
//   The slice (k < K, n < N) is the same pointer with the same ldw; column n0 is Wt + n0.
// - i8 "P32K4" (format v3; v2's "K4N" rows of 4 * N_full bytes made a GEMV jump ldw bytes per
//   K-group, across pages, where hardware prefetchers give up: decode ran at half the memory
//   bandwidth). Columns are cut into panels of kI8Panel = 32 outputs (N_full padded with zero
//   columns to N32 = round_up(N_full, 32)); K is grouped by 4 (K_full padded with zero inputs to
//   K4 = round_up(K_full, 4)); inside a panel the K-groups follow each other, 128 bytes each:
//     element (k, n) = Wq[(n / 32) * ldw + (k / 4) * 128 + (n % 32) * 4 + k % 4],
//     ldw = 32 * K4 bytes per panel (the panel stride).
//   A GEMV over a panel reads one contiguous run of memory. 16 bytes = 4 columns x 4 k (one `sdot`
//   operand), 32 / 64 bytes = 8 / 16 columns (one AVX2 / `vpdpbusd` operand). The prefix slice
//   (k < K, n < N) is the same pointer with the same ldw (fewer groups per panel, fewer panels;
//   a partial last panel is read whole and masked on store: its columns exist in the full buffer).
//   A column sub-range starts at a panel boundary: column n0 (a multiple of 32) is Wq + (n0 / 32) * ldw.
// - q4 "P16" panels: 4-bit group-wise with a scale and a minimum per group (the llama.cpp Q4_1
//   family, mlfs_edge/quant/scheme.py quantize_q4_groups): K is cut into groups of 32 consecutive
//   inputs; every (group g, output n) has a scale S and a minimum Z, both IEEE fp16, and 32 unsigned
//   4-bit values q in [0, 15], W(k, n) = S * q + Z. Outputs are blocked into panels of 16 columns
//   (N_full padded with zero columns to N16 = round_up(N_full, 16)); inside a panel K is contiguous,
//   one 320-byte block per group: 256 bytes of nibbles, then 16 S, then 16 Z (fp16). With
//   p = n / 16, c = n % 16, g = k / 32, j = k % 32, s = j / 8, t = j % 8:
//     B(g, n)  = Wq + p * ldw + g * 320,            ldw = (K_full / 32) * 320 bytes per panel
//     q(k, n)  = (B[s * 64 + c * 4 + t % 4] >> (4 * (t / 4))) & 15
//     S(g, n)  = f16 at B + 256 + 2 * c,   Z(g, n) = f16 at B + 288 + 2 * c
//   So one 64-byte load of sub-block s gives 16 columns x 4 inputs as u8 after `& 0x0F` (inputs
//   8s..8s+3, one `vpdpbusd`/`sdot` operand against a 4-byte activation broadcast) and the next 4
//   inputs after `>> 4 & 0x0F`; a GEMV streams each panel sequentially (one stream, no strided
//   scale loads: the scales sit in the same 5 cache lines as their nibbles). fp16 S/Z: 5 bits per
//   weight read per token instead of 6 with fp32 (the quantiser rounds S and Z to fp16 first).
//   The slice (k < K, n < N) is the same pointer with the same ldw as long as K is a multiple of 32
//   (a prefix of each panel's groups) and N is any width (the first ceil(N / 16) panels; kernels
//   compute whole panels, which exist in the padded buffer, and store only n < N); column n0 (a
//   multiple of 16) is Wq + (n0 / 16) * ldw.
// - LoRA adapters (peft's A [r_full, K_full], B [N_full, r_full]) are stored transposed in the f32
//   KN layout too: At [K_full, r_full] and Bt [r_full, N_full]. The low-rank path is two f32 GEMMs
//   with a small temp t [M, r] (caller's scratch, ldt >= r):
//     gemm_f32(M, r, K, 1.f,  x, ldx, At, r_full, nullptr, t, ldt, false);   // t = x . A^T
//     gemm_f32(M, N, r, s,    t, ldt, Bt, N_full, nullptr, y, ldy, true);    // y += s * t . B^T
//   after the base GEMM (any weight dtype) wrote y. Rank slicing (first r) is again a stride.
//
// INT8 SCHEME (mlfs_edge/quant/scheme.py, shared with PyTorch and the exporters): weights symmetric
// per output column n (= row of W), int8 in [-127, 127], scale w_scale[n]; activations quantised
// dynamically per row i by quantize_rows_i8 (scale = max|x_row| / 127, zero row -> 1, round half to
// even, clamp to [-127, 127]). acc[i][n] = sum_{k<K} xq[i][k] * Wq(k, n) is exact int32.
// VNNI compensation decision: `vpdpbusd` multiplies u8 by s8. We feed the *weights* as the u8 side
// (w ^ 0x80 = w + 128, one xor per loaded weight vector, amortised over the M rows of a tile) and
// the activations as the s8 side (a 4-byte broadcast straight from memory), so
//   sum (w + 128) * x = acc + 128 * sum_k x.
// The correction needs only the per-row activation sum x_sum[i] over the active K, which
// quantize_rows_i8 computes for free while quantising: no weight row sums, no prefix-sum table in
// the file, any K prefix works. ARM `sdot` and the AVX2 path (vpsignb + vpmaddubsw, exact because
// |x|, |w| <= 127) use the s8 weights as they are and ignore x_sum.
//
// fp16 values are IEEE binary16 stored as uint16_t; conversions round to nearest even.
#pragma once
#include <cstddef>
#include <cstdint>

#include "mlfs/cpu_features.h"

namespace mlfs::kernels {

using std::size_t;

// sum_i a[i] * b[i]
using DotF32Fn = float (*)(const float* a, const float* b, size_t n);

// y[i, n] = alpha * sum_{k<K} x[i*ldx + k] * Wt[k*ldw + n]  (+ bias[n])  (+ y[i, n] if accumulate)
// for i < M, n < N; y[i, n] = y[i*ldy + n]. Wt is the f32 KN layout (or any row-major [K, N]
// operand, e.g. V in attention's P.V). bias nullable.
using GemmF32Fn = void (*)(size_t M, size_t N, size_t K, float alpha, const float* x, size_t ldx,
                           const float* Wt, size_t ldw, const float* bias, float* y, size_t ldy,
                           bool accumulate);

// Same as GemmF32Fn with alpha = 1 and fp16 weights (KN layout, IEEE half as uint16_t), converted
// to fp32 on load; fp32 accumulation.
using GemmF16Fn = void (*)(size_t M, size_t N, size_t K, const float* x, size_t ldx,
                           const uint16_t* Wt, size_t ldw, const float* bias, float* y, size_t ldy,
                           bool accumulate);

// Dynamic per-row int8 quantisation of x[:M, :K] (the scheme above), for i < M:
//   scale[i] = max_k |x[i, k]| / 127 (1 if the row is all zeros)
//   xq[i*ldq + k] = clamp(round_half_even(x[i, k] / scale[i]), -127, 127) for k < K,
//   xq[i*ldq + k] = 0 for K <= k < round_up(K, 4)  (the P32K4 groups read whole groups of 4)
//   x_sum[i] = sum_k xq[i*ldq + k]  (VNNI compensation, see above)
// Requires ldq >= round_up(K, 4). One call feeds the Q, K and V projections.
using QuantizeRowsI8Fn = void (*)(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq,
                                  size_t ldq, float* scale, int32_t* x_sum);

// y[i, n] = float(acc[i][n]) * (x_scale[i] * w_scale[n]) (+ bias[n]) (+ y[i, n] if accumulate),
// acc[i][n] = sum_{k<K} xq[i*ldq + k] * Wq(k, n), Wq in the P32K4 layout with panel stride ldw
// (bytes per panel of 32 columns, >= 32 * round_up(K, 4)); Wq points at a panel's start. xq, x_scale, x_sum come from quantize_rows_i8 (xq zero-padded to a
// multiple of 4 columns). bias nullable. acc is exact (|acc| <= 127 * 127 * K).
using GemmI8Fn = void (*)(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq,
                          const float* x_scale, const int32_t* x_sum, const int8_t* Wq, size_t ldw,
                          const float* w_scale, const float* bias, float* y, size_t ldy,
                          bool accumulate);

// Dynamic int8 quantisation of x[:M, :K] per block of 32 inputs (llama.cpp's Q8_1 activation
// blocks: finer than a per-row scale, so an outlier costs only its block), K a multiple of 32; for
// i < M, b < K / 32, k in block b:
//   d[i*ldd + b]  = max_{k in b} |x[i, k]| / 127 (1 if the block is all zeros)
//   xq[i*ldq + k] = clamp(round_half_even(x[i, k] / d), -127, 127),  xs[i*ldd + b] = sum_{k in b} xq
// (same float ops as quantize_rows_i8, so every ISA is bit-identical to the reference).
using QuantizeBlocksQ8Fn = void (*)(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq,
                                    float* d, int32_t* xs, size_t ldd);

// 4-bit weights (the q4 "P16" layout above, leading dimension ldw bytes per panel) times block-int8
// activations from quantize_blocks_q8, integer dot products per group:
//   acc(i, g, n) = sum_{k in g} xq[i, k] * q(k, n)   (exact int32, |acc| <= 32 * 127 * 15)
//   y[i, n] = sum_{g < K/32} d[i, g] * (S(g, n) * acc + Z(g, n) * xs[i, g])  (+ bias[n]) (+ y[i, n])
// for i < M, n < N; K a multiple of 32; Wq must point at a panel start (column offset a multiple of
// 16). bias nullable. The reference sums in double; the ISA versions in fp32 per group.
using GemmQ4Fn = void (*)(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* d,
                          const int32_t* xs, size_t ldd, const uint8_t* Wq, size_t ldw, const float* bias,
                          float* y, size_t ldy, bool accumulate);

// In place, for i < M, n < N: y[i, n] = gelu(y[i, n] + bias[n]) with the exact erf GELU of BERT,
// gelu(v) = 0.5 * v * (1 + erf(v / sqrt(2))). bias nullable (then 0). The GEMM epilogue of the MLP's
// first projection, run after the base GEMM and the LoRA path have both written y.
using BiasGeluF32Fn = void (*)(size_t M, size_t N, const float* bias, float* y, size_t ldy);

// For i < M: v = x[i, :N] + residual[i, :N] (residual nullable: then v = x[i, :N]),
// out[i, n] = (v[n] - mean(v)) / sqrt(var(v) + eps) * gamma[n] + beta[n]  (biased variance, as
// torch.nn.LayerNorm). out may alias x or residual (row by row, same ld).
using LayerNormF32Fn = void (*)(size_t M, size_t N, const float* x, size_t ldx,
                                const float* residual, size_t ldr, const float* gamma,
                                const float* beta, float eps, float* out, size_t ldo);

// In place, for i < M: x[i, :N] = softmax(scale * x[i, :N] + mask[:N]) along the row.
// mask is additive, shared by all rows (0 for keep, a large negative number for padding), nullable.
// A row whose every entry is -inf after masking becomes all zeros (never NaN).
using SoftmaxF32Fn = void (*)(size_t M, size_t N, float* x, size_t ldx, const float* mask,
                              float scale);

// For i < M (Llama's RMSNorm, as transformers computes it in fp32):
//   out[i, n] = x[i, n] / sqrt(mean_n(x[i, :N]^2) + eps) * gamma[n].  out may alias x.
using RmsNormF32Fn = void (*)(size_t M, size_t N, const float* x, size_t ldx, const float* gamma,
                              float eps, float* out, size_t ldo);

// SwiGLU's epilogue, for i < M, n < N: gate[i, n] = silu(gate[i, n]) * up[i, n],
// silu(v) = v / (1 + exp(-v)).
using SiluMulF32Fn = void (*)(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu);

// GeGLU's / GPT-2's epilogue, for i < M, n < N: gate[i, n] = gelu_tanh(gate[i, n]) * up[i, n]
// (up nullable: then * 1), gelu_tanh(v) = 0.5 v (1 + tanh(sqrt(2 / pi) (v + 0.044715 v^3))), the
// "gelu_new" / "gelu_pytorch_tanh" of transformers. Scalar only (not on a decode hot path's scale).
using GeluTanhMulF32Fn = void (*)(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu);

// Soft-capping (Gemma 2), in place for i < M, n < N: x[i, n] = cap * tanh(scale * x[i, n] / cap).
using SoftcapF32Fn = void (*)(size_t M, size_t N, float* x, size_t ldx, float scale, float cap);

// dst[i] = fp16(src[i]), round to nearest even (overflow -> inf, NaN stays NaN), i < n.
using F32ToF16Fn = void (*)(size_t n, const float* src, uint16_t* dst);
// dst[i] = float(src[i]) exactly, i < n.
using F16ToF32Fn = void (*)(size_t n, const uint16_t* src, float* dst);

struct KernelTable {
  Isa isa;
  DotF32Fn dot_f32;
  GemmF32Fn gemm_f32;
  GemmF16Fn gemm_f16;
  QuantizeRowsI8Fn quantize_rows_i8;
  GemmI8Fn gemm_i8;
  QuantizeBlocksQ8Fn quantize_blocks_q8;
  GemmQ4Fn gemm_q4;
  BiasGeluF32Fn bias_gelu_f32;
  LayerNormF32Fn layernorm_f32;
  SoftmaxF32Fn softmax_f32;
  RmsNormF32Fn rmsnorm_f32;
  SiluMulF32Fn silu_mul_f32;
  GeluTanhMulF32Fn gelu_tanh_mul_f32;
  SoftcapF32Fn softcap_f32;
  F32ToF16Fn f32_to_f16;
  F16ToF32Fn f16_to_f32;
};

// The table for `isa`; throws std::invalid_argument if that ISA cannot run here.
const KernelTable& table_for(Isa isa);
// The table for selected_isa(), resolved once.
const KernelTable& active();

// --- Packing (portable, not dispatched; the Python pack writer calls these through pybind11) ---
// Bytes / elements of a packed buffer for a full weight W [N, K].
inline constexpr size_t kI8Panel = 32;  // int8 columns per panel (P32K4)
inline size_t packed_k4(size_t K) { return (K + 3) / 4 * 4; }
inline size_t packed_n32(size_t N) { return (N + kI8Panel - 1) / kI8Panel * kI8Panel; }
// Panel stride (bytes) of an int8 weight with K_full inputs, and the whole buffer's bytes.
inline size_t packed_i8_ld(size_t K) { return kI8Panel * packed_k4(K); }
inline size_t packed_i8_size(size_t N, size_t K) { return packed_n32(N) * packed_k4(K); }
// Wt[k * N + n] = W[n * ldw_in + k] for n < N, k < K (KN layout, ldw = N). Also for fp16 (uint16_t).
void pack_kn_f32(size_t N, size_t K, const float* W, size_t ld_in, float* Wt);
void pack_kn_f16(size_t N, size_t K, const uint16_t* W, size_t ld_in, uint16_t* Wt);
// P32K4 layout of an int8 W [N, K]: out has packed_i8_size(N, K) bytes in packed_n32(N) / 32 panels
// of ldw = packed_i8_ld(K) bytes; padding columns (n >= N) and inputs (k >= K) are zero.
void pack_p32k4_i8(size_t N, size_t K, const int8_t* W, size_t ld_in, int8_t* out);
// q4 "P16" panels of group-quantised W [N, K] (q [N, K] in [0, 15] row-major with ld_q; S, Z
// [K / 32, N] fp16 bits, row-major with ld_s): out has packed_q4_size(N, K) bytes, ldw =
// packed_q4_ld(K); the padding columns N..N16 are zero (q = S = Z = 0).
inline constexpr size_t kQ4Group = 32;
inline constexpr size_t kQ4Panel = 16;
inline constexpr size_t kQ4BlockBytes = 320;  // 16 columns x 32 nibbles + 16 fp16 S + 16 fp16 Z
inline size_t packed_q4_ld(size_t K) { return K / kQ4Group * kQ4BlockBytes; }
inline size_t packed_q4_panels(size_t N) { return (N + kQ4Panel - 1) / kQ4Panel; }
inline size_t packed_q4_size(size_t N, size_t K) { return packed_q4_panels(N) * packed_q4_ld(K); }
void pack_q4_panels(size_t N, size_t K, const uint8_t* q, size_t ld_q, const uint16_t* S, const uint16_t* Z,
                    size_t ld_s, uint8_t* out);
// W(k, n) of a q4 "P16" buffer as float (the scalar definition every q4 kernel and the engine's
// embedding lookup share).
float q4_weight(const uint8_t* Wq, size_t ldw, size_t k, size_t n);
// out[k * ldo + n] = in[n * ldi + k] for n < rows, k < cols (attention's K^T, if the engine wants
// Q.K^T as an NN gemm_f32).
void transpose_f32(size_t rows, size_t cols, const float* in, size_t ldi, float* out, size_t ldo);

// Scalar IEEE half conversions (round to nearest even), used by the references and packers.
uint16_t f32_to_f16_scalar(float v);
float f16_to_f32_scalar(uint16_t h);

#define MLFS_DECLARE_KERNELS(NS)                                                                  \
  namespace NS {                                                                                  \
  float dot_f32(const float* a, const float* b, size_t n);                                        \
  void gemm_f32(size_t M, size_t N, size_t K, float alpha, const float* x, size_t ldx,            \
                const float* Wt, size_t ldw, const float* bias, float* y, size_t ldy,             \
                bool accumulate);                                                                 \
  void gemm_f16(size_t M, size_t N, size_t K, const float* x, size_t ldx, const uint16_t* Wt,     \
                size_t ldw, const float* bias, float* y, size_t ldy, bool accumulate);            \
  void quantize_rows_i8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq,  \
                        float* scale, int32_t* x_sum);                                            \
  void gemm_i8(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* x_scale, \
               const int32_t* x_sum, const int8_t* Wq, size_t ldw, const float* w_scale,          \
               const float* bias, float* y, size_t ldy, bool accumulate);                         \
  void quantize_blocks_q8(size_t M, size_t K, const float* x, size_t ldx, int8_t* xq, size_t ldq,  \
                          float* d, int32_t* xs, size_t ldd);                                     \
  void gemm_q4(size_t M, size_t N, size_t K, const int8_t* xq, size_t ldq, const float* d,        \
               const int32_t* xs, size_t ldd, const uint8_t* Wq, size_t ldw, const float* bias,    \
               float* y, size_t ldy, bool accumulate);                                            \
  void bias_gelu_f32(size_t M, size_t N, const float* bias, float* y, size_t ldy);                \
  void rmsnorm_f32(size_t M, size_t N, const float* x, size_t ldx, const float* gamma, float eps, \
                   float* out, size_t ldo);                                                       \
  void silu_mul_f32(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu);    \
  void gelu_tanh_mul_f32(size_t M, size_t N, float* gate, size_t ldg, const float* up, size_t ldu); \
  void softcap_f32(size_t M, size_t N, float* x, size_t ldx, float scale, float cap);             \
  void layernorm_f32(size_t M, size_t N, const float* x, size_t ldx, const float* residual,      \
                     size_t ldr, const float* gamma, const float* beta, float eps, float* out,    \
                     size_t ldo);                                                                 \
  void softmax_f32(size_t M, size_t N, float* x, size_t ldx, const float* mask, float scale);     \
  void f32_to_f16(size_t n, const float* src, uint16_t* dst);                                     \
  void f16_to_f32(size_t n, const uint16_t* src, float* dst);                                     \
  }

// The scalar references: the definition of every kernel. Every ISA namespace may implement any
// subset of these; dispatch.cpp fills the rest from the next lower level.
MLFS_DECLARE_KERNELS(ref)
// Per-ISA implementations (declared for all; only those compiled for the target architecture and
// listed in dispatch.cpp exist).
MLFS_DECLARE_KERNELS(avx2)
MLFS_DECLARE_KERNELS(avx512)
MLFS_DECLARE_KERNELS(neon)
MLFS_DECLARE_KERNELS(dotprod)
MLFS_DECLARE_KERNELS(i8mm)

}  // namespace mlfs::kernels
