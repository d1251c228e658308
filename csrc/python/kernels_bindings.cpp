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

}  // namespace

void register_kernels(py::module_& m) {
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
