// pybind11 bindings only: argument checking at the boundary, no logic.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "mlfs/cpu_features.h"
#include "bindings.h"

namespace py = pybind11;


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
  }, "CPU features detected at run time (CPUID/XGETBV on x86-64, getauxval on aarch64 Linux, sysctl on macOS).");

  m.def("supported_isas", []() {
    py::list out;
    for (mlfs::Isa isa : mlfs::supported_isas()) out.append(mlfs::isa_name(isa));
    return out;
  }, "Kernel ISA levels that can run on this CPU, scalar first.");

  m.def("selected_isa", []() { return std::string(mlfs::isa_name(mlfs::selected_isa())); },
        "ISA the dispatcher uses: the best supported one, or the one forced by MLFS_ISA.");

  register_kernels(m);
  register_engine(m);
  register_decoder(m);
}
