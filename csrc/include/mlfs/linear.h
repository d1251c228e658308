// One Linear layer of a packed supernet, bound to the file, and the runner both forwards (encoder
// and decoder) use for every projection: one place for weight binding, dtype dispatch, int8
// activation quantisation, the LoRA path and the split of a layer's columns over threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "mlfs/kernels.h"
#include "mlfs/packed_file.h"
#include "mlfs/thread_pool.h"

namespace mlfs {

// One Linear W [out, in] of the supernet as stored, in the kernels' layouts (mlfs/kernels.h):
// fp32/fp16 "KN" (W^T [in, out], ldw = out), int8 "P32K4" (panels of 32 outputs, ldw =
// 32 * round_up(in, 4) bytes per panel) with per-output scales, q4 "P16" panels (ldw = in / 32 * 320
// bytes per panel of 16 outputs, the fp16 scales and minimums inline);
// bias; and an optional unmerged LoRA adapter stored transposed too: At [in, rank] and
// Bt [rank, out], y += scale * (x At) Bt.
struct LinearWeights {
  DType dtype = DType::f32;
  const void* weight = nullptr;
  std::size_t ldw = 0;
  const float* w_scale = nullptr;  // int8: [out] (q4 keeps its scales inside the panels)
  const float* bias = nullptr;
  std::size_t out = 0, in = 0;
  const float* lora_at = nullptr;
  const float* lora_bt = nullptr;
  std::size_t lora_rank = 0;
  float lora_scale = 0.f;

  // Element (k, n) of W^T dequantised into dst[k] for k < in: row n of W (the embedding row of a
  // token when W is a tied LM head / an embedding table stored in a Linear layout).
  void column(std::size_t n, float* dst) const;
};

// Binds `name`.w (+ .w.scale for int8, + .b when `with_bias`, + LoRA when present); checks dtype
// and shape, PackedFileError otherwise.
LinearWeights bind_linear(const PackedFile& file, const std::string& name, std::uint64_t out, std::uint64_t in,
                          DType dtype, bool with_bias);

class LinearRunner {
 public:
  LinearRunner(ThreadPool& pool, const kernels::KernelTable& kt) : pool_(pool), kt_(kt) {}

  // Scratch for up to `rows` input rows of width <= max_in and LoRA ranks <= max_rank (grows only).
  void reserve(std::size_t rows, std::size_t max_in, std::size_t max_rank);
  std::size_t bytes() const;

  struct Out {
    const LinearWeights* w;
    float* y;
    bool accumulate = false;  // y += x W^T + b (the residual add of a pre-norm block)
  };
  // For each output o: o.y[:m, :n] (=|+=) x[:m, :k] . o.w[:n, :k]^T + bias[:n] (+ LoRA), then GELU
  // if `gelu`. All outputs share x (Q, K and V do: one int8 quantisation feeds them) and run in ONE
  // parallel region, split over (output, block of whole 32-column panels; 32 keeps every ISA's
  // register tile whole, the int8 panels and the q4 16-column panels whole). The slices are strides
  // into the full weights.
  void run(std::initializer_list<Out> outs, std::size_t n, std::size_t k, const float* x, std::size_t ldx,
           std::size_t m, std::size_t ldy, int threads, bool gelu = false);

 private:
  // int8 activations of x for the int8 (per row) or q4 (per block of 32, `blocks`) kernels.
  void quantize(const float* x, std::size_t ldx, std::size_t m, std::size_t k, int threads, bool blocks);

  ThreadPool& pool_;
  const kernels::KernelTable& kt_;
  std::size_t rows_ = 0, ldq_ = 0, rank_ = 0;
  std::vector<std::int8_t> qact_;  // per-row int8 activations, rows of ldq_ bytes
  std::vector<float> qscale_;      // their per-row scales
  std::vector<std::int32_t> qsum_; // their per-row sums (VNNI compensation)
  std::size_t ldb_ = 0;            // q4: blocks of 32 per row
  std::vector<float> bscale_;      // q4: per-block scales [rows, ldb_]
  std::vector<std::int32_t> bsum_; // q4: per-block sums [rows, ldb_]
  std::vector<float> lora_;        // [rows, rank] low-rank temp
};

// RoPE as transformers computes it (shared by the decoder and the rotary encoders): inv_freq[i] =
// 1 / theta^(2i / dh) / factor in fp32; tables cos/sin [n, dh / 2] of positions pos0 + t (fp32
// angle); rotate_half on the first `heads` heads of rows [0, n) of x: pairs (i, i + dh / 2).
std::vector<float> rope_inv_freq(float theta, std::size_t head_dim, float factor = 1.f);
void rope_tables(const std::vector<float>& inv_freq, std::size_t pos0, std::size_t n, float* cos, float* sin);
void apply_rope(float* x, std::size_t ld, std::size_t heads, std::size_t head_dim, std::size_t n, const float* cos,
                const float* sin);

// Row-wise work this small costs less than waking the other threads for it (a parallel region is a
// barrier; a forward pass should have few of them).
inline int row_threads(std::size_t elements, int threads) { return elements < (std::size_t{1} << 18) ? 1 : threads; }

}  // namespace mlfs
