// pybind11 bindings only: argument checking at the boundary, no logic.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

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

PYBIND11_MODULE(_core, m) {
  m.doc() = "mlfs_edge native core: run-time dispatched CPU kernels and the edge inference engine";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("arch", []() {
#if defined(__x86_64__) || defined(_M_X64)
    return "x86_64";
#elif defined(__aarch64__)
    return "aarch64";
#else
    return "generic";
#endif
  }, "Architecture this module was compiled for.");

  m.def("cpu_features", []() {
    py::dict d;
    for (const auto& [name, present] : mlfs::cpu_feature_list()) d[py::str(name)] = present;
    return d;
  }, "CPU features detected at run time (CPUID/XGETBV on x86-64, getauxval on aarch64).");

  m.def("supported_isas", []() {
    py::list out;
    for (mlfs::Isa isa : mlfs::supported_isas()) out.append(mlfs::isa_name(isa));
    return out;
  }, "Kernel ISA levels that can run on this CPU, scalar first.");

  m.def("selected_isa", []() { return std::string(mlfs::isa_name(mlfs::selected_isa())); },
        "ISA the dispatcher uses: the best supported one, or the one forced by MLFS_ISA.");

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
