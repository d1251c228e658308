// Linear layers shared by the encoder and decoder forwards (see mlfs/linear.h).
#include "mlfs/linear.h"

#include <algorithm>
#include <cmath>

namespace mlfs {

namespace {
std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }
}  // namespace

void LinearWeights::column(std::size_t n, float* dst) const {
  switch (dtype) {
    case DType::f32: {
      const auto* w = static_cast<const float*>(weight) + n;
      for (std::size_t k = 0; k < in; ++k) dst[k] = w[k * ldw];
      break;
    }
    case DType::f16: {
      const auto* w = static_cast<const std::uint16_t*>(weight) + n;
      for (std::size_t k = 0; k < in; ++k) dst[k] = kernels::f16_to_f32_scalar(w[k * ldw]);
      break;
    }
    case DType::i8: {
      const auto* w = static_cast<const std::int8_t*>(weight) + (n / kernels::kI8Panel) * ldw + (n % kernels::kI8Panel) * 4;
      for (std::size_t k = 0; k < in; ++k)
        dst[k] = static_cast<float>(w[(k / 4) * 4 * kernels::kI8Panel + k % 4]) * w_scale[n];
      break;
    }
    case DType::q4: {
      const auto* w = static_cast<const std::uint8_t*>(weight);
      for (std::size_t k = 0; k < in; ++k) dst[k] = kernels::q4_weight(w, ldw, k, n);
      break;
    }
  }
}

std::vector<float> rope_inv_freq(float theta, std::size_t head_dim, float factor) {
  std::vector<float> inv;
  for (std::size_t i = 0; i < head_dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv.push_back(1.0f / std::pow(theta, e) / factor);
  }
  return inv;
}

void rope_tables(const std::vector<float>& inv_freq, std::size_t pos0, std::size_t n, float* cos, float* sin) {
  const std::size_t half = inv_freq.size();
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos0 + t) * inv_freq[i];
      cos[t * half + i] = std::cos(angle);
      sin[t * half + i] = std::sin(angle);
    }
}

void apply_rope(float* x, std::size_t ld, std::size_t heads, std::size_t head_dim, std::size_t n, const float* cos,
                const float* sin) {
  const std::size_t half = head_dim / 2;
  for (std::size_t t = 0; t < n; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (std::size_t h = 0; h < heads; ++h) {
      float* v = x + t * ld + h * head_dim;
      for (std::size_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

LinearWeights bind_linear(const PackedFile& file, const std::string& name, std::uint64_t out, std::uint64_t in,
                          DType dtype, bool with_bias) {
  auto f32 = [&](const std::string& n, std::vector<std::uint64_t> shape) {
    return static_cast<const float*>(file.require(n, DType::f32, shape).data);
  };
  LinearWeights w;
  w.dtype = dtype;
  w.out = out;
  w.in = in;
  switch (dtype) {
    case DType::i8: {
      w.ldw = kernels::packed_i8_ld(in);
      w.weight = file.require(name + ".w", dtype, {kernels::packed_n32(out) / kernels::kI8Panel, w.ldw}).data;
      w.w_scale = f32(name + ".w.scale", {out});
      break;
    }
    case DType::q4:
      if (in % kernels::kQ4Group != 0)
        throw PackedFileError(file.path() + ": tensor '" + name + ".w': 4-bit weights need an input width that is a "
                              "multiple of 32, got " + std::to_string(in));
      w.weight = file.require(name + ".w", dtype, {kernels::packed_q4_panels(out), kernels::packed_q4_ld(in)}).data;
      w.ldw = kernels::packed_q4_ld(in);
      break;
    default:
      w.weight = file.require(name + ".w", dtype, {in, out}).data;
      w.ldw = out;
  }
  if (with_bias) w.bias = f32(name + ".b", {out});
  if (const TensorView* at = file.find(name + ".lora_at")) {
    const std::uint64_t rank = at->cols();
    if (at->dtype != DType::f32 || at->shape.size() != 2 || rank > in)
      throw PackedFileError(file.path() + ": tensor '" + at->name + "' must be fp32 [" + std::to_string(in) + ", rank]");
    w.lora_at = f32(name + ".lora_at", {in, rank});
    w.lora_bt = f32(name + ".lora_bt", {rank, out});
    w.lora_scale = *f32(name + ".lora_s", {1});
    w.lora_rank = rank;
  }
  return w;
}

void LinearRunner::reserve(std::size_t rows, std::size_t max_in, std::size_t max_rank) {
  const std::size_t ldq = kernels::packed_k4(max_in);
  if (rows <= rows_ && ldq <= ldq_ && max_rank <= rank_) return;
  rows_ = std::max(rows_, rows);
  ldq_ = std::max(ldq_, ldq);
  rank_ = std::max(rank_, max_rank);
  ldb_ = ldq_ / kernels::kQ4Group;
  qact_.assign(rows_ * ldq_, 0);
  qscale_.assign(rows_, 0.f);
  qsum_.assign(rows_, 0);
  bscale_.assign(rows_ * std::max<std::size_t>(ldb_, 1), 0.f);
  bsum_.assign(rows_ * std::max<std::size_t>(ldb_, 1), 0);
  lora_.assign(rows_ * std::max<std::size_t>(rank_, 1), 0.f);
}

std::size_t LinearRunner::bytes() const {
  return qact_.capacity() + qscale_.capacity() * 4 + qsum_.capacity() * 4 + lora_.capacity() * 4 +
         bscale_.capacity() * 4 + bsum_.capacity() * 4;
}

void LinearRunner::quantize(const float* x, std::size_t ldx, std::size_t m, std::size_t k, int threads, bool blocks) {
  threads = row_threads(m * k, threads);
  const std::size_t rows = std::max<std::size_t>(1, (m + threads - 1) / threads);
  pool_.parallel_for((m + rows - 1) / rows, threads, [&](std::size_t task, int) {
    const std::size_t r0 = task * rows, r1 = std::min(m, r0 + rows);
    if (blocks)  // q4: per block of 32 inputs (the kernel's groups), see kernels.h
      kt_.quantize_blocks_q8(r1 - r0, k, x + r0 * ldx, ldx, qact_.data() + r0 * ldq_, ldq_, bscale_.data() + r0 * ldb_,
                             bsum_.data() + r0 * ldb_, ldb_);
    else
      kt_.quantize_rows_i8(r1 - r0, k, x + r0 * ldx, ldx, qact_.data() + r0 * ldq_, ldq_, qscale_.data() + r0,
                           qsum_.data() + r0);
  });
}

void LinearRunner::run(std::initializer_list<Out> outs, std::size_t n, std::size_t k, const float* x, std::size_t ldx,
                       std::size_t m, std::size_t ldy, int threads, bool gelu) {
  const Out* first = outs.begin();
  const std::size_t n_outs = outs.size();
  bool any_lora = false;
  for (const Out& o : outs) any_lora = any_lora || o.w->lora_at != nullptr;
  if (first->w->dtype == DType::i8 || first->w->dtype == DType::q4)
    quantize(x, ldx, m, k, threads, first->w->dtype == DType::q4);
  // `threads` column blocks per output: every thread gets one block of each output, balanced. Blocks
  // are whole int8 panels (32 columns; two q4 panels), so each thread streams its own contiguous panels.
  const std::size_t per_out = round_up((n + threads - 1) / threads, kernels::kI8Panel);
  const std::size_t blocks_per_out = (n + per_out - 1) / per_out;
  pool_.parallel_for(n_outs * blocks_per_out, threads, [&](std::size_t task, int) {
    const Out& o = first[task / blocks_per_out];
    const LinearWeights& w = *o.w;
    const std::size_t n0 = (task % blocks_per_out) * per_out, nb = std::min(n, n0 + per_out) - n0;
    const float* bias = w.bias ? w.bias + n0 : nullptr;
    switch (w.dtype) {
      case DType::f32:
        kt_.gemm_f32(m, nb, k, 1.f, x, ldx, static_cast<const float*>(w.weight) + n0, w.ldw, bias, o.y + n0, ldy,
                     o.accumulate);
        break;
      case DType::f16:
        kt_.gemm_f16(m, nb, k, x, ldx, static_cast<const std::uint16_t*>(w.weight) + n0, w.ldw, bias, o.y + n0, ldy,
                     o.accumulate);
        break;
      case DType::i8:
        kt_.gemm_i8(m, nb, k, qact_.data(), ldq_, qscale_.data(), qsum_.data(),
                    static_cast<const std::int8_t*>(w.weight) + n0 / kernels::kI8Panel * w.ldw, w.ldw, w.w_scale + n0, bias, o.y + n0, ldy,
                    o.accumulate);
        break;
      case DType::q4:
        kt_.gemm_q4(m, nb, k, qact_.data(), ldq_, bscale_.data(), bsum_.data(), ldb_,
                    static_cast<const std::uint8_t*>(w.weight) + (n0 / kernels::kQ4Panel) * w.ldw, w.ldw, bias,
                    o.y + n0, ldy, o.accumulate);
        break;
    }
    if (gelu && !any_lora) kt_.bias_gelu_f32(m, nb, nullptr, o.y + n0, ldy);  // bias is in the GEMM already
  });
  if (!any_lora) return;
  // Low-rank path beside the sliced base: t = x · At[:k, :], then y[:, :n] += s · t · Bt[:, :n].
  for (const Out& o : outs) {
    const LinearWeights& w = *o.w;
    if (w.lora_at == nullptr) continue;
    const std::size_t r = w.lora_rank;
    float* t = lora_.data();
    kt_.gemm_f32(m, r, k, 1.f, x, ldx, w.lora_at, r, nullptr, t, r, false);
    pool_.parallel_for(blocks_per_out, threads, [&](std::size_t task, int) {
      const std::size_t n0 = task * per_out, nb = std::min(n, n0 + per_out) - n0;
      kt_.gemm_f32(m, nb, r, w.lora_scale, t, r, w.lora_bt + n0, w.out, nullptr, o.y + n0, ldy, true);
    });
  }
  if (gelu)
    for (const Out& o : outs) kt_.bias_gelu_f32(m, n, nullptr, o.y, ldy);
}

}  // namespace mlfs
