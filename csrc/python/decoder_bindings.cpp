// Bindings of the decoder engine and its generation loop: argument checks at the boundary, no logic.
// Compute releases the GIL; C++ std::invalid_argument becomes ValueError (module.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bindings.h"
#include "mlfs/decoder.h"

namespace py = pybind11;

namespace {

using Layers = std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>;

mlfs::SubnetSpec to_spec(const Layers& layers) {
  mlfs::SubnetSpec spec;
  for (const auto& [layer, heads, mlp] : layers) spec.push_back({layer, heads, mlp});
  return spec;
}

// A 1-D int32/int64 array of token ids, checked against the vocabulary, as int32.
std::vector<std::int32_t> token_ids(const mlfs::Decoder& d, const py::array& ids) {
  if (ids.ndim() != 1) throw py::value_error("token ids must be 1-D, got " + std::to_string(ids.ndim()) + "-D");
  if (!(ids.flags() & py::array::c_style)) throw py::value_error("token ids must be C-contiguous");
  const auto n = static_cast<std::size_t>(ids.shape(0));
  std::vector<std::int32_t> out(n);
  if (ids.dtype().is(py::dtype::of<std::int64_t>())) {
    const auto* p = static_cast<const std::int64_t*>(ids.data());
    d.validate_ids(p, n);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::int32_t>(p[i]);
  } else if (ids.dtype().is(py::dtype::of<std::int32_t>())) {
    const auto* p = static_cast<const std::int32_t*>(ids.data());
    d.validate_ids(p, n);
    out.assign(p, p + n);
  } else {
    throw py::type_error("token ids must be int64 or int32, got " + py::str(ids.dtype()).cast<std::string>());
  }
  return out;
}

mlfs::DType cache_dtype(const std::string& name) {
  if (name == "fp32") return mlfs::DType::f32;
  if (name == "fp16") return mlfs::DType::f16;
  throw py::value_error("cache_dtype must be 'fp32' or 'fp16', got '" + name + "'");
}

}  // namespace

void register_decoder(py::module_& m) {
  py::class_<mlfs::Generation, std::shared_ptr<mlfs::Generation>>(m, "Generation",
      "One generation in progress (use mlfs_edge.runtime.Engine.stream / generate).")
      .def("next", &mlfs::Generation::next, py::call_guard<py::gil_scoped_release>(),
           "The next token id, or -1 when finished.")
      .def("rollback", &mlfs::Generation::rollback, py::arg("position"),
           "Forget the tokens at positions >= position; generation continues from there.")
      .def_property_readonly("done", &mlfs::Generation::done)
      .def_property_readonly("tokens", &mlfs::Generation::tokens)
      .def_property_readonly("generated", &mlfs::Generation::generated)
      .def_property_readonly("prompt_tokens", &mlfs::Generation::prompt_tokens)
      .def_property_readonly("prefill_seconds", &mlfs::Generation::prefill_seconds)
      .def_property_readonly("decode_seconds", &mlfs::Generation::decode_seconds)
      .def_property_readonly("cache_bytes", [](const mlfs::Generation& g) { return g.cache().bytes(); })
      .def_property_readonly("cache_length", [](const mlfs::Generation& g) { return g.cache().length(); })
      .def_property_readonly("speculation", [](const mlfs::Generation& g) -> py::object {
        const mlfs::Speculator* s = g.speculator();
        if (s == nullptr) return py::none();
        const mlfs::SpeculationStats& st = s->stats();
        py::dict out;
        out["rounds"] = st.rounds;
        out["drafted"] = st.drafted;
        out["accepted"] = st.accepted;
        out["plain_steps"] = st.plain_steps;
        out["draft_seconds"] = st.draft_seconds;
        out["verify_seconds"] = st.verify_seconds;
        out["shared_cache"] = s->shares_cache();
        out["draft_cache_bytes"] = s->cache_bytes();
        return out;
      }, "Speculation counters (None without a draft).");

  py::class_<mlfs::Decoder, std::shared_ptr<mlfs::Decoder>>(m, "Decoder",
      "The native decoder engine over one memory-mapped .mlfs file (use mlfs_edge.runtime.Engine).")
      .def_static("load", [](const std::string& path, bool verify_checksum) {
        return std::make_shared<mlfs::Decoder>(mlfs::PackedFile::open(path, verify_checksum));
      }, py::arg("path"), py::arg("verify_checksum") = true, py::call_guard<py::gil_scoped_release>())
      .def_static("from_bytes", [](const py::bytes& data, bool verify_checksum) {
        const std::string_view view = data;
        std::vector<std::uint8_t> bytes(view.begin(), view.end());
        return std::make_shared<mlfs::Decoder>(mlfs::PackedFile::from_bytes(std::move(bytes), verify_checksum));
      }, py::arg("data"), py::arg("verify_checksum") = true)
      .def_property_readonly("metadata_json", [](const mlfs::Decoder& d) { return py::bytes(d.file().metadata_json()); })
      .def_property_readonly("file_size", [](const mlfs::Decoder& d) { return d.file().file_size(); })
      .def_property_readonly("checksum", [](const mlfs::Decoder& d) { return d.file().checksum(); })
      .def_property_readonly("path", [](const mlfs::Decoder& d) { return d.file().path(); })
      .def_property_readonly("dtype", [](const mlfs::Decoder& d) { return mlfs::dtype_name(d.dims().weight_dtype); })
      .def_property_readonly("workspace_bytes", &mlfs::Decoder::workspace_bytes)
      .def_property_readonly("dims", [](const mlfs::Decoder& e) {
        const mlfs::ModelDims& d = e.dims();
        py::dict out;
        out["num_layers"] = d.num_layers;
        out["hidden"] = d.hidden;
        out["num_heads"] = d.num_heads;
        out["num_kv_heads"] = d.num_kv_heads;
        out["head_dim"] = d.head_dim;
        out["intermediate"] = d.intermediate;
        out["vocab_size"] = d.vocab_size;
        out["max_positions"] = d.max_positions;
        out["rms_norm_eps"] = d.layer_norm_eps;
        out["rope_theta"] = d.rope_theta;
        out["rope_linear_factor"] = d.rope_linear_factor;
        out["tied_embeddings"] = d.tied_embeddings;
        out["qkv_bias"] = d.qkv_bias;
        return out;
      })
      .def("validate", [](const mlfs::Decoder& d, const Layers& layers) { d.validate(to_spec(layers)); },
           py::arg("layers"))
      .def("logits", [](mlfs::Decoder& d, const py::array& ids, const Layers& layers, int threads,
                        const std::string& cache, std::size_t head_rows) {
        const std::vector<std::int32_t> tok = token_ids(d, ids);
        if (tok.empty()) throw py::value_error("token ids must hold at least one token");
        const mlfs::SubnetSpec spec = to_spec(layers);
        mlfs::KvCache kv = d.make_cache(spec, cache_dtype(cache));
        py::array_t<float, py::array::c_style> out(
            {static_cast<py::ssize_t>(tok.size()), static_cast<py::ssize_t>(d.dims().vocab_size)});
        float* dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          d.forward(tok.data(), tok.size(), kv, spec, threads, dst, true, head_rows);
        }
        return out;
      }, py::arg("ids"), py::arg("layers"), py::arg("threads") = 1, py::arg("cache_dtype") = "fp32",
         py::arg("head_rows") = 0,
         "Logits [n, vocab] of every position of `ids` (one prefill on a fresh cache); head_rows > 0 scores only "
         "the first head_rows rows of the (frequency-ordered) vocabulary, -inf elsewhere.")
      .def_property_readonly("vocab_order", &mlfs::Decoder::vocab_order,
                             "Token id of each LM-head row (most frequent first); empty when in id order.")
      .def("start", [](const std::shared_ptr<mlfs::Decoder>& d, const py::array& prompt, const Layers& layers,
                       std::size_t max_new_tokens, float temperature, std::uint32_t top_k, float top_p,
                       float repetition_penalty, std::uint64_t seed, const std::vector<std::int64_t>& stop_tokens,
                       const std::string& cache, int threads, const std::optional<Layers>& draft, std::size_t draft_k,
                       std::size_t draft_k_max, bool adaptive, std::size_t draft_vocab) {
        mlfs::GenerationParams p;
        if (draft) p.speculation = mlfs::SpeculationParams{to_spec(*draft), draft_k_max, draft_k, adaptive, draft_vocab};
        p.max_new_tokens = max_new_tokens;
        for (std::int64_t t : stop_tokens) {
          if (t < 0 || t >= static_cast<std::int64_t>(d->dims().vocab_size))
            throw py::value_error("stop token " + std::to_string(t) + " is outside the vocabulary");
          p.stop_tokens.push_back(static_cast<std::int32_t>(t));
        }
        p.sampling = {temperature, top_k, top_p, repetition_penalty, seed};
        p.cache_dtype = cache_dtype(cache);
        p.threads = threads;
        return std::make_shared<mlfs::Generation>(d, token_ids(*d, prompt), to_spec(layers), std::move(p));
      }, py::arg("prompt"), py::arg("layers"), py::arg("max_new_tokens"), py::arg("temperature") = 0.f,
         py::arg("top_k") = 0, py::arg("top_p") = 1.f, py::arg("repetition_penalty") = 1.f, py::arg("seed") = 0,
         py::arg("stop_tokens") = std::vector<std::int64_t>{}, py::arg("cache_dtype") = "fp32", py::arg("threads") = 1,
         py::arg("draft") = py::none(), py::arg("draft_k") = 4, py::arg("draft_k_max") = 8, py::arg("adaptive") = true,
         py::arg("draft_vocab") = 0,
         "Validate and start a generation of `prompt` on the sub-network (with `draft`: speculative decoding, "
         "the draft sub-network proposing draft_k tokens per round, adapted up to draft_k_max); call next() for "
         "each token.");
}
