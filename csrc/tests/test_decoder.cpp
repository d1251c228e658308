// The decoder engine end to end on every ISA this CPU runs (x86, or aarch64 under qemu): a tiny
// random Llama-family decoder (GQA 4 heads / 2 groups, tied head) is written in the .mlfs v2 format
// in fp32, fp16, int8 and q4; each ISA's logits are compared with the scalar kernels' for the full
// network and a per-layer sub-network; decoding token by token over the KV cache equals one
// prefill; rollback regenerates the same tokens; the sampler's steps; bad sub-networks are refused.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "mlfs/decoder.h"
#include "mlfs/kernels.h"
#include "mlfs/packed_file.h"
#include "packed_writer.h"

namespace {

using mlfs::DType;
using mlfs_test::encode;
using mlfs_test::make;
using mlfs_test::put;
using mlfs_test::randn;
using mlfs_test::Tensor;
namespace mk = mlfs::kernels;

constexpr std::uint32_t L = 2, H = 64, NH = 4, NKV = 2, DH = 16, I = 96, V = 40, P = 64;

// A decoder file (GQA, tied head) with weights stored as `wd`: version 2 where that layout is
// unchanged since (old files keep loading), else the current version.
std::uint32_t file_version(DType wd) {
  return wd == DType::i8 || wd == DType::q4 ? mlfs::kPackFormatVersion : 2;
}
std::vector<std::uint8_t> encode_decoder(const std::vector<Tensor>& tensors, DType wd, std::uint32_t version) {
  return encode(tensors, [wd, version](std::vector<std::uint8_t>& buf) {
    put<std::uint32_t>(buf, 8, version);
    const std::uint32_t dims[11] = {L, H, NH, DH, I, V, P, 1, 0, 0, static_cast<std::uint32_t>(wd)};
    for (int i = 0; i < 11; ++i) put<std::uint32_t>(buf, 56 + 4 * i, dims[i]);
    put<float>(buf, 100, 1e-5f);
    put<std::uint32_t>(buf, 104, 1);  // decoder
    put<std::uint32_t>(buf, 108, NKV);
    put<float>(buf, 112, 10000.f);
    put<float>(buf, 116, 1.f);
    put<std::uint32_t>(buf, 120, 1);  // tied embeddings
  });
}

// A Linear W [out, in] in the kernels' layout for `wd` (+ scales).
void add_linear(std::vector<Tensor>& ts, std::mt19937& rng, const std::string& name, std::size_t out, std::size_t in,
                DType wd) {
  const std::vector<float> w = randn(rng, out * in, 0.3f);
  if (wd == DType::f32) {
    std::vector<float> kn(in * out);
    mk::pack_kn_f32(out, in, w.data(), in, kn.data());
    ts.push_back(make(name + ".w", DType::f32, {in, out}, kn));
  } else if (wd == DType::f16) {
    std::vector<std::uint16_t> h(w.size()), kn(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) h[i] = mk::f32_to_f16_scalar(w[i]);
    mk::pack_kn_f16(out, in, h.data(), in, kn.data());
    ts.push_back(make(name + ".w", DType::f16, {in, out}, kn));
  } else if (wd == DType::i8) {
    std::vector<std::int8_t> q(w.size()), packed(mk::packed_i8_size(out, in));
    std::vector<float> scale(out);
    for (std::size_t n = 0; n < out; ++n) {
      float amax = 0.f;
      for (std::size_t k = 0; k < in; ++k) amax = std::max(amax, std::fabs(w[n * in + k]));
      scale[n] = amax > 0.f ? amax / 127.f : 1.f;
      for (std::size_t k = 0; k < in; ++k) q[n * in + k] = static_cast<std::int8_t>(std::nearbyint(w[n * in + k] / scale[n]));
    }
    mk::pack_p32k4_i8(out, in, q.data(), in, packed.data());
    ts.push_back(make(name + ".w", DType::i8, {mk::packed_n32(out) / mk::kI8Panel, mk::packed_i8_ld(in)}, packed));
    ts.push_back(make(name + ".w.scale", DType::f32, {out}, scale));
  } else {
    const std::size_t groups = in / mk::kQ4Group;
    std::vector<std::uint8_t> q(w.size());
    std::vector<std::uint16_t> scale(groups * out), mins(groups * out);
    for (std::size_t n = 0; n < out; ++n)
      for (std::size_t g = 0; g < groups; ++g) {
        float lo = w[n * in + g * 32], hi = lo;
        for (std::size_t k = g * 32; k < g * 32 + 32; ++k) lo = std::min(lo, w[n * in + k]), hi = std::max(hi, w[n * in + k]);
        const std::uint16_t dh = mk::f32_to_f16_scalar(hi > lo ? (hi - lo) / 15.f : 1.f);
        const std::uint16_t lh = mk::f32_to_f16_scalar(lo);
        const float d = mk::f16_to_f32_scalar(dh), l = mk::f16_to_f32_scalar(lh);
        scale[g * out + n] = dh;
        mins[g * out + n] = lh;
        for (std::size_t k = g * 32; k < g * 32 + 32; ++k)
          q[n * in + k] = static_cast<std::uint8_t>(std::fmax(0.f, std::fmin(15.f, std::nearbyint((w[n * in + k] - l) / d))));
      }
    std::vector<std::uint8_t> packed(mk::packed_q4_size(out, in));
    mk::pack_q4_panels(out, in, q.data(), in, scale.data(), mins.data(), out, packed.data());
    ts.push_back(make(name + ".w", DType::q4, {mk::packed_q4_panels(out), mk::packed_q4_ld(in)}, packed));
  }
}

std::shared_ptr<const mlfs::PackedFile> tiny_decoder(DType wd, std::uint32_t version = 0) {
  std::mt19937 rng(42);
  std::vector<Tensor> ts;
  add_linear(ts, rng, "head", V, H, wd);
  ts.push_back(make("norm.w", DType::f32, {H}, randn(rng, H, 0.1f, 1.f)));
  for (std::uint32_t l = 0; l < L; ++l) {
    const std::string p = "l" + std::to_string(l) + ".";
    add_linear(ts, rng, p + "q", NH * DH, H, wd);
    add_linear(ts, rng, p + "k", NKV * DH, H, wd);
    add_linear(ts, rng, p + "v", NKV * DH, H, wd);
    add_linear(ts, rng, p + "o", H, NH * DH, wd);
    add_linear(ts, rng, p + "gate", I, H, wd);
    add_linear(ts, rng, p + "up", I, H, wd);
    add_linear(ts, rng, p + "down", H, I, wd);
    ts.push_back(make(p + "attn_norm.w", DType::f32, {H}, randn(rng, H, 0.1f, 1.f)));
    ts.push_back(make(p + "mlp_norm.w", DType::f32, {H}, randn(rng, H, 0.1f, 1.f)));
  }
  return mlfs::PackedFile::from_bytes(encode_decoder(ts, wd, version ? version : file_version(wd)));
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.0, scale = 0.0;
  for (float v : b) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
  return worst / std::max(scale, 1e-30);
}

const std::vector<std::int32_t> kTokens = {1, 7, 3, 39, 0, 12, 12, 5, 30, 8, 2, 17};

std::vector<float> logits(mlfs::Decoder& d, const mlfs::SubnetSpec& s, int threads, DType cache = DType::f32) {
  mlfs::KvCache kv = d.make_cache(s, cache);
  std::vector<float> out(kTokens.size() * V);
  d.forward(kTokens.data(), kTokens.size(), kv, s, threads, out.data(), true);
  return out;
}

void test_isas_and_incremental() {
  const mlfs::SubnetSpec full = {{0, NH, I}, {1, NH, I}};
  const mlfs::SubnetSpec sub = {{1, 2, 64}};  // one layer, one key/value group, MLP 64 (a multiple of 32)
  for (DType wd : {DType::f32, DType::f16, DType::i8, DType::q4}) {
    auto file = tiny_decoder(wd);
    const bool int8_acts = wd == DType::i8 || wd == DType::q4;
    mlfs::Decoder ref(file, mk::table_for(mlfs::Isa::scalar));
    for (const auto* spec : {&full, &sub}) {
      const std::vector<float> want = logits(ref, *spec, 1);
      for (mlfs::Isa isa : mlfs::supported_isas()) {
        mlfs::Decoder d(file, mk::table_for(isa));
        for (int threads : {1, 3}) {
          const double err = max_rel(logits(d, *spec, threads), want);
          // int8: activations quantised per token can round one step apart after fp32 reordering
          // (q4 quantises activations per block of 32 the same way)
          CHECK(err <= (int8_acts ? 2e-3 : 1e-4), "decoder %s isa=%s layers=%zu threads=%d err=%g",
                mlfs::dtype_name(wd), mlfs::isa_name(isa), spec->size(), threads, err);
        }
        // decoding token by token over the cache = one prefill of everything
        mlfs::KvCache kv = d.make_cache(*spec);
        std::vector<float> step(V);
        d.forward(kTokens.data(), 5, kv, *spec, 2, step.data(), false);
        for (std::size_t t = 5; t < kTokens.size(); ++t) d.forward(&kTokens[t], 1, kv, *spec, 2, step.data(), false);
        const std::vector<float> last(want.end() - V, want.end());
        CHECK(max_rel(step, last) <= (int8_acts ? 2e-3 : 1e-4), "incremental decode %s isa=%s err=%g",
              mlfs::dtype_name(wd), mlfs::isa_name(isa), max_rel(step, last));
        CHECK(kv.length() == kTokens.size(), "cache length %zu", kv.length());
      }
      // fp16 cache close to fp32 (int8: a rounded key can move a per-token activation scale, loosely)
      const double e16 = max_rel(logits(ref, *spec, 1, DType::f16), want);
      CHECK(e16 <= (int8_acts ? 5e-2 : 2e-3), "fp16 cache %s err=%g", mlfs::dtype_name(wd), e16);
    }
  }
}

// The format v4 family options (flags at offset 120, floats from 124; mlfs_edge/runtime/format.py):
// a GPT-2-like file (LayerNorm + biases, learned positions, ungated GELU-tanh MLP, every Linear
// biased) and a Gemma-2 / Qwen3-like one (q/k norms, post-norms, GeGLU, soft-caps, attention and
// embedding scales, a sliding window on layer 0). Every ISA equals the scalar kernels, decoding token
// by token equals one prefill (the window and the soft-caps on the cached path), and a window
// shorter than the prompt changes the logits.
std::shared_ptr<const mlfs::PackedFile> family_decoder(bool gpt2, float window) {
  std::mt19937 rng(7);
  std::vector<Tensor> ts;
  add_linear(ts, rng, "head", V, H, DType::f32);
  auto vec = [&](const std::string& name, std::size_t n, float mean) {
    ts.push_back(make(name, DType::f32, {n}, randn(rng, n, 0.1f, mean)));
  };
  vec("norm.w", H, 1.f);
  if (gpt2) {
    vec("norm.b", H, 0.f);
    ts.push_back(make("emb.pos", DType::f32, {P, H}, randn(rng, P * H, 0.3f)));
  } else {
    ts.push_back(make("attn.window", DType::f32, {L}, std::vector<float>{window, 0.f}));
  }
  for (std::uint32_t l = 0; l < L; ++l) {
    const std::string p = "l" + std::to_string(l) + ".";
    for (const char* n : {"q", "k", "v", "o", "gate", "up", "down"}) {
      const std::string name = n;
      if (gpt2 && name == "gate") continue;
      const std::size_t out = name == "q" ? NH * DH : name == "k" || name == "v" ? NKV * DH
                              : name == "o" || name == "down" ? H : I;
      const std::size_t in = name == "o" ? NH * DH : name == "down" ? I : H;
      add_linear(ts, rng, p + name, out, in, DType::f32);
      if (gpt2) vec(p + name + ".b", out, 0.f);
    }
    vec(p + "attn_norm.w", H, 1.f);
    vec(p + "mlp_norm.w", H, 1.f);
    if (gpt2) {
      vec(p + "attn_norm.b", H, 0.f);
      vec(p + "mlp_norm.b", H, 0.f);
    } else {
      vec(p + "q_norm.w", DH, 1.f);
      vec(p + "k_norm.w", DH, 1.f);
      vec(p + "post_attn_norm.w", H, 1.f);
      vec(p + "post_mlp_norm.w", H, 1.f);
    }
  }
  // layer_norm 8, gelu_tanh 16, ungated 32, linear_bias 64, qk_norm 128, post_norms 256, learned_pos 512
  const std::uint32_t flags = 1u | 16u | (gpt2 ? 8u | 32u | 64u | 512u : 128u | 256u);
  return mlfs::PackedFile::from_bytes(encode(ts, [flags, gpt2](std::vector<std::uint8_t>& buf) {
    put<std::uint32_t>(buf, 8, mlfs::kPackFormatVersion);
    const std::uint32_t dims[11] = {L, H, NH, DH, I, V, P, 1, 0, 0, 0};
    for (int i = 0; i < 11; ++i) put<std::uint32_t>(buf, 56 + 4 * i, dims[i]);
    put<float>(buf, 100, 1e-5f);
    put<std::uint32_t>(buf, 104, 1);
    put<std::uint32_t>(buf, 108, NKV);
    put<float>(buf, 112, 10000.f);
    put<float>(buf, 116, 1.f);
    put<std::uint32_t>(buf, 120, flags);
    if (!gpt2) {
      const float options[4] = {0.2f, 3.f, 2.f, 8.f};  // attn scale, attn softcap, final softcap, embed scale
      for (int i = 0; i < 4; ++i) put<float>(buf, 124 + 4 * i, options[i]);
    }
  }));
}

void test_family_options() {
  const mlfs::SubnetSpec full = {{0, NH, I}, {1, NH, I}};
  const mlfs::SubnetSpec sub = {{0, 2, 40}};
  for (bool gpt2 : {true, false}) {
    auto file = family_decoder(gpt2, 4.f);
    mlfs::Decoder ref(file, mk::table_for(mlfs::Isa::scalar));
    for (const auto* spec : {&full, &sub}) {
      const std::vector<float> want = logits(ref, *spec, 1);
      bool finite = true;
      for (float v : want) finite = finite && std::isfinite(v);
      CHECK(finite, "family options gpt2=%d: logits not finite", gpt2);
      for (mlfs::Isa isa : mlfs::supported_isas()) {
        mlfs::Decoder d(file, mk::table_for(isa));
        CHECK(max_rel(logits(d, *spec, 2), want) <= 1e-4, "family options gpt2=%d isa=%s err=%g", gpt2,
              mlfs::isa_name(isa), max_rel(logits(d, *spec, 2), want));
        mlfs::KvCache kv = d.make_cache(*spec);
        std::vector<float> step(V);
        d.forward(kTokens.data(), 3, kv, *spec, 1, step.data(), false);
        for (std::size_t t = 3; t < kTokens.size(); ++t) d.forward(&kTokens[t], 1, kv, *spec, 1, step.data(), false);
        const std::vector<float> last(want.end() - V, want.end());
        CHECK(max_rel(step, last) <= 1e-4, "family options incremental gpt2=%d isa=%s err=%g", gpt2,
              mlfs::isa_name(isa), max_rel(step, last));
      }
    }
    if (!gpt2) {  // the window (4 < 12 prompt tokens) matters; a window as long as the prompt does not
      mlfs::Decoder wide(family_decoder(false, 64.f), mk::table_for(mlfs::Isa::scalar));
      mlfs::Decoder none(family_decoder(false, 0.f), mk::table_for(mlfs::Isa::scalar));
      CHECK(max_rel(logits(ref, full, 1), logits(none, full, 1)) > 1e-3, "sliding window has no effect");
      CHECK(max_rel(logits(wide, full, 1), logits(none, full, 1)) == 0.0, "a window past the prompt changes logits");
    }
  }
}

void test_generation_and_rollback() {
  auto d = std::make_shared<mlfs::Decoder>(tiny_decoder(DType::f32));
  const mlfs::SubnetSpec full = {{0, NH, I}, {1, NH, I}};
  mlfs::GenerationParams params;
  params.max_new_tokens = 10;
  mlfs::Generation g(d, {1, 2, 3}, full, params);
  std::vector<std::int64_t> first;
  for (std::int64_t t; (t = g.next()) >= 0;) first.push_back(t);
  CHECK(first.size() == 10 && g.done(), "generated %zu", first.size());
  g.rollback(3 + 4);
  std::vector<std::int64_t> again(first.begin(), first.begin() + 4);
  for (std::int64_t t; (t = g.next()) >= 0;) again.push_back(t);
  CHECK(again == first, "rollback regenerates the same greedy tokens");
  // a stop token ends generation and is emitted
  params.stop_tokens = {static_cast<std::int32_t>(first[2])};
  mlfs::Generation s(d, {1, 2, 3}, full, params);
  std::vector<std::int64_t> out;
  for (std::int64_t t; (t = s.next()) >= 0;) out.push_back(t);
  CHECK(!out.empty() && out.back() == first[2] && out.size() <= 3, "stop token: %zu tokens", out.size());
  // bad input is an exception, not a crash
  auto throws = [&](auto fn) {
    try {
      fn();
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  params.stop_tokens.clear();
  CHECK(throws([&] { mlfs::Generation(d, {}, full, params); }), "empty prompt");
  CHECK(throws([&] { mlfs::Generation(d, {1, V}, full, params); }), "id outside the vocabulary");
  CHECK(throws([&] { mlfs::Generation(d, std::vector<std::int32_t>(P, 1), full, params); }), "prompt too long");
  params.max_new_tokens = 0;
  CHECK(throws([&] { mlfs::Generation(d, {1}, full, params); }), "max_new_tokens 0");
  params.max_new_tokens = 1u << 30;
  CHECK(throws([&] { mlfs::Generation(d, {1}, full, params); }), "max_new_tokens huge");
  CHECK(throws([&] { d->validate({{0, 3, I}}); }), "heads not a whole number of groups");
  auto q4 = std::make_shared<mlfs::Decoder>(tiny_decoder(DType::q4));
  CHECK(throws([&] { q4->validate({{0, NH, 48}}); }), "q4 width not a multiple of 32");
  // A version-2 file's int8 weights are in the old "K4N" layout: refused with a one-line re-pack hint.
  std::string why;
  try {
    tiny_decoder(DType::i8, 2);
  } catch (const mlfs::PackedFileError& e) {
    why = e.what();
  }
  CHECK(why.find("re-pack") != std::string::npos && why.find('\n') == std::string::npos, "old int8 file: '%s'",
        why.c_str());
}

// Format version 3 changed the q4 layout: a version-2 file with q4 tensors is refused with a
// one-line "re-pack" message; a version-2 file without them still loads.
void test_old_q4_file() {
  std::string msg;
  try {
    tiny_decoder(DType::q4, 2);
  } catch (const mlfs::PackedFileError& e) {
    msg = e.what();
  }
  CHECK(msg.find("older layout; re-pack the model with `mlfs-edge pack`") != std::string::npos &&
            msg.find('\n') == std::string::npos,
        "v2 q4 file: '%s'", msg.c_str());
  auto old = tiny_decoder(DType::f32, 2);
  mlfs::Decoder d(old, mk::active());
  CHECK(logits(d, {{0, NH, I}}, 1).size() == kTokens.size() * V, "a v2 fp32 decoder still runs");
}

void test_kv_cache_chunks() {
  mlfs::KvCache kv({32, 16}, DType::f32, 1000, 64);
  CHECK(kv.bytes() == 0, "nothing allocated up front");
  kv.reserve(10);
  const std::size_t one = kv.bytes();
  CHECK(one == 64 * (2 * 32 + 2 * 16) * 4, "one chunk: %zu bytes", one);
  kv.reserve(130);
  CHECK(kv.bytes() == 3 * one, "three chunks");
  kv.set_length(130);
  kv.truncate(20);
  CHECK(kv.length() == 20 && kv.bytes() == one, "rollback frees the chunks past it");
  bool threw = false;
  try {
    kv.reserve(1001);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "past max positions");
}

void test_sampler() {
  std::vector<float> logits = {0.1f, 2.f, 2.f, -1.f, 1.9f};
  std::vector<std::int32_t> history;
  mlfs::Sampler greedy(mlfs::SamplingParams{});
  CHECK(greedy.sample(logits.data(), logits.size(), history) == 1, "greedy: the first of equal maxima");
  mlfs::SamplingParams k1;
  k1.temperature = 1.f;
  k1.top_k = 1;
  mlfs::Sampler topk(k1);
  CHECK(topk.sample(logits.data(), logits.size(), history) == 1, "top-k 1 is greedy");
  mlfs::SamplingParams p;
  p.temperature = 1.f;
  p.top_p = 0.01f;
  mlfs::Sampler topp(p);
  CHECK(topp.sample(logits.data(), logits.size(), history) == 1, "tiny top-p keeps the best");
  mlfs::SamplingParams r;
  r.repetition_penalty = 4.f;
  mlfs::Sampler pen(r);
  history = {1, 2};
  CHECK(pen.sample(logits.data(), logits.size(), history) == 4, "penalised tokens lose");
  mlfs::SamplingParams t;
  t.temperature = 2.f;
  t.seed = 7;
  mlfs::Sampler a(t), b(t);
  std::vector<std::int32_t> sa, sb;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(a.sample(logits.data(), logits.size(), history));
    sb.push_back(b.sample(logits.data(), logits.size(), history));
  }
  CHECK(sa == sb, "same seed, same draws");
  CHECK(std::set<std::int32_t>(sa.begin(), sa.end()).size() > 1, "sampling explores");
}

// Greedy speculative decoding emits exactly plain decoding's tokens, for a depth-prefix draft (shares
// the target's cache), a narrower one (its own cache) and the target itself, fixed or adaptive k;
// sampled speculation runs to the end (its distribution is tested in tests/test_speculative.py).
// Also run under ASan/UBSan (make test-native-asan).
void test_speculative() {
  auto d = std::make_shared<mlfs::Decoder>(tiny_decoder(DType::f32));
  const mlfs::SubnetSpec full = {{0, NH, I}, {1, NH, I}};
  mlfs::GenerationParams params;
  params.max_new_tokens = 40;
  auto run = [&](const mlfs::GenerationParams& p) {
    mlfs::Generation g(d, {1, 2, 3}, full, p);
    std::vector<std::int64_t> out;
    for (std::int64_t t; (t = g.next()) >= 0;) out.push_back(t);
    return out;
  };
  const std::vector<std::int64_t> plain = run(params);
  const mlfs::SubnetSpec drafts[] = {{{0, NH, I}}, {{0, 2, 64}, {1, 2, 32}}, full};
  for (const auto& draft : drafts)
    for (std::size_t k : {1, 3, 8})
      for (bool adaptive : {false, true}) {
        mlfs::GenerationParams p = params;
        p.speculation = mlfs::SpeculationParams{draft, 8, k, adaptive};
        CHECK(run(p) == plain, "speculative greedy != plain (draft layers=%zu k=%zu adaptive=%d)", draft.size(), k,
              static_cast<int>(adaptive));
      }
  mlfs::GenerationParams p = params;
  p.speculation = mlfs::SpeculationParams{{{0, NH, I}}, 8, 4, false};
  mlfs::Generation g(d, {1, 2, 3}, full, p);
  while (g.next() >= 0) {
  }
  CHECK(g.speculator()->shares_cache() && g.speculator()->stats().rounds > 0, "depth-prefix draft shares the cache");
  p.sampling.temperature = 0.9f;
  p.sampling.top_k = 5;
  p.sampling.seed = 11;
  const std::vector<std::int64_t> sampled = run(p);
  CHECK(sampled.size() == params.max_new_tokens, "sampled speculation: %zu tokens", sampled.size());
  p.speculation->draft = {{0, 3, I}};  // heads not a whole number of key/value groups
  bool threw = false;
  try {
    run(p);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw, "a draft that does not fit is an invalid_argument");
}

}  // namespace

int main() {
  test_isas_and_incremental();
  test_family_options();
  test_generation_and_rollback();
  test_speculative();
  test_kv_cache_chunks();
  test_sampler();
  test_old_q4_file();
  return mlfs_test::report("test_decoder");
}
