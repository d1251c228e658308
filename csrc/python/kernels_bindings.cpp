// Bindings of the raw kernels, for the Python tests that compare every ISA with the reference.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "bindings.h"
#include "mlfs/cpu_features.h"
#include "mlfs/kernels.h"

namespace py = pybind11;

namespace {

mlfs::Isa parse_isa(const std::string& name) {
  for (mlfs::Isa isa : {mlfs::Isa::scalar, mlfs::Isa::avx2, mlfs::Isa::avx512, mlfs::Isa::neon,
                        mlfs::Isa::dotprod, mlfs::Isa::i8mm})
    if (name == mlfs::isa_name(isa)) return isa;
  throw py::value_error("unknown ISA '" + name + "'; use one of supported_isas()");
}

using F32Array = py::array_t<float, py::array::c_style>;

F32Array as_f32_vector(const py::handle& obj, const char* what) {
  // No silent casts: a float64 or int array is a caller bug we report, not convert.
  if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(what) + " must be a numpy array");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(what) + " must have dtype float32, got " +
                         py::str(arr.dtype()).cast<std::string>());
  if (arr.ndim() != 1) throw py::value_error(std::string(what) + " must be 1-D");
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be contiguous (use np.ascontiguousarray)");
  return py::reinterpret_borrow<F32Array>(arr);
}

// A C-contiguous 2-D array of exactly dtype T (numpy float16 is passed as uint16_t bits).
template <typename T>
py::array_t<T, py::array::c_style> as_matrix(const py::handle& obj, const char* what,
                                             const py::dtype& dtype) {
  if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(what) + " must be a numpy array");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(dtype))
    throw py::type_error(std::string(what) + " must have dtype " + py::str(dtype).cast<std::string>() +
                         ", got " + py::str(arr.dtype()).cast<std::string>());
  if (arr.ndim() != 2) throw py::value_error(std::string(what) + " must be 2-D");
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous (use np.ascontiguousarray)");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(arr);
}

py::array pack_weight(const py::handle& w_obj) {
  if (!py::isinstance<py::array>(w_obj)) throw py::type_error("w must be a numpy array");
  const py::dtype dt = py::reinterpret_borrow<py::array>(w_obj).dtype();
  if (dt.is(py::dtype::of<float>())) {
    auto w = as_matrix<float>(w_obj, "w", dt);
    const auto N = static_cast<std::size_t>(w.shape(0)), K = static_cast<std::size_t>(w.shape(1));
    py::array_t<float> out({K, N});
    float* dst = out.mutable_data();
    const float* src = w.data();
    py::gil_scoped_release release;
    mlfs::kernels::pack_kn_f32(N, K, src, K, dst);
    return out;
  }
  if (dt.is(py::dtype("float16"))) {
    auto w = as_matrix<uint16_t>(w_obj, "w", dt);
    const auto N = static_cast<std::size_t>(w.shape(0)), K = static_cast<std::size_t>(w.shape(1));
    py::array out(dt, {K, N});
    auto* dst = static_cast<uint16_t*>(out.mutable_data());
    const uint16_t* src = w.data();
    py::gil_scoped_release release;
    mlfs::kernels::pack_kn_f16(N, K, src, K, dst);
    return out;
  }
  if (dt.is(py::dtype::of<int8_t>())) {
    auto w = as_matrix<int8_t>(w_obj, "w", dt);
    const auto N = static_cast<std::size_t>(w.shape(0)), K = static_cast<std::size_t>(w.shape(1));
    py::array_t<int8_t> out({mlfs::kernels::packed_k4(K) / 4, N * 4});
    int8_t* dst = out.mutable_data();
    const int8_t* src = w.data();
    py::gil_scoped_release release;
    mlfs::kernels::pack_k4n_i8(N, K, src, K, dst);
    return out;
  }
  throw py::type_error("w must have dtype float32, float16 or int8, got " + py::str(dt).cast<std::string>());
}

}  // namespace

void register_kernels(py::module_& m) {
  m.def("pack_weight", &pack_weight, py::arg("w"),
        "Pack a Linear weight W [out, in] into the engine's layout (csrc/include/mlfs/kernels.h):\n"
        "float32/float16 -> W^T [in, out] (\"KN\"); int8 -> [ceil(in/4), out*4] (\"K4N\": groups of\n"
        "4 input channels per output, zero-padded). Prefix slices stay strides in both layouts.");

  m.def("dot_f32", [](const py::handle& a_obj, const py::handle& b_obj, const std::string& isa) {
    F32Array a = as_f32_vector(a_obj, "a");
    F32Array b = as_f32_vector(b_obj, "b");
    if (a.size() != b.size())
      throw py::value_error("a and b must have the same length, got " + std::to_string(a.size()) +
                            " and " + std::to_string(b.size()));
    const auto& table = isa.empty() ? mlfs::kernels::active() : mlfs::kernels::table_for(parse_isa(isa));
    const float* pa = a.data();
    const float* pb = b.data();
    const auto n = static_cast<std::size_t>(a.size());
    py::gil_scoped_release release;
    return table.dot_f32(pa, pb, n);
  }, py::arg("a"), py::arg("b"), py::arg("isa") = "",
     "Dot product of two float32 vectors with the given ISA's kernel (default: the selected one).");
}
