// Encoder forward over a prefix-sliced sub-network. Every matrix product and row operation goes
// through the kernel table (mlfs/kernels.h); this file only lays out buffers, slices and threads.
#include "mlfs/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace mlfs {

struct Engine::Workspace {
  std::size_t tokens = 0, seq = 0, slots = 0;
  std::vector<float> x, q, k, v, ctx, tmp, ff, ffg, pooled, pooled2;
  std::vector<float> cos, sin;  // RoPE tables [seq, head_dim / 2] of the current layer
  std::vector<float> scores, kt;  // per thread slot: [seq, seq] and one head's K^T [head_dim, seq]
  std::vector<float> row;         // one dequantised embedding row
  std::vector<float> mask_bias;   // [tokens]: 0 for attended keys, a large negative for padding
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> mask;

  std::size_t bytes() const {
    auto f = [](const auto& v) { return v.capacity() * sizeof(v[0]); };
    return f(x) + f(q) + f(k) + f(v) + f(ctx) + f(tmp) + f(ff) + f(ffg) + f(cos) + f(sin) + f(pooled) + f(pooled2) + f(scores) + f(kt) +
           f(row) + f(mask_bias) + f(ids) + f(mask);
  }
};

Engine::Engine(std::shared_ptr<const PackedFile> file, const kernels::KernelTable& table)
    : file_(std::move(file)), dims_(file_->dims()), kt_(table), ws_(std::make_unique<Workspace>()) {
  const ModelDims& d = dims_;
  const DType wd = d.weight_dtype;
  // A = the attention width: hidden, or less in a sub-network extracted with fewer heads (the
  // workspace keeps q / k / v / ctx rows of stride H either way).
  const std::uint64_t H = d.hidden, I = d.intermediate, A = std::uint64_t{d.num_heads} * d.head_dim;
  auto f32 = [&](const std::string& name, std::vector<std::uint64_t> shape) {
    return static_cast<const float*>(file_->require(name, DType::f32, shape).data);
  };
  if (d.kind != ModelKind::encoder)
    throw PackedFileError(file_->path() + ": a decoder (causal LM) file; generate text with it instead of run()");
  auto bind = [&](const std::string& name, std::uint64_t out, std::uint64_t in, DType dtype) {
    LinearWeights w = bind_linear(*file_, name, out, in, dtype, /*with_bias=*/true);
    has_lora_ = has_lora_ || w.lora_at != nullptr;
    return w;
  };

  word_emb_ = file_->require("emb.word", wd, {d.vocab_size, H}).data;
  if (wd == DType::i8) word_scale_ = f32("emb.word.scale", {d.vocab_size});
  // Rotary encoders (ModernBERT) have no position / token-type tables.
  const bool rotary = file_->find("attn.theta") != nullptr;
  if (!rotary || file_->find("emb.pos") != nullptr) pos_emb_ = f32("emb.pos", {d.max_positions, H});
  if (!rotary || file_->find("emb.type") != nullptr) type_emb_ = f32("emb.type", {d.type_vocab_size, H});
  emb_ln_w_ = f32("emb.ln.w", {H});
  emb_ln_b_ = f32("emb.ln.b", {H});
  for (std::uint32_t i = 0; i < d.num_layers; ++i) {
    const std::string p = "l" + std::to_string(i) + ".";
    LayerWeights L;
    L.q = bind(p + "q", A, H, wd);
    L.k = bind(p + "k", A, H, wd);
    L.v = bind(p + "v", A, H, wd);
    L.o = bind(p + "o", H, A, wd);
    L.ff1 = bind(p + "ff1", I, H, wd);
    L.ff2 = bind(p + "ff2", H, I, wd);
    if (d.gated_ffn) L.ff1g = bind(p + "ff1g", I, H, wd);
    if (!d.pre_norm || file_->find(p + "ln1.w") != nullptr) {  // a pre-norm model's first layer may have none
      L.ln1_w = f32(p + "ln1.w", {H});
      L.ln1_b = f32(p + "ln1.b", {H});
    }
    L.ln2_w = f32(p + "ln2.w", {H});
    L.ln2_b = f32(p + "ln2.b", {H});
    layers_.push_back(L);
  }
  // Per-layer RoPE base and attention window (fp32 tensors of whole numbers, like the decoder's).
  const float* theta = rotary ? f32("attn.theta", {d.num_layers}) : nullptr;
  const float* window = file_->find("attn.window") != nullptr ? f32("attn.window", {d.num_layers}) : nullptr;
  for (std::uint32_t i = 0; i < d.num_layers; ++i) {
    if (theta != nullptr) {
      if (!(theta[i] > 0.f && theta[i] < 1e9f) || d.head_dim % 2 != 0)
        throw PackedFileError(file_->path() + ": tensor 'attn.theta' holds a bad RoPE base (or head_dim is odd)");
      layers_[i].inv_freq = rope_inv_freq(theta[i], d.head_dim);
    }
    if (window != nullptr) {
      if (!(window[i] >= 0.f && window[i] < 16777216.f) || window[i] != std::floor(window[i]))
        throw PackedFileError(file_->path() + ": tensor 'attn.window' holds a bad window size (re-pack the file)");
      layers_[i].window = static_cast<std::size_t>(window[i]);
    }
  }
  if (d.pre_norm) {
    final_ln_w_ = f32("final.ln.w", {H});
    final_ln_b_ = f32("final.ln.b", {H});
  }
  if (d.pooler_gelu_ln) {
    pooler_ln_w_ = f32("pooler.ln.w", {H});
    pooler_ln_b_ = f32("pooler.ln.b", {H});
  }
  if (file_->find("attn.relbias") != nullptr)
    rel_bias_ = f32("attn.relbias", {2 * std::uint64_t{d.max_positions} - 1, d.num_heads});
  if (d.pooling == Pooling::cls) pooler_ = bind("pooler", H, H, wd);
  if (d.num_labels) classifier_ = bind("cls", d.num_labels, H, DType::f32);  // pooling checked by the reader
}

Engine::~Engine() = default;

std::size_t Engine::workspace_bytes() const { return ws_->bytes() + lin_.bytes(); }

void validate_subnet(const SubnetSpec& subnet, const ModelDims& dims, std::size_t heads_per_group) {
  if (subnet.empty()) throw std::invalid_argument("a sub-network must keep at least one layer");
  for (std::size_t i = 0; i < subnet.size(); ++i) {
    const LayerSlice& s = subnet[i];
    const std::string at = "sub-network layer entry " + std::to_string(i) + " (layer " + std::to_string(s.layer) + "): ";
    if (s.layer >= dims.num_layers)
      throw std::invalid_argument(at + "layer index out of range, the model has " + std::to_string(dims.num_layers) +
                                  " layers");
    if (i > 0 && s.layer <= subnet[i - 1].layer)
      throw std::invalid_argument(at + "layers must be strictly increasing");
    if (s.heads < 1 || s.heads > dims.num_heads)
      throw std::invalid_argument(at + std::to_string(s.heads) + " heads, must be 1.." + std::to_string(dims.num_heads));
    if (s.heads % heads_per_group != 0)
      throw std::invalid_argument(at + std::to_string(s.heads) + " heads is not a whole number of key/value groups (" +
                                  std::to_string(heads_per_group) + " query heads per group)");
    if (s.mlp < 1 || s.mlp > dims.intermediate)
      throw std::invalid_argument(at + "MLP width " + std::to_string(s.mlp) + ", must be 1.." +
                                  std::to_string(dims.intermediate));
  }
}

void Engine::validate(const SubnetSpec& subnet) const { validate_subnet(subnet, dims_); }

template <typename Index>
void Engine::run(const Index* input_ids, const Index* attention_mask, std::size_t batch, std::size_t seq,
                 const SubnetSpec& subnet, int threads, float* out) {
  validate(subnet);
  if (batch == 0 || seq == 0) throw std::invalid_argument("input_ids must have at least one row and one column");
  if (seq > dims_.max_positions)
    throw std::invalid_argument("sequence length " + std::to_string(seq) + " exceeds the model's " +
                                std::to_string(dims_.max_positions) + " positions; truncate the input");
  if (threads < 1 || threads > 256) throw std::invalid_argument("threads must be between 1 and 256");
  std::lock_guard<std::mutex> lock(run_mutex_);
  const std::size_t tokens = batch * seq;
  ws_->ids.resize(tokens);
  ws_->mask.resize(tokens);
  for (std::size_t b = 0; b < batch; ++b) {
    std::size_t attended = 0;
    for (std::size_t s = 0; s < seq; ++s) {
      const std::size_t t = b * seq + s;
      const auto id = static_cast<std::int64_t>(input_ids[t]);
      if (id < 0 || id >= static_cast<std::int64_t>(dims_.vocab_size))
        throw std::invalid_argument("input_ids[" + std::to_string(b) + ", " + std::to_string(s) + "] = " +
                                    std::to_string(id) + " is outside the vocabulary [0, " +
                                    std::to_string(dims_.vocab_size) + ")");
      ws_->ids[t] = static_cast<std::int32_t>(id);
      const auto m = static_cast<std::int64_t>(attention_mask[t]);
      if (m != 0 && m != 1)  // a mask of weights or of token types is a caller's mistake, not "attend"
        throw std::invalid_argument("attention_mask[" + std::to_string(b) + ", " + std::to_string(s) + "] = " +
                                    std::to_string(m) + ": the mask holds 1 for a token and 0 for padding, "
                                    "nothing else");
      ws_->mask[t] = static_cast<std::uint8_t>(m);
      attended += ws_->mask[t];
    }
    if (attended == 0)
      throw std::invalid_argument("attention_mask row " + std::to_string(b) + " attends to no token");
  }
  forward(ws_->ids.data(), ws_->mask.data(), batch, seq, subnet, threads, out);
}

template void Engine::run<std::int32_t>(const std::int32_t*, const std::int32_t*, std::size_t, std::size_t,
                                        const SubnetSpec&, int, float*);
template void Engine::run<std::int64_t>(const std::int64_t*, const std::int64_t*, std::size_t, std::size_t,
                                        const SubnetSpec&, int, float*);

void Engine::ensure_workspace(std::size_t tokens, std::size_t seq, int threads) {
  pool_.reserve(threads);
  Workspace& w = *ws_;
  const std::size_t slots = static_cast<std::size_t>(pool_.capacity());
  if (tokens <= w.tokens && seq <= w.seq && slots <= w.slots) return;
  w.tokens = std::max(w.tokens, tokens);
  w.seq = std::max(w.seq, seq);
  w.slots = std::max(w.slots, slots);
  const std::size_t T = w.tokens, H = dims_.hidden, I = dims_.intermediate, S = w.seq;
  std::size_t max_rank = 0;
  for (const auto& L : layers_)
    for (const LinearWeights* lw : {&L.q, &L.k, &L.v, &L.o, &L.ff1, &L.ff2}) max_rank = std::max(max_rank, lw->lora_rank);
  for (auto* buf : {&w.x, &w.q, &w.k, &w.v, &w.ctx, &w.tmp, &w.pooled, &w.pooled2}) buf->assign(T * H, 0.f);
  w.ff.assign(T * I, 0.f);
  if (dims_.gated_ffn) w.ffg.assign(T * I, 0.f);
  w.cos.assign(S * dims_.head_dim / 2, 0.f);
  w.sin.assign(S * dims_.head_dim / 2, 0.f);
  lin_.reserve(T, std::max(H, I), max_rank);
  w.scores.assign(w.slots * S * S, 0.f);
  w.kt.assign(w.slots * dims_.head_dim * S, 0.f);
  w.row.assign(H, 0.f);
  w.mask_bias.assign(T, 0.f);
}

// Multi-head attention over the first `heads` heads; tasks are (batch row, head) pairs.
void Engine::attention(std::size_t batch, std::size_t seq, std::size_t heads, std::size_t window, int threads) {
  Workspace& w = *ws_;
  const std::size_t H = dims_.hidden, dh = dims_.head_dim, S = seq;
  const float scale = 1.f / std::sqrt(static_cast<float>(dh));
  pool_.parallel_for(batch * heads, threads, [&](std::size_t task, int slot) {
    const std::size_t b = task / heads, head = task % heads;
    const std::size_t base = b * S * H + head * dh;
    float* scores = w.scores.data() + static_cast<std::size_t>(slot) * w.seq * w.seq;
    float* kt = w.kt.data() + static_cast<std::size_t>(slot) * dh * w.seq;
    // scores = Q K^T: the kernels take the right operand as [k, n], so this head's K is transposed.
    kernels::transpose_f32(S, dh, w.k.data() + base, H, kt, S);
    if (window > 0) {  // local attention (ModernBERT): row i sees keys |i - j| < window
      kt_.gemm_f32(S, S, dh, 1.f, w.q.data() + base, H, kt, S, nullptr, scores, S, false);
      for (std::size_t i = 0; i < S; ++i) {
        const std::size_t lo = i + 1 > window ? i + 1 - window : 0, hi = std::min(S, i + window);
        float* row = scores + i * S;
        kt_.softmax_f32(1, hi - lo, row + lo, S, w.mask_bias.data() + b * S + lo, scale);
        std::fill(row, row + lo, 0.f);
        std::fill(row + hi, row + S, 0.f);
      }
    } else if (rel_bias_ == nullptr) {
      kt_.gemm_f32(S, S, dh, 1.f, w.q.data() + base, H, kt, S, nullptr, scores, S, false);
      kt_.softmax_f32(S, S, scores, S, w.mask_bias.data() + b * S, scale);
    } else {  // MPNet: scaled scores + the bias of the offset j - i, as transformers adds it
      kt_.gemm_f32(S, S, dh, scale, w.q.data() + base, H, kt, S, nullptr, scores, S, false);
      const std::size_t P = dims_.max_positions, NH = dims_.num_heads;
      for (std::size_t i = 0; i < S; ++i)
        for (std::size_t j = 0; j < S; ++j) scores[i * S + j] += rel_bias_[(j + P - 1 - i) * NH + head];
      kt_.softmax_f32(S, S, scores, S, w.mask_bias.data() + b * S, 1.f);
    }
    // ctx = P V, with V [seq, head_dim] read in place (stride H).
    kt_.gemm_f32(S, dh, S, 1.f, scores, S, w.v.data() + base, H, nullptr, w.ctx.data() + base, H, false);
  });
}

void Engine::forward(const std::int32_t* ids, const std::uint8_t* mask, std::size_t batch, std::size_t seq,
                     const SubnetSpec& subnet, int threads, float* out) {
  const std::size_t T = batch * seq, H = dims_.hidden, I = dims_.intermediate, dh = dims_.head_dim;
  ensure_workspace(T, seq, threads);
  Workspace& w = *ws_;
  const float eps = dims_.layer_norm_eps;
  auto layer_norm = [&](float* x, const float* residual, const float* g, const float* b) {
    // x = LayerNorm(x + residual) row by row, split over tokens when there are enough of them.
    const int n_threads = row_threads(T * H, threads);
    const std::size_t rows = std::max<std::size_t>(1, (T + n_threads - 1) / n_threads);
    pool_.parallel_for((T + rows - 1) / rows, n_threads, [&](std::size_t task, int) {
      const std::size_t r0 = task * rows, r1 = std::min(T, r0 + rows);
      kt_.layernorm_f32(r1 - r0, H, x + r0 * H, H, residual ? residual + r0 * H : nullptr, H, g, b, eps, x + r0 * H, H);
    });
  };

  // Embeddings: word (dequantised) + position + token type 0 (single-segment input), then LayerNorm.
  const DType wd = dims_.weight_dtype;
  for (std::size_t t = 0; t < T; ++t) {
    const std::size_t id = static_cast<std::size_t>(ids[t]), pos = t % seq;
    float* x = w.x.data() + t * H;
    // word + position + token type 0, summed in this order (an int8 file requantises the activations:
    // one rounding apart changes later layers); rotary models (ModernBERT) add neither table.
    const float* p = pos_emb_ != nullptr ? pos_emb_ + pos * H : nullptr;
    auto add = [&](std::size_t c, float word) { return p != nullptr ? word + p[c] + type_emb_[c] : word; };
    if (wd == DType::f32) {
      const float* e = static_cast<const float*>(word_emb_) + id * H;
      for (std::size_t c = 0; c < H; ++c) x[c] = add(c, e[c]);
    } else if (wd == DType::f16) {
      kt_.f16_to_f32(H, static_cast<const std::uint16_t*>(word_emb_) + id * H, w.row.data());
      for (std::size_t c = 0; c < H; ++c) x[c] = add(c, w.row[c]);
    } else {
      const auto* e = static_cast<const std::int8_t*>(word_emb_) + id * H;
      const float s = word_scale_[id];
      for (std::size_t c = 0; c < H; ++c) x[c] = add(c, static_cast<float>(e[c]) * s);
    }
    w.mask_bias[t] = mask[t] ? 0.f : -1e30f;
  }
  layer_norm(w.x.data(), nullptr, emb_ln_w_, emb_ln_b_);

  for (const LayerSlice& s : subnet) {
    const LayerWeights& L = layers_[s.layer];
    const std::size_t hd = s.heads * dh, f = s.mlp;
    if (dims_.pre_norm) {
      pre_norm_layer(L, s, batch, seq, threads);
      continue;
    }
    lin_.run({{&L.q, w.q.data()}, {&L.k, w.k.data()}, {&L.v, w.v.data()}}, hd, H, w.x.data(), H, T, H, threads);
    attention(batch, seq, s.heads, L.window, threads);
    lin_.run({{&L.o, w.tmp.data()}}, H, hd, w.ctx.data(), H, T, H, threads);
    layer_norm(w.tmp.data(), w.x.data(), L.ln1_w, L.ln1_b);
    std::swap(w.x, w.tmp);
    lin_.run({{&L.ff1, w.ff.data()}}, f, H, w.x.data(), H, T, I, threads, /*gelu=*/true);
    lin_.run({{&L.ff2, w.tmp.data()}}, H, f, w.ff.data(), I, T, H, threads);
    layer_norm(w.tmp.data(), w.x.data(), L.ln2_w, L.ln2_b);
    std::swap(w.x, w.tmp);
  }

  if (final_ln_w_ != nullptr) layer_norm(w.x.data(), nullptr, final_ln_w_, final_ln_b_);

  // Pooling (mlfs/packed_file.h): the pooler (dense + tanh; ReLU for DistilBERT, GELU + LayerNorm
  // for ModernBERT's head) on the first token, or one of sentence-transformers' modes over the raw
  // states of the attended tokens; then, when the file says so, the L2 normalisation of its
  // Normalize module (x / max(|x|, 1e-12), as torch's normalize).
  float* pooled = w.pooled.data();
  const Pooling mode = dims_.pooling;
  if (mode == Pooling::cls) {
    for (std::size_t b = 0; b < batch; ++b)
      std::copy_n(w.x.data() + b * seq * H, H, w.pooled2.data() + b * H);
    lin_.run({{&pooler_, pooled}}, H, H, w.pooled2.data(), H, batch, H, threads);
    // BERT / RoBERTa: dense + tanh; DistilBERT's pre_classifier: dense + ReLU.
    if (dims_.pooler_relu) {
      for (std::size_t i = 0; i < batch * H; ++i) pooled[i] = std::max(pooled[i], 0.f);
    } else if (dims_.pooler_gelu_ln) {  // ModernBERT's head: dense + GELU + LayerNorm
      kt_.bias_gelu_f32(batch, H, nullptr, pooled, H);
      kt_.layernorm_f32(batch, H, pooled, H, nullptr, H, pooler_ln_w_, pooler_ln_b_, dims_.layer_norm_eps, pooled, H);
    } else
      for (std::size_t i = 0; i < batch * H; ++i) pooled[i] = std::tanh(pooled[i]);
  } else {
    for (std::size_t b = 0; b < batch; ++b) {
      float* dst = pooled + b * H;
      const float* xb = w.x.data() + b * seq * H;
      const std::uint8_t* m = mask + b * seq;
      if (mode == Pooling::cls_token || mode == Pooling::lasttoken) {
        std::size_t s = 0;
        if (mode == Pooling::lasttoken)  // the last attended token (run() checked there is one)
          for (std::size_t i = 0; i < seq; ++i) s = m[i] ? i : s;
        std::copy_n(xb + s * H, H, dst);
      } else if (mode == Pooling::max) {
        std::fill(dst, dst + H, std::numeric_limits<float>::lowest());
        for (std::size_t s = 0; s < seq; ++s)
          if (m[s])
            for (std::size_t c = 0; c < H; ++c) dst[c] = std::max(dst[c], xb[s * H + c]);
      } else {  // mean, mean_sqrt_len: the sum over attended tokens / n or / sqrt(n)
        std::fill(dst, dst + H, 0.f);
        std::size_t count = 0;
        for (std::size_t s = 0; s < seq; ++s) {
          if (!m[s]) continue;
          for (std::size_t c = 0; c < H; ++c) dst[c] += xb[s * H + c];
          ++count;
        }
        const float n = static_cast<float>(count);
        const float div = mode == Pooling::mean_sqrt_len ? std::sqrt(n) : n;
        for (std::size_t c = 0; c < H; ++c) dst[c] /= div;
      }
    }
  }
  if (dims_.normalize) {
    for (std::size_t b = 0; b < batch; ++b) {
      float* dst = pooled + b * H;
      double sq = 0.0;
      for (std::size_t c = 0; c < H; ++c) sq += static_cast<double>(dst[c]) * dst[c];
      const float inv = 1.f / std::max(static_cast<float>(std::sqrt(sq)), 1e-12f);
      for (std::size_t c = 0; c < H; ++c) dst[c] *= inv;
    }
  }
  if (dims_.num_labels) {
    lin_.run({{&classifier_, out}}, dims_.num_labels, H, pooled, H, batch, dims_.num_labels, 1);
  } else {
    std::copy_n(pooled, batch * H, out);
  }
}

// One pre-norm layer (ModernBERT): x += o(attn(LN1(x))) with RoPE and the layer's window, then
// x += ff2(GELU(ff1 h) * ff1g h), h = LN2(x). The post-LN layers of BERT are forward()'s loop.
void Engine::pre_norm_layer(const LayerWeights& L, const LayerSlice& s, std::size_t batch, std::size_t seq,
                            int threads) {
  Workspace& w = *ws_;
  const std::size_t T = batch * seq, H = dims_.hidden, I = dims_.intermediate, dh = dims_.head_dim;
  const std::size_t hd = s.heads * dh, f = s.mlp;
  const float eps = dims_.layer_norm_eps;
  auto norm = [&](const float* g, const float* b) {  // tmp = LN(x), or x when the layer has no norm
    if (g == nullptr) {
      std::copy_n(w.x.data(), T * H, w.tmp.data());
      return;
    }
    const int n_threads = row_threads(T * H, threads);
    const std::size_t rows = std::max<std::size_t>(1, (T + n_threads - 1) / n_threads);
    pool_.parallel_for((T + rows - 1) / rows, n_threads, [&](std::size_t task, int) {
      const std::size_t r0 = task * rows, r1 = std::min(T, r0 + rows);
      kt_.layernorm_f32(r1 - r0, H, w.x.data() + r0 * H, H, nullptr, H, g, b, eps, w.tmp.data() + r0 * H, H);
    });
  };
  norm(L.ln1_w, L.ln1_b);
  lin_.run({{&L.q, w.q.data()}, {&L.k, w.k.data()}, {&L.v, w.v.data()}}, hd, H, w.tmp.data(), H, T, H, threads);
  if (!L.inv_freq.empty()) {
    rope_tables(L.inv_freq, 0, seq, w.cos.data(), w.sin.data());
    for (std::size_t b = 0; b < batch; ++b) {
      apply_rope(w.q.data() + b * seq * H, H, s.heads, dh, seq, w.cos.data(), w.sin.data());
      apply_rope(w.k.data() + b * seq * H, H, s.heads, dh, seq, w.cos.data(), w.sin.data());
    }
  }
  attention(batch, seq, s.heads, L.window, threads);
  lin_.run({{&L.o, w.x.data(), true}}, H, hd, w.ctx.data(), H, T, H, threads);
  norm(L.ln2_w, L.ln2_b);
  lin_.run({{&L.ff1, w.ff.data()}}, f, H, w.tmp.data(), H, T, I, threads, /*gelu=*/true);
  if (L.ff1g.weight != nullptr) {
    lin_.run({{&L.ff1g, w.ffg.data()}}, f, H, w.tmp.data(), H, T, I, threads);
    for (std::size_t t = 0; t < T; ++t)
      for (std::size_t c = 0; c < f; ++c) w.ff[t * I + c] *= w.ffg[t * I + c];
  }
  lin_.run({{&L.ff2, w.x.data(), true}}, H, f, w.ff.data(), I, T, H, threads);
}

}  // namespace mlfs
