// Bindings of the packed-file reader and the engine: numpy checks at the boundary, no logic.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "bindings.h"
#include "mlfs/budget.h"
#include "mlfs/engine.h"
#include "mlfs/packed_file.h"

namespace py = pybind11;

namespace {

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

void check_2d_contiguous(const py::array& a, const char* what) {
  if (a.ndim() != 2)
    throw py::value_error(std::string(what) + " must be 2-D [batch, seq], got " + std::to_string(a.ndim()) + "-D");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous (use np.ascontiguousarray)");
}

mlfs::SubnetSpec to_spec(const std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>& layers) {
  mlfs::SubnetSpec spec;
  for (const auto& [layer, heads, mlp] : layers) spec.push_back({layer, heads, mlp});
  return spec;
}

std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>> from_spec(const mlfs::SubnetSpec& spec) {
  std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>> out;
  for (const mlfs::LayerSlice& s : spec) out.emplace_back(s.layer, s.heads, s.mlp);
  return out;
}

template <typename Index>
void run_typed(mlfs::Engine& e, const py::array& ids, const py::array& mask, const mlfs::SubnetSpec& spec,
               int threads, float* out) {
  const auto* pi = static_cast<const Index*>(ids.data());
  const auto* pm = static_cast<const Index*>(mask.data());
  const auto batch = static_cast<std::size_t>(ids.shape(0)), seq = static_cast<std::size_t>(ids.shape(1));
  py::gil_scoped_release release;
  e.run<Index>(pi, pm, batch, seq, spec, threads, out);
}

}  // namespace

void register_engine(py::module_& m) {
  static py::exception<mlfs::PackedFileError> packed_file_error(m, "PackedFileError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const mlfs::PackedFileError& e) {
      py::set_error(packed_file_error, e.what());
    }
  });

  py::class_<mlfs::Engine, std::shared_ptr<mlfs::Engine>>(m, "Engine",
      "The native encoder engine over one memory-mapped .mlfs file (use mlfs_edge.runtime.Engine).")
      .def_static("load", [](const std::string& path, bool verify_checksum) {
        return std::make_shared<mlfs::Engine>(mlfs::PackedFile::open(path, verify_checksum));
      }, py::arg("path"), py::arg("verify_checksum") = true, py::call_guard<py::gil_scoped_release>(),
         "mmap and validate a packed file; raises PackedFileError naming what is wrong.")
      .def_static("from_bytes", [](const py::bytes& data, bool verify_checksum) {
        const std::string_view view = data;
        std::vector<std::uint8_t> bytes(view.begin(), view.end());
        return std::make_shared<mlfs::Engine>(mlfs::PackedFile::from_bytes(std::move(bytes), verify_checksum));
      }, py::arg("data"), py::arg("verify_checksum") = true,
         "Validate and load a packed file held in memory (same checks as load).")
      // bytes, not str: the file's metadata is only *meant* to be UTF-8 JSON; Python decodes and checks it.
      .def_property_readonly("metadata_json", [](const mlfs::Engine& e) { return py::bytes(e.file().metadata_json()); })
      .def_property_readonly("file_size", [](const mlfs::Engine& e) { return e.file().file_size(); })
      .def_property_readonly("checksum", [](const mlfs::Engine& e) { return e.file().checksum(); })
      .def_property_readonly("path", [](const mlfs::Engine& e) { return e.file().path(); })
      .def_property_readonly("dtype", [](const mlfs::Engine& e) { return mlfs::dtype_name(e.dims().weight_dtype); })
      .def_property_readonly("output_dim", &mlfs::Engine::output_dim)
      .def_property_readonly("has_lora", &mlfs::Engine::has_lora)
      .def_property_readonly("workspace_bytes", &mlfs::Engine::workspace_bytes)
      .def_property_readonly("dims", [](const mlfs::Engine& e) {
        const mlfs::ModelDims& d = e.dims();
        py::dict out;
        out["num_layers"] = d.num_layers;
        out["hidden"] = d.hidden;
        out["num_heads"] = d.num_heads;
        out["head_dim"] = d.head_dim;
        out["intermediate"] = d.intermediate;
        out["vocab_size"] = d.vocab_size;
        out["max_positions"] = d.max_positions;
        out["type_vocab_size"] = d.type_vocab_size;
        out["num_labels"] = d.num_labels;
        out["pooling"] = mlfs::pooling_name(d.pooling);
        out["normalize"] = d.normalize;
        out["layer_norm_eps"] = d.layer_norm_eps;
        return out;
      })
      .def("run", [](mlfs::Engine& e, const py::array& ids, const py::array& mask,
                     const std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>& layers, int threads,
                     const py::object& out_obj) {
        check_2d_contiguous(ids, "input_ids");
        check_2d_contiguous(mask, "attention_mask");
        if (ids.shape(0) != mask.shape(0) || ids.shape(1) != mask.shape(1))
          throw py::value_error("attention_mask must have the shape of input_ids");
        const bool i64 = ids.dtype().is(py::dtype::of<std::int64_t>());
        const bool i32 = ids.dtype().is(py::dtype::of<std::int32_t>());
        if (!i64 && !i32)
          throw py::type_error("input_ids must be int64 or int32, got " + dtype_str(ids));
        if (!mask.dtype().is(ids.dtype()))
          throw py::type_error("attention_mask must have the dtype of input_ids (" + dtype_str(ids) + "), got " +
                               dtype_str(mask));
        const auto rows = static_cast<py::ssize_t>(ids.shape(0)), cols = static_cast<py::ssize_t>(e.output_dim());
        py::array_t<float, py::array::c_style> out;
        if (out_obj.is_none()) {
          out = py::array_t<float, py::array::c_style>({rows, cols});
        } else {
          if (!py::isinstance<py::array>(out_obj)) throw py::type_error("out must be a numpy array");
          auto arr = py::reinterpret_borrow<py::array>(out_obj);
          if (!arr.dtype().is(py::dtype::of<float>())) throw py::type_error("out must be float32, got " + dtype_str(arr));
          if (arr.ndim() != 2 || arr.shape(0) != rows || arr.shape(1) != cols)
            throw py::value_error("out must have shape (" + std::to_string(rows) + ", " + std::to_string(cols) + ")");
          if (!(arr.flags() & py::array::c_style) || !arr.writeable())
            throw py::value_error("out must be a writeable C-contiguous array");
          out = py::reinterpret_borrow<py::array_t<float, py::array::c_style>>(arr);
        }
        const mlfs::SubnetSpec spec = to_spec(layers);
        float* dst = out.mutable_data();
        if (i64) run_typed<std::int64_t>(e, ids, mask, spec, threads, dst);
        else run_typed<std::int32_t>(e, ids, mask, spec, threads, dst);
        return out;
      }, py::arg("input_ids"), py::arg("attention_mask"), py::arg("layers"), py::arg("threads") = 1,
         py::arg("out") = py::none(),
         "Run the sub-network given as [(layer, heads, mlp), ...]; returns float32 [batch, output_dim].")
      .def("default_candidates", [](const mlfs::Engine& e) {
        std::vector<std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>> out;
        for (const mlfs::SubnetSpec& spec : mlfs::default_candidates(e.dims())) out.push_back(from_spec(spec));
        return out;
      }, "The native default search space (mlfs/budget.h), smallest first, each as [(layer, heads, mlp), ...].")
      .def("layer_params", [](const mlfs::Engine& e,
                              const std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t>>& layers) {
        return mlfs::layer_params(e.dims(), to_spec(layers));
      }, py::arg("layers"), "Parameters of the sub-network's kept layers, as the native budget picker counts them.");

  m.def("pick_under_budget", &mlfs::pick_under_budget, py::arg("scores"), py::arg("latency_ms"), py::arg("budget_ms"),
        "Index of the highest-scoring candidate with latency <= budget_ms (ties: the faster, then the first); "
        "-1 when none fits.");
  m.def("layers_for_depth", &mlfs::layers_for_depth, py::arg("num_layers"), py::arg("depth"),
        "The layers a 'spread' sub-network of `depth` layers keeps (native twin of config.layers_for_depth).");
}
