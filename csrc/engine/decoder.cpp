// Decoder forward (Llama family and, through the file's family options, GPT-2, Qwen3, Gemma /
// Gemma 2, Mistral, Phi-3) and the generation loop. Every matrix product and row operation
// goes through the kernel table; this file lays out buffers, slices, the KV cache and threads.
#include "mlfs/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mlfs {

struct Decoder::Workspace {
  std::size_t tokens = 0, positions = 0, slots = 0;
  std::vector<float> x, xn, q, k, v, ctx, gate, up, last, head;  // head: logits in the file's row order
  std::vector<float> kt, vt, scores;  // per thread slot: K^T [dh, positions], V [positions, dh], [tokens, positions]
  std::vector<float> cos, sin;        // RoPE tables [tokens, dh / 2]

  std::size_t bytes() const {
    auto f = [](const auto& v) { return v.capacity() * sizeof(v[0]); };
    return f(x) + f(xn) + f(q) + f(k) + f(v) + f(ctx) + f(gate) + f(up) + f(last) + f(head) + f(kt) + f(vt) + f(scores) +
           f(cos) + f(sin);
  }
};

Decoder::Decoder(std::shared_ptr<const PackedFile> file, const kernels::KernelTable& table)
    : file_(std::move(file)), dims_(file_->dims()), kt_(table), ws_(std::make_unique<Workspace>()) {
  const ModelDims& d = dims_;
  if (d.kind != ModelKind::decoder)
    throw PackedFileError(file_->path() + ": an encoder file; run() it, generation needs a decoder (causal LM)");
  if (d.head_dim % 2 != 0 || d.head_dim > 512)
    throw PackedFileError(file_->path() + ": head_dim must be even and at most 512 (RoPE, attention scratch)");
  const DType wd = d.weight_dtype;
  const std::uint64_t H = d.hidden, I = d.intermediate, dh = d.head_dim;
  const std::uint64_t qd = std::uint64_t{d.num_heads} * dh, kvd = std::uint64_t{d.num_kv_heads} * dh;
  auto f32 = [&](const std::string& name, std::vector<std::uint64_t> shape) {
    return static_cast<const float*>(file_->require(name, DType::f32, shape).data);
  };
  // The LM head (and an untied embedding table) may be kept at a higher precision than the layers
  // (e.g. fp16 in an int8 file, as llama.cpp keeps output.weight): bound in the dtype it is stored in.
  auto stored = [&](const std::string& name) {
    const TensorView* t = file_->find(name + ".w");
    return t != nullptr ? t->dtype : wd;
  };
  head_ = bind_linear(*file_, "head", d.vocab_size, H, stored("head"), false);
  embed_ = d.tied_embeddings ? head_ : bind_linear(*file_, "emb", d.vocab_size, H, stored("emb"), false);
  // The family options (format v4) decide which tensors exist; each is bound here, once.
  if (d.ungated && !d.gelu_tanh)
    throw PackedFileError(file_->path() + ": an ungated MLP is implemented with GELU-tanh only (GPT-2)");
  const bool lb = d.linear_bias;
  final_norm_ = f32("norm.w", {H});
  if (d.layer_norm) final_norm_b_ = f32("norm.b", {H});
  if (d.learned_pos) pos_emb_ = f32("emb.pos", {d.max_positions, H});
  for (std::uint32_t i = 0; i < d.num_layers; ++i) {
    const std::string p = "l" + std::to_string(i) + ".";
    DecoderLayerWeights L;
    L.q = bind_linear(*file_, p + "q", qd, H, wd, d.qkv_bias || lb);
    L.k = bind_linear(*file_, p + "k", kvd, H, wd, d.qkv_bias || lb);
    L.v = bind_linear(*file_, p + "v", kvd, H, wd, d.qkv_bias || lb);
    L.o = bind_linear(*file_, p + "o", H, qd, wd, lb);
    if (!d.ungated) L.gate = bind_linear(*file_, p + "gate", I, H, wd, lb);
    L.up = bind_linear(*file_, p + "up", I, H, wd, lb);
    L.down = bind_linear(*file_, p + "down", H, I, wd, lb);
    L.attn_norm = f32(p + "attn_norm.w", {H});
    L.mlp_norm = f32(p + "mlp_norm.w", {H});
    if (d.layer_norm) {
      L.attn_norm_b = f32(p + "attn_norm.b", {H});
      L.mlp_norm_b = f32(p + "mlp_norm.b", {H});
    }
    if (d.qk_norm) {
      L.q_norm = f32(p + "q_norm.w", {dh});
      L.k_norm = f32(p + "k_norm.w", {dh});
    }
    if (d.post_norms) {
      L.post_attn_norm = f32(p + "post_attn_norm.w", {H});
      L.post_mlp_norm = f32(p + "post_mlp_norm.w", {H});
    }
    layers_.push_back(L);
  }
  // Sliding-window attention per layer (Mistral: all layers, Gemma 2: every other one); fp32 ids
  // like vocab.order, checked to be whole numbers.
  if (file_->find("attn.window") != nullptr) {
    const float* win = f32("attn.window", {d.num_layers});
    for (std::uint32_t i = 0; i < d.num_layers; ++i) {
      if (!(win[i] >= 0.f && win[i] < 16777216.f) || win[i] != std::floor(win[i]))
        throw PackedFileError(file_->path() + ": tensor 'attn.window' holds a bad window size (re-pack the file)");
      layers_[i].window = static_cast<std::size_t>(win[i]);
    }
  }
  // Optional vocabulary order: head (and embedding) row r holds token order[r]. Stored as fp32
  // (exact for ids < 2^24) so the format needs no integer dtype; checked to be a permutation.
  if (file_->find("vocab.order") != nullptr) {
    const float* order = f32("vocab.order", {d.vocab_size});
    id_of_row_.resize(d.vocab_size);
    row_of_id_.assign(d.vocab_size, -1);
    for (std::uint32_t r = 0; r < d.vocab_size; ++r) {
      const float v = order[r];
      if (!(v >= 0.f && v < static_cast<float>(d.vocab_size)) || v != std::floor(v) ||
          row_of_id_[static_cast<std::size_t>(v)] >= 0)
        throw PackedFileError(file_->path() + ": tensor 'vocab.order' is not a permutation of the vocabulary "
                              "(re-pack the file)");
      id_of_row_[r] = static_cast<std::int32_t>(v);
      row_of_id_[static_cast<std::size_t>(v)] = static_cast<std::int32_t>(r);
    }
  }
  // transformers: inv_freq = 1 / theta^(arange(0, dh, 2) / dh) in fp32, divided by the linear factor.
  inv_freq_ = rope_inv_freq(d.rope_theta, dh, d.rope_linear_factor);
}

Decoder::~Decoder() = default;

std::size_t Decoder::workspace_bytes() const { return ws_->bytes() + lin_.bytes(); }

void Decoder::validate(const SubnetSpec& subnet) const {
  validate_subnet(subnet, dims_, group_size());
  if (dims_.weight_dtype != DType::q4) return;
  for (std::size_t i = 0; i < subnet.size(); ++i) {
    const LayerSlice& s = subnet[i];
    if (s.mlp % kernels::kQ4Group != 0 || (s.heads * dims_.head_dim) % kernels::kQ4Group != 0)
      throw std::invalid_argument("sub-network layer entry " + std::to_string(i) + " (layer " + std::to_string(s.layer) +
                                  "): a 4-bit file slices only widths that are multiples of its 32-input groups; "
                                  "MLP width " + std::to_string(s.mlp) + " and attention width " +
                                  std::to_string(s.heads * dims_.head_dim) + " must both be");
  }
}

template <typename Index>
void Decoder::validate_ids(const Index* ids, std::size_t n) const {
  for (std::size_t t = 0; t < n; ++t) {
    const auto id = static_cast<std::int64_t>(ids[t]);
    if (id < 0 || id >= static_cast<std::int64_t>(dims_.vocab_size))
      throw std::invalid_argument("token id " + std::to_string(id) + " at position " + std::to_string(t) +
                                  " is outside the vocabulary [0, " + std::to_string(dims_.vocab_size) + ")");
  }
}
template void Decoder::validate_ids<std::int32_t>(const std::int32_t*, std::size_t) const;
template void Decoder::validate_ids<std::int64_t>(const std::int64_t*, std::size_t) const;

KvCache Decoder::make_cache(const SubnetSpec& subnet, DType dtype) const {
  validate(subnet);
  std::vector<std::size_t> widths;
  for (const LayerSlice& s : subnet) widths.push_back(s.heads / group_size() * dims_.head_dim);
  return KvCache(std::move(widths), dtype, dims_.max_positions);
}

// RoPE on the first `heads` heads of rows [0, n), with this call's tables (row t = position start + t).
void Decoder::rope(float* x, std::size_t ld, std::size_t heads, std::size_t n) const {
  apply_rope(x, ld, heads, dims_.head_dim, n, ws_->cos.data(), ws_->sin.data());
}

constexpr std::size_t kMaxHeadDim = 512;  // the KV cache's per-head conversion limit too

// Causal grouped-query attention of the n new tokens (positions start..start+n) of one layer slot:
// one task per key/value head; its K^T and V over all held positions are read once from the cache
// and serve every query head of its group (scores = Q K^T as a GEMM, softmax over the visible
// prefix of each row, ctx = P V).
void Decoder::attention(std::size_t slot, std::size_t heads, std::size_t start, std::size_t n, std::size_t window,
                        KvCache& cache, int threads) {
  Workspace& w = *ws_;
  const std::size_t dh = dims_.head_dim, g = group_size(), kv_heads = heads / g, total = start + n;
  const std::size_t qd = heads * dh;
  const float scale = dims_.attn_scale > 0.f ? dims_.attn_scale : 1.f / std::sqrt(static_cast<float>(dh));
  const float softcap = dims_.attn_softcap;
  // Scores row of query i -> probabilities: causal (positions <= start + i), within the sliding
  // window when the layer has one (the last `window` positions, as transformers' sliding mask),
  // soft-capped first when the file says so; everything outside is 0 for the P.V product.
  auto probabilities = [&](float* row, std::size_t i) {
    const std::size_t visible = start + i + 1, lo = window > 0 && visible > window ? visible - window : 0;
    float s = scale;
    if (softcap > 0.f) {
      kt_.softcap_f32(1, visible - lo, row + lo, total, scale, softcap);
      s = 1.f;
    }
    kt_.softmax_f32(1, visible - lo, row + lo, total, nullptr, s);
    std::fill(row, row + lo, 0.f);
    std::fill(row + visible, row + total, 0.f);
  };
  if (n * g <= dh && dh <= kMaxHeadDim) {
    // Few query rows (decode): read the cache in place instead of copying and transposing every
    // head's K and V over all positions per token (perf: 12.6 % of int8 decode cycles at ~300
    // positions went to that copy). Each K row is converted (fp16) once and dotted with all g * n
    // query rows of its group; P.V runs as a GEMM straight over each chunk's V block.
    pool_.parallel_for(kv_heads, std::min<int>(threads, static_cast<int>(kv_heads)), [&](std::size_t kvh, int tslot) {
      float* sc = w.kt.data() + static_cast<std::size_t>(tslot) * dh * w.positions;  // [g * n, total] <= kt's room
      const std::size_t c0 = kvh * dh, width = cache.width(slot), chunk = cache.chunk();
      const bool half = cache.dtype() == DType::f16;
      float krow[kMaxHeadDim];
      for (std::size_t p = 0; p < total; ++p) {
        const void* kr = cache.row_at(slot, false, p);
        const float* k;
        if (half) {
          kt_.f16_to_f32(dh, static_cast<const std::uint16_t*>(kr) + c0, krow);
          k = krow;
        } else {
          k = static_cast<const float*>(kr) + c0;
        }
        for (std::size_t i = 0; i < n; ++i) {
          if (p > start + i) continue;  // causal: row i sees positions <= start + i
          for (std::size_t j = 0; j < g; ++j)
            sc[(j * n + i) * total + p] = kt_.dot_f32(w.q.data() + i * qd + (kvh * g + j) * dh, k, dh);
        }
      }
      for (std::size_t j = 0; j < g; ++j)
        for (std::size_t i = 0; i < n; ++i) probabilities(sc + (j * n + i) * total, i);
      for (std::size_t j = 0; j < g; ++j) {
        float* ctx = w.ctx.data() + (kvh * g + j) * dh;
        for (std::size_t p0 = 0; p0 < total; p0 += chunk) {
          const std::size_t rows = std::min(chunk, total - p0);
          const void* vb = cache.row_at(slot, true, p0);
          if (half)
            kt_.gemm_f16(n, dh, rows, sc + j * n * total + p0, total, static_cast<const std::uint16_t*>(vb) + c0, width,
                         nullptr, ctx, qd, p0 > 0);
          else
            kt_.gemm_f32(n, dh, rows, 1.f, sc + j * n * total + p0, total, static_cast<const float*>(vb) + c0, width,
                         nullptr, ctx, qd, p0 > 0);
        }
      }
    });
    return;
  }
  pool_.parallel_for(kv_heads, std::min<int>(threads, static_cast<int>(kv_heads)), [&](std::size_t kvh, int tslot) {
    float* kt = w.kt.data() + static_cast<std::size_t>(tslot) * dh * w.positions;
    float* vt = w.vt.data() + static_cast<std::size_t>(tslot) * dh * w.positions;
    float* sc = w.scores.data() + static_cast<std::size_t>(tslot) * w.tokens * w.positions;
    cache.read_head(slot, kvh, dh, total, kt, vt, kt_);
    for (std::size_t j = 0; j < g; ++j) {
      const std::size_t head = kvh * g + j;
      kt_.gemm_f32(n, total, dh, 1.f, w.q.data() + head * dh, qd, kt, total, nullptr, sc, total, false);
      for (std::size_t i = 0; i < n; ++i) probabilities(sc + i * total, i);
      kt_.gemm_f32(n, dh, total, 1.f, sc, total, vt, dh, nullptr, w.ctx.data() + head * dh, qd, false);
    }
  });
}

void Decoder::forward(const std::int32_t* ids, std::size_t n, KvCache& cache, const SubnetSpec& subnet, int threads,
                      float* logits, bool all_logits, std::size_t head_rows) {
  if (n == 0) throw std::invalid_argument("forward needs at least one token");
  if (head_rows > dims_.vocab_size || (head_rows % 32 != 0 && head_rows != dims_.vocab_size))
    throw std::invalid_argument("a head of " + std::to_string(head_rows) + " rows: the scored vocabulary must be a "
                                "multiple of 32 (whole weight panels) and at most " + std::to_string(dims_.vocab_size));
  if (threads < 1 || threads > 256) throw std::invalid_argument("threads must be between 1 and 256");
  // A cache with more slots serves a depth-prefix of its sub-network (a speculative draft sharing
  // the target's cache): the first slots must match.
  if (cache.slots() < subnet.size()) throw std::invalid_argument("the KV cache was made for another sub-network");
  for (std::size_t i = 0; i < subnet.size(); ++i)
    if (cache.width(i) != subnet[i].heads / group_size() * dims_.head_dim)
      throw std::invalid_argument("the KV cache was made for another sub-network");
  std::lock_guard<std::mutex> lock(mutex_);
  const std::size_t start = cache.length(), total = start + n;
  cache.reserve(total);  // throws past max_positions
  const std::size_t H = dims_.hidden, I = dims_.intermediate, dh = dims_.head_dim, V = dims_.vocab_size;
  const std::size_t QD = std::size_t{dims_.num_heads} * dh, KVD = std::size_t{dims_.num_kv_heads} * dh;

  // Workspace: grows to the largest call seen (activations by tokens, attention scratch by positions).
  pool_.reserve(threads);
  Workspace& w = *ws_;
  const std::size_t slots = static_cast<std::size_t>(pool_.capacity());
  if (n > w.tokens || total > w.positions || slots > w.slots) {
    w.tokens = std::max(w.tokens, n);
    w.positions = std::max(w.positions, (total + 255) / 256 * 256);  // in chunks: not once per token
    w.slots = std::max(w.slots, slots);
    const std::size_t T = w.tokens;
    w.x.assign(T * H, 0.f);
    w.xn.assign(T * H, 0.f);
    w.q.assign(T * QD, 0.f);
    w.k.assign(T * KVD, 0.f);
    w.v.assign(T * KVD, 0.f);
    w.ctx.assign(T * QD, 0.f);
    w.gate.assign(T * I, 0.f);
    w.up.assign(T * I, 0.f);
    w.kt.assign(w.slots * dh * w.positions, 0.f);
    w.vt.assign(w.slots * dh * w.positions, 0.f);
    w.scores.assign(w.slots * T * w.positions, 0.f);
    w.cos.assign(T * dh / 2, 0.f);
    w.sin.assign(T * dh / 2, 0.f);
    std::size_t max_rank = 0;
    for (const auto& L : layers_)
      for (const LinearWeights* lw : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
        max_rank = std::max(max_rank, lw->lora_rank);
    lin_.reserve(T, std::max({H, I, QD}), max_rank);
  }
  // RoPE tables for positions start..start+n: fp32 angle = position * inv_freq, as transformers.
  rope_tables(inv_freq_, start, n, w.cos.data(), w.sin.data());
  for (std::size_t t = 0; t < n; ++t) {
    const auto id = static_cast<std::size_t>(ids[t]);
    float* x = w.x.data() + t * H;
    embed_.column(row_of_id_.empty() ? id : static_cast<std::size_t>(row_of_id_[id]), x);
    if (dims_.embed_scale > 0.f)
      for (std::size_t c = 0; c < H; ++c) x[c] *= dims_.embed_scale;
    if (pos_emb_ != nullptr)
      for (std::size_t c = 0; c < H; ++c) x[c] += pos_emb_[(start + t) * H + c];
  }

  const float eps = dims_.layer_norm_eps;
  // RMSNorm, or LayerNorm with a bias (beta non-null: GPT-2).
  auto norm = [&](const float* x, const float* gamma, const float* beta, float* out, std::size_t rows) {
    const int nt = row_threads(rows * H, threads);
    const std::size_t per = std::max<std::size_t>(1, (rows + nt - 1) / nt);
    pool_.parallel_for((rows + per - 1) / per, nt, [&](std::size_t task, int) {
      const std::size_t r0 = task * per, r1 = std::min(rows, r0 + per);
      if (beta != nullptr)
        kt_.layernorm_f32(r1 - r0, H, x + r0 * H, H, nullptr, H, gamma, beta, eps, out + r0 * H, H);
      else
        kt_.rmsnorm_f32(r1 - r0, H, x + r0 * H, H, gamma, eps, out + r0 * H, H);
    });
  };
  // A block's output y [n, H] into the residual stream: x += post_norm(y) (Gemma 2).
  auto add_normed = [&](float* y, const float* gamma) {
    norm(y, gamma, nullptr, y, n);
    for (std::size_t i = 0; i < n * H; ++i) w.x[i] += y[i];
  };

  for (std::size_t slot = 0; slot < subnet.size(); ++slot) {
    const LayerSlice& s = subnet[slot];
    const DecoderLayerWeights& L = layers_[s.layer];
    const std::size_t heads = s.heads, qd = heads * dh, kvd = heads / group_size() * dh, f = s.mlp;
    norm(w.x.data(), L.attn_norm, L.attn_norm_b, w.xn.data(), n);
    // Q, then K and V (different widths under GQA); the activations are quantised once per call.
    lin_.run({{&L.q, w.q.data()}}, qd, H, w.xn.data(), H, n, qd, threads);
    lin_.run({{&L.k, w.k.data()}, {&L.v, w.v.data()}}, kvd, H, w.xn.data(), H, n, kvd, threads);
    if (L.q_norm != nullptr) {  // Qwen3: RMSNorm of every head's q and k (rows of head_dim, contiguous)
      kt_.rmsnorm_f32(n * heads, dh, w.q.data(), dh, L.q_norm, eps, w.q.data(), dh);
      kt_.rmsnorm_f32(n * (heads / group_size()), dh, w.k.data(), dh, L.k_norm, eps, w.k.data(), dh);
    }
    if (pos_emb_ == nullptr) {
      rope(w.q.data(), qd, heads, n);
      rope(w.k.data(), kvd, heads / group_size(), n);
    }
    cache.write(slot, start, n, w.k.data(), kvd, w.v.data(), kvd, kt_);
    attention(slot, heads, start, n, L.window, cache, threads);
    // o_proj and down_proj accumulate into the residual stream x: the residual add is their
    // epilogue, unless the block's output is normed first (Gemma 2's post-norms).
    if (L.post_attn_norm != nullptr) {
      lin_.run({{&L.o, w.xn.data()}}, H, qd, w.ctx.data(), qd, n, H, threads);
      add_normed(w.xn.data(), L.post_attn_norm);
    } else {
      lin_.run({{&L.o, w.x.data(), true}}, H, qd, w.ctx.data(), qd, n, H, threads);
    }
    norm(w.x.data(), L.mlp_norm, L.mlp_norm_b, w.xn.data(), n);
    if (L.gate.weight != nullptr)
      lin_.run({{&L.gate, w.gate.data()}, {&L.up, w.up.data()}}, f, H, w.xn.data(), H, n, f, threads);
    else  // ungated (GPT-2): the activation runs on up's output in place
      lin_.run({{&L.up, w.gate.data()}}, f, H, w.xn.data(), H, n, f, threads);
    {
      const int nt = row_threads(n * f, threads);
      const std::size_t per = std::max<std::size_t>(1, (n + nt - 1) / nt);
      const float* up = L.gate.weight != nullptr ? w.up.data() : nullptr;
      pool_.parallel_for((n + per - 1) / per, nt, [&](std::size_t task, int) {
        const std::size_t r0 = task * per, r1 = std::min(n, r0 + per);
        if (dims_.gelu_tanh)
          kt_.gelu_tanh_mul_f32(r1 - r0, f, w.gate.data() + r0 * f, f, up ? up + r0 * f : nullptr, f);
        else
          kt_.silu_mul_f32(r1 - r0, f, w.gate.data() + r0 * f, f, up + r0 * f, f);
      });
    }
    if (L.post_mlp_norm != nullptr) {
      lin_.run({{&L.down, w.xn.data()}}, H, f, w.gate.data(), f, n, H, threads);
      add_normed(w.xn.data(), L.post_mlp_norm);
    } else {
      lin_.run({{&L.down, w.x.data(), true}}, H, f, w.gate.data(), f, n, H, threads);
    }
  }
  cache.set_length(total);

  // Final norm and the LM head: every row (scoring a text) or only the last (generating).
  const std::size_t rows = all_logits ? n : 1;
  const float* xs = w.x.data() + (all_logits ? 0 : (n - 1) * H);
  norm(xs, final_norm_, final_norm_b_, w.xn.data(), rows);
  const std::size_t scored = head_rows == 0 ? V : head_rows;
  const float cap = dims_.final_softcap;
  if (id_of_row_.empty() && scored == V) {
    lin_.run({{&head_, logits}}, V, H, w.xn.data(), H, rows, V, threads);
    if (cap > 0.f) kt_.softcap_f32(rows, V, logits, V, 1.f, cap);
    return;
  }
  // A prefix of the head's rows (a pointer and a stride, like every slice), then back to token ids.
  w.head.resize(rows * scored);
  lin_.run({{&head_, w.head.data()}}, scored, H, w.xn.data(), H, rows, scored, threads);
  if (cap > 0.f) kt_.softcap_f32(rows, scored, w.head.data(), scored, 1.f, cap);
  for (std::size_t i = 0; i < rows; ++i) {
    float* out = logits + i * V;
    const float* in = w.head.data() + i * scored;
    if (scored < V) std::fill(out, out + V, -INFINITY);
    if (id_of_row_.empty())
      std::copy(in, in + scored, out);
    else
      for (std::size_t r = 0; r < scored; ++r) out[id_of_row_[r]] = in[r];
  }
}

// --- Generation ----------------------------------------------------------------------------------

namespace {
SubnetSpec checked(const Decoder& d, SubnetSpec subnet) {
  d.validate(subnet);
  return subnet;
}
}  // namespace

Generation::Generation(std::shared_ptr<Decoder> decoder, std::vector<std::int32_t> prompt, SubnetSpec subnet,
                       GenerationParams params)
    : decoder_(std::move(decoder)),
      subnet_(checked(*decoder_, std::move(subnet))),
      params_(std::move(params)),
      sampler_(params_.sampling),
      cache_(decoder_->make_cache(subnet_, params_.cache_dtype)),
      history_(std::move(prompt)) {
  const ModelDims& d = decoder_->dims();
  if (history_.empty()) throw std::invalid_argument("the prompt must hold at least one token");
  decoder_->validate_ids(history_.data(), history_.size());
  if (history_.size() >= d.max_positions)
    throw std::invalid_argument("the prompt has " + std::to_string(history_.size()) + " tokens; the model holds " +
                                std::to_string(d.max_positions) + " positions, leaving no room to generate");
  if (params_.max_new_tokens == 0) throw std::invalid_argument("max_new_tokens must be at least 1");
  if (params_.max_new_tokens > d.max_positions - history_.size())
    throw std::invalid_argument("max_new_tokens " + std::to_string(params_.max_new_tokens) + " with a " +
                                std::to_string(history_.size()) + "-token prompt exceeds the model's " +
                                std::to_string(d.max_positions) + " positions");
  for (std::int32_t t : params_.stop_tokens) decoder_->validate_ids(&t, 1);
  if (params_.threads < 1 || params_.threads > 256) throw std::invalid_argument("threads must be between 1 and 256");
  prompt_len_ = history_.size();
  logits_.resize(d.vocab_size);
  if (params_.speculation)
    speculator_ = std::make_unique<Speculator>(*decoder_, subnet_, *params_.speculation, params_.sampling,
                                               params_.cache_dtype);
}

Generation::~Generation() = default;

bool Generation::is_stop(std::int32_t token) const {
  return std::find(params_.stop_tokens.begin(), params_.stop_tokens.end(), token) != params_.stop_tokens.end();
}

void Generation::step() {
  const std::size_t held = cache_.length();
  const std::size_t fresh = history_.size() - held;  // the prompt (or a rolled-back tail), else 1 token
  // Room left: new tokens and positions; a round emits up to k + 1 tokens.
  const std::size_t room = std::min(params_.max_new_tokens - generated_, decoder_->dims().max_positions - history_.size());
  const std::size_t k = speculator_ && held > 0 && fresh == 1 ? speculator_->next_k(room - 1) : 0;
  const auto t0 = std::chrono::steady_clock::now();
  if (k > 0) {
    for (std::int32_t token : speculator_->round(history_, cache_, sampler_, k, params_.threads)) {
      history_.push_back(token);
      pending_.push_back(token);
      if (is_stop(token)) break;  // nothing after a stop token is emitted
    }
    decode_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return;
  }
  decoder_->forward(history_.data() + held, fresh, cache_, subnet_, params_.threads, logits_.data(), false);
  const std::int32_t token = sampler_.sample(logits_.data(), logits_.size(), history_);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (held == 0 ? prefill_s_ : decode_s_) += dt;
  if (held > 0 && speculator_) speculator_->plain_step(dt);
  history_.push_back(token);
  pending_.push_back(token);
}

std::int64_t Generation::next() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (done_) return -1;
  if (pending_.empty()) step();
  const std::int32_t token = pending_.front();
  pending_.pop_front();
  ++generated_;
  done_ = is_stop(token) || generated_ >= params_.max_new_tokens ||
          (pending_.empty() && history_.size() >= decoder_->dims().max_positions);
  if (done_) {  // tokens past the end stay unreturned (a round may have emitted a few beyond a stop)
    history_.resize(history_.size() - pending_.size());
    pending_.clear();
  }
  return token;
}

std::vector<std::int32_t> Generation::tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {history_.begin(), history_.end() - static_cast<std::ptrdiff_t>(pending_.size())};
}

void Generation::rollback(std::size_t position) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::size_t returned = history_.size() - pending_.size();
  if (position < 1 || position > returned)
    throw std::invalid_argument("rollback position " + std::to_string(position) + " must be in 1.." +
                                std::to_string(returned));
  pending_.clear();
  history_.resize(position);
  // The last kept token is recomputed: its logits pick the next token.
  cache_.truncate(std::min(cache_.length(), position - 1));
  if (speculator_) speculator_->rollback(position);
  generated_ = position > prompt_len_ ? position - prompt_len_ : 0;
  done_ = false;
}

}  // namespace mlfs
