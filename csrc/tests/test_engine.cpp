// The engine end to end on every ISA this CPU runs (x86, or aarch64 under qemu with several
// QEMU_CPU models): a tiny random BERT classifier is written in the .mlfs format (fp32, fp16, int8)
// and each ISA's forward is compared with the scalar kernels' forward, for the full network and a
// sub-network, on a padded batch. Also: the reader rejects a truncated and a corrupted copy.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "mlfs/engine.h"
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

constexpr std::uint32_t L = 2, H = 32, NH = 4, DH = 8, I = 44, V = 50, P = 16, TV = 2, LABELS = 3;

// An encoder file of the tiny BERT with weights stored as `wd`: version 1 (old fp32 / fp16 files
// keep loading), the current version for int8 (its layout changed in version 3).
std::vector<std::uint8_t> encode_encoder(const std::vector<Tensor>& tensors, DType wd) {
  return encode(tensors, [wd](std::vector<std::uint8_t>& buf) {
    put<std::uint32_t>(buf, 8, wd == DType::i8 ? mlfs::kPackFormatVersion : 1);
    put<std::uint64_t>(buf, 48, 0);
    const std::uint32_t dims[11] = {L, H, NH, DH, I, V, P, TV, LABELS, 1 /* cls */, static_cast<std::uint32_t>(wd)};
    for (int i = 0; i < 11; ++i) put<std::uint32_t>(buf, 56 + 4 * i, dims[i]);
    put<float>(buf, 100, 1e-12f);
  });
}

// A Linear W [out, in] in the kernels' layout for `wd` (+ int8 scales), and its bias.
void add_linear(std::vector<Tensor>& ts, std::mt19937& rng, const std::string& name, std::size_t out, std::size_t in,
                DType wd) {
  const std::vector<float> w = randn(rng, out * in, 0.2f);
  if (wd == DType::f32) {
    std::vector<float> kn(in * out);
    mlfs::kernels::pack_kn_f32(out, in, w.data(), in, kn.data());
    ts.push_back(make(name + ".w", DType::f32, {in, out}, kn));
  } else if (wd == DType::f16) {
    std::vector<std::uint16_t> h(w.size()), kn(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) h[i] = mlfs::kernels::f32_to_f16_scalar(w[i]);
    mlfs::kernels::pack_kn_f16(out, in, h.data(), in, kn.data());
    ts.push_back(make(name + ".w", DType::f16, {in, out}, kn));
  } else {
    std::vector<std::int8_t> q(w.size());
    std::vector<float> scale(out);
    for (std::size_t n = 0; n < out; ++n) {
      float amax = 0.f;
      for (std::size_t k = 0; k < in; ++k) amax = std::max(amax, std::fabs(w[n * in + k]));
      scale[n] = amax > 0.f ? amax / 127.f : 1.f;
      for (std::size_t k = 0; k < in; ++k) q[n * in + k] = static_cast<std::int8_t>(std::nearbyint(w[n * in + k] / scale[n]));
    }
    std::vector<std::int8_t> packed(mlfs::kernels::packed_i8_size(out, in));
    mlfs::kernels::pack_p32k4_i8(out, in, q.data(), in, packed.data());
    ts.push_back(make(name + ".w", DType::i8, {mlfs::kernels::packed_n32(out) / 32, mlfs::kernels::packed_i8_ld(in)},
                      packed));
    ts.push_back(make(name + ".w.scale", DType::f32, {out}, scale));
  }
  ts.push_back(make(name + ".b", DType::f32, {out}, randn(rng, out, 0.1f)));
}

std::vector<std::uint8_t> tiny_model(DType wd) {
  std::mt19937 rng(7);
  std::vector<Tensor> ts;
  const std::vector<float> emb = randn(rng, V * H, 0.5f);
  if (wd == DType::f32) {
    ts.push_back(make("emb.word", DType::f32, {V, H}, emb));
  } else if (wd == DType::f16) {
    std::vector<std::uint16_t> h(emb.size());
    for (std::size_t i = 0; i < emb.size(); ++i) h[i] = mlfs::kernels::f32_to_f16_scalar(emb[i]);
    ts.push_back(make("emb.word", DType::f16, {V, H}, h));
  } else {
    std::vector<std::int8_t> q(emb.size());
    std::vector<float> scale(V, 0.5f * 4.f / 127.f);
    for (std::size_t i = 0; i < emb.size(); ++i)
      q[i] = static_cast<std::int8_t>(std::max(-127.f, std::min(127.f, std::nearbyint(emb[i] / scale[0]))));
    ts.push_back(make("emb.word", DType::i8, {V, H}, q));
    ts.push_back(make("emb.word.scale", DType::f32, {V}, scale));
  }
  ts.push_back(make("emb.pos", DType::f32, {P, H}, randn(rng, P * H, 0.3f)));
  ts.push_back(make("emb.type", DType::f32, {TV, H}, randn(rng, TV * H, 0.3f)));
  ts.push_back(make("emb.ln.w", DType::f32, {H}, randn(rng, H, 0.1f, 1.f)));
  ts.push_back(make("emb.ln.b", DType::f32, {H}, randn(rng, H, 0.1f)));
  for (std::uint32_t l = 0; l < L; ++l) {
    const std::string p = "l" + std::to_string(l) + ".";
    for (const char* n : {"q", "k", "v", "o"}) add_linear(ts, rng, p + n, H, H, wd);
    add_linear(ts, rng, p + "ff1", I, H, wd);
    add_linear(ts, rng, p + "ff2", H, I, wd);
    for (const char* n : {"ln1", "ln2"}) {
      ts.push_back(make(p + n + ".w", DType::f32, {H}, randn(rng, H, 0.1f, 1.f)));
      ts.push_back(make(p + n + ".b", DType::f32, {H}, randn(rng, H, 0.1f)));
    }
  }
  add_linear(ts, rng, "pooler", H, H, wd);
  add_linear(ts, rng, "cls", LABELS, H, DType::f32);
  return encode_encoder(ts, wd);
}

// The format v4 encoder options in fp32. modern: ModernBERT's pre-norm layers (no ln1 in layer 0),
// RoPE per layer, a local window `window` on layer 0, GeGLU (ff1g), final LayerNorm, no position or
// token-type tables, the dense + GELU + LayerNorm head; else: BERT with MPNet's relative attention
// bias table and DistilBERT's ReLU pooler.
std::vector<std::uint8_t> tiny_family_model(bool modern, float window) {
  std::mt19937 rng(11);
  std::vector<Tensor> ts;
  auto vec = [&](const std::string& name, std::vector<std::uint64_t> shape, float sd, float mean) {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    ts.push_back(make(name, DType::f32, shape, randn(rng, n, sd, mean)));
  };
  vec("emb.word", {V, H}, 0.5f, 0.f);
  if (!modern) {
    vec("emb.pos", {P, H}, 0.3f, 0.f);
    vec("emb.type", {TV, H}, 0.3f, 0.f);
    vec("attn.relbias", {2 * P - 1, NH}, 0.5f, 0.f);
  } else {
    ts.push_back(make("attn.theta", DType::f32, {L}, std::vector<float>{10000.f, 160000.f}));
    ts.push_back(make("attn.window", DType::f32, {L}, std::vector<float>{window, 0.f}));
    vec("final.ln.w", {H}, 0.1f, 1.f);
    vec("final.ln.b", {H}, 0.1f, 0.f);
    vec("pooler.ln.w", {H}, 0.1f, 1.f);
    vec("pooler.ln.b", {H}, 0.1f, 0.f);
  }
  vec("emb.ln.w", {H}, 0.1f, 1.f);
  vec("emb.ln.b", {H}, 0.1f, 0.f);
  for (std::uint32_t l = 0; l < L; ++l) {
    const std::string p = "l" + std::to_string(l) + ".";
    for (const char* n : {"q", "k", "v", "o"}) add_linear(ts, rng, p + n, H, H, DType::f32);
    add_linear(ts, rng, p + "ff1", I, H, DType::f32);
    if (modern) add_linear(ts, rng, p + "ff1g", I, H, DType::f32);
    add_linear(ts, rng, p + "ff2", H, I, DType::f32);
    for (const char* n : {"ln1", "ln2"}) {
      if (modern && l == 0 && std::string(n) == "ln1") continue;
      vec(p + n + ".w", {H}, 0.1f, 1.f);
      vec(p + n + ".b", {H}, 0.1f, 0.f);
    }
  }
  add_linear(ts, rng, "pooler", H, H, DType::f32);
  add_linear(ts, rng, "cls", LABELS, H, DType::f32);
  // pooler_relu 1024; pre_norm 2048, gated_ffn 4096, pooler_gelu_ln 8192 (mlfs_edge/runtime/format.py)
  const std::uint32_t flags = modern ? 2048u | 4096u | 8192u : 1024u;
  return encode(ts, [flags](std::vector<std::uint8_t>& buf) {
    put<std::uint32_t>(buf, 8, mlfs::kPackFormatVersion);
    const std::uint32_t dims[11] = {L, H, NH, DH, I, V, P, TV, LABELS, 1 /* cls */, 0};
    for (int i = 0; i < 11; ++i) put<std::uint32_t>(buf, 56 + 4 * i, dims[i]);
    put<float>(buf, 100, 1e-5f);
    put<float>(buf, 112, 10000.f);
    put<float>(buf, 116, 1.f);
    put<std::uint32_t>(buf, 120, flags);
  });
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.f;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Every ISA's kernels (1 and 3 threads) give the scalar engine's output on `spec`, within `tol`.
void check_isas_equal_scalar(const std::shared_ptr<mlfs::PackedFile>& file, const std::vector<std::int64_t>& ids,
                             const std::vector<std::int64_t>& mask, std::size_t batch, std::size_t seq,
                             const mlfs::SubnetSpec& spec, float tol, const char* what) {
  using namespace mlfs;
  std::vector<float> want(batch * LABELS), got(batch * LABELS);
  Engine ref(file, kernels::table_for(Isa::scalar));
  ref.run<std::int64_t>(ids.data(), mask.data(), batch, seq, spec, 1, want.data());
  bool finite = true;
  for (float v : want) finite = finite && std::isfinite(v);
  CHECK(finite, "%s: non-finite scalar output", what);
  for (Isa isa : supported_isas()) {
    for (int threads : {1, 3}) {
      Engine engine(file, kernels::table_for(isa));
      engine.run<std::int64_t>(ids.data(), mask.data(), batch, seq, spec, threads, got.data());
      const float diff = max_abs_diff(got, want);
      CHECK(diff <= tol, "%s isa=%s threads=%d layers=%zu: max |diff| %g > %g", what, isa_name(isa), threads,
            spec.size(), diff, tol);
    }
  }
}

}  // namespace

int main() {
  using namespace mlfs;
  const std::size_t batch = 3, seq = 9;
  std::vector<std::int64_t> ids(batch * seq), mask(batch * seq, 1);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i * 7 + 3) % V);
  for (std::size_t s = 5; s < seq; ++s) mask[1 * seq + s] = 0;  // padded rows
  for (std::size_t s = 2; s < seq; ++s) mask[2 * seq + s] = 0;
  const SubnetSpec full = {{0, NH, I}, {1, NH, I}};
  const SubnetSpec sub = {{1, 3, 20}};

  for (DType wd : {DType::f32, DType::f16, DType::i8}) {
    const std::vector<std::uint8_t> bytes = tiny_model(wd);
    auto file = PackedFile::from_bytes(bytes);
    for (const SubnetSpec* spec : {&full, &sub})
      check_isas_equal_scalar(file, ids, mask, batch, seq, *spec, wd == DType::i8 ? 2e-2f : 1e-3f, dtype_name(wd));
    // A truncated and a corrupted copy are rejected with PackedFileError, never a crash.
    for (int variant = 0; variant < 2; ++variant) {
      std::vector<std::uint8_t> bad = bytes;
      if (variant == 0) bad.resize(bad.size() / 2);
      else bad[bad.size() / 2] ^= 0x10;
      bool threw = false;
      try {
        PackedFile::from_bytes(bad);
      } catch (const PackedFileError&) {
        threw = true;
      }
      CHECK(threw, "%s: %s file accepted", dtype_name(wd), variant == 0 ? "truncated" : "corrupted");
    }
  }
  // The v4 encoder options: every ISA equals the scalar kernels; ModernBERT's local window matters.
  for (bool modern : {true, false}) {
    auto file = PackedFile::from_bytes(tiny_family_model(modern, 3.f));
    for (const SubnetSpec* spec : {&full, &sub})
      check_isas_equal_scalar(file, ids, mask, batch, seq, *spec, 1e-3f,
                              modern ? "ModernBERT options" : "MPNet / DistilBERT options");
    if (modern) {
      std::vector<float> local(batch * LABELS), global(batch * LABELS), wide(batch * LABELS);
      Engine(PackedFile::from_bytes(tiny_family_model(true, 3.f))).run<std::int64_t>(ids.data(), mask.data(), batch, seq,
                                                                                      full, 1, local.data());
      Engine(PackedFile::from_bytes(tiny_family_model(true, 0.f))).run<std::int64_t>(ids.data(), mask.data(), batch, seq,
                                                                                      full, 1, global.data());
      Engine(PackedFile::from_bytes(tiny_family_model(true, 64.f))).run<std::int64_t>(ids.data(), mask.data(), batch, seq,
                                                                                       full, 1, wide.data());
      CHECK(max_abs_diff(local, global) > 1e-4f, "local attention window has no effect");
      CHECK(max_abs_diff(wide, global) == 0.f, "a window past the sequence changes the output");
    }
  }
  std::printf("ISAs:");
  for (Isa isa : supported_isas()) std::printf(" %s", isa_name(isa));
  std::printf("\n");
  return mlfs_test::report("test_engine");
}
