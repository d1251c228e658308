// Bindings of the raw kernels (tests and the pack writer): numpy in, numpy out, exact dtypes and
// shapes checked here with TypeError / ValueError, the GIL released while a kernel runs. Every
// kernel takes `isa` ("" = the dispatcher's choice) so the tests can compare each level.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // std::optional arguments

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "mlfs/cpu_features.h"
#include "mlfs/kernels.h"

namespace py = pybind11;
namespace mk = mlfs::kernels;

namespace {

const mk::KernelTable& table_named(const std::string& name) {
  if (name.empty()) return mk::active();
  for (mlfs::Isa isa : {mlfs::Isa::scalar, mlfs::Isa::avx2, mlfs::Isa::avx512, mlfs::Isa::neon,
                        mlfs::Isa::dotprod, mlfs::Isa::i8mm})
    if (name == mlfs::isa_name(isa)) return mk::table_for(isa);  // ValueError if it cannot run here
  throw py::value_error("unknown ISA '" + name + "'; use one of supported_isas()");
}

std::string dtype_name(const py::dtype& dt) { return py::str(dt).cast<std::string>(); }

// `obj` as a C-contiguous array of exactly `dtype` with `ndim` dimensions. No silent casts: a
// float64 or non-contiguous array is a caller bug we report, not convert. (T is the C++ element
// type; numpy float16 arrives as its uint16_t bits.)
template <typename T>
py::array_t<T, py::array::c_style> checked(const py::handle& obj, const char* what, const py::dtype& dtype,
                                           py::ssize_t ndim) {
  if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(what) + " must be a numpy array");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(dtype))
    throw py::type_error(std::string(what) + " must have dtype " + dtype_name(dtype) + ", got " +
                         dtype_name(arr.dtype()));
  if (arr.ndim() != ndim)
    throw py::value_error(std::string(what) + " must be " + std::to_string(ndim) + "-D, got " +
                          std::to_string(arr.ndim()) + "-D");
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous (use np.ascontiguousarray)");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(arr);
}

const py::dtype& f32() {
  static const py::dtype dt = py::dtype::of<float>();
  return dt;
}
const py::dtype& f16() {
  static const py::dtype dt("float16");
  return dt;
}
const py::dtype& i8() {
  static const py::dtype dt = py::dtype::of<int8_t>();
  return dt;
}

using F32 = py::array_t<float, py::array::c_style>;

std::size_t dim(const py::array& a, int i) { return static_cast<std::size_t>(a.shape(i)); }

// A per-column vector (bias, w_scale) that must cover the first n columns.
const float* column_vector(const std::optional<py::object>& obj, const char* what, std::size_t n, F32& keep) {
  if (!obj || obj->is_none()) return nullptr;
  keep = checked<float>(*obj, what, f32(), 1);
  if (dim(keep, 0) < n)
    throw py::value_error(std::string(what) + " has " + std::to_string(dim(keep, 0)) + " entries, need at least " +
                          std::to_string(n));
  return keep.data();
}

// The slice of a packed weight the caller asks for: n columns (default all), K from x.
std::size_t check_slice(std::size_t K, std::size_t K_full, std::optional<std::size_t> n, std::size_t N_full) {
  if (K > K_full)
    throw py::value_error("x has " + std::to_string(K) + " columns but the weight only " + std::to_string(K_full) +
                          " input channels");
  const std::size_t cols = n.value_or(N_full);
  if (cols > N_full)
    throw py::value_error("n=" + std::to_string(cols) + " exceeds the weight's " + std::to_string(N_full) + " outputs");
  return cols;
}

py::array pack_weight(const py::handle& w_obj) {
  if (!py::isinstance<py::array>(w_obj)) throw py::type_error("w must be a numpy array");
  const py::dtype dt = py::reinterpret_borrow<py::array>(w_obj).dtype();
  if (dt.is(f32())) {
    auto w = checked<float>(w_obj, "w", f32(), 2);
    const std::size_t N = dim(w, 0), K = dim(w, 1);
    F32 out({K, N});
    float* dst = out.mutable_data();
    py::gil_scoped_release release;
    mk::pack_kn_f32(N, K, w.data(), K, dst);
    return out;
  }
  if (dt.is(f16())) {
    auto w = checked<uint16_t>(w_obj, "w", f16(), 2);
    const std::size_t N = dim(w, 0), K = dim(w, 1);
    py::array out(f16(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(K), static_cast<py::ssize_t>(N)});
    auto* dst = static_cast<uint16_t*>(out.mutable_data());
    py::gil_scoped_release release;
    mk::pack_kn_f16(N, K, w.data(), K, dst);
    return out;
  }
  if (dt.is(i8())) {
    auto w = checked<int8_t>(w_obj, "w", i8(), 2);
    const std::size_t N = dim(w, 0), K = dim(w, 1);
    py::array_t<int8_t> out({mk::packed_n32(N) / mk::kI8Panel, mk::packed_i8_ld(K)});
    int8_t* dst = out.mutable_data();
    py::gil_scoped_release release;
    mk::pack_p32k4_i8(N, K, w.data(), K, dst);
    return out;
  }
  throw py::type_error("w must have dtype float32, float16 or int8, got " + dtype_name(dt));
}

// y = x . W[:n, :K]^T (+ bias) from a packed float32 or float16 weight.
F32 gemm_float(const py::handle& x_obj, const py::handle& wt_obj, std::optional<std::size_t> n,
               const std::optional<py::object>& bias_obj, float alpha, const std::string& isa) {
  auto x = checked<float>(x_obj, "x", f32(), 2);
  if (!py::isinstance<py::array>(wt_obj)) throw py::type_error("wt must be a numpy array");
  const bool half = py::reinterpret_borrow<py::array>(wt_obj).dtype().is(f16());
  if (half && alpha != 1.f) throw py::value_error("alpha is only supported for float32 weights");
  py::array wt = half ? py::array(checked<uint16_t>(wt_obj, "wt", f16(), 2))
                      : py::array(checked<float>(wt_obj, "wt", f32(), 2));
  const std::size_t M = dim(x, 0), K = dim(x, 1), K_full = dim(wt, 0), N_full = dim(wt, 1);
  const std::size_t N = check_slice(K, K_full, n, N_full);
  F32 bias_keep;
  const float* bias = column_vector(bias_obj, "bias", N, bias_keep);
  const auto& t = table_named(isa);
  F32 y({M, N});
  float* py_out = y.mutable_data();
  const float* px = x.data();
  const void* pw = wt.data();
  {
    py::gil_scoped_release release;
    if (half)
      t.gemm_f16(M, N, K, px, K, static_cast<const uint16_t*>(pw), N_full, bias, py_out, N, false);
    else
      t.gemm_f32(M, N, K, alpha, px, K, static_cast<const float*>(pw), N_full, bias, py_out, N, false);
  }
  return y;
}

py::tuple quantize_rows(const py::handle& x_obj, const std::string& isa) {
  auto x = checked<float>(x_obj, "x", f32(), 2);
  const std::size_t M = dim(x, 0), K = dim(x, 1), ldq = mk::packed_k4(K);
  const auto& t = table_named(isa);
  py::array_t<int8_t> q({M, ldq});
  F32 scale(M);
  py::array_t<int32_t> sum(M);
  int8_t* pq = q.mutable_data();
  float* ps = scale.mutable_data();
  int32_t* psum = sum.mutable_data();
  {
    py::gil_scoped_release release;
    t.quantize_rows_i8(M, K, x.data(), K, pq, ldq, ps, psum);
  }
  return py::make_tuple(q, scale, sum);
}

// y = dynamic-int8 x . W[:n, :K]^T * scales (+ bias) from a P32K4-packed int8 weight; its output
// count is w_scale's length (the panels are padded to 32 columns).
F32 gemm_int8(const py::handle& x_obj, const py::handle& wq_obj, const py::handle& w_scale_obj,
              std::optional<std::size_t> n, const std::optional<py::object>& bias_obj, const std::string& isa) {
  auto x = checked<float>(x_obj, "x", f32(), 2);
  auto wq = checked<int8_t>(wq_obj, "wq", i8(), 2);
  if (w_scale_obj.is_none()) throw py::type_error("w_scale must be a float32 array, got None");
  F32 scale_keep = checked<float>(w_scale_obj, "w_scale", f32(), 1), bias_keep;
  const std::size_t panels = dim(wq, 0), N_full = dim(scale_keep, 0);
  if (dim(wq, 1) % (4 * mk::kI8Panel) != 0 || panels != mk::packed_n32(N_full) / mk::kI8Panel)
    throw py::value_error("wq is not a packed int8 weight for " + std::to_string(N_full) +
                          " outputs (w_scale's length): expected [ceil(out / 32), 32 * round_up(in, 4)]");
  const std::size_t M = dim(x, 0), K = dim(x, 1), K_full = dim(wq, 1) / mk::kI8Panel;
  const std::size_t N = check_slice(K, K_full, n, N_full);
  const float* w_scale = scale_keep.data();
  const float* bias = column_vector(bias_obj, "bias", N, bias_keep);
  const auto& t = table_named(isa);
  const std::size_t ldq = mk::packed_k4(K);
  std::vector<int8_t> xq(M * ldq);
  std::vector<float> x_scale(M);
  std::vector<int32_t> x_sum(M);
  F32 y({M, N});
  float* py_out = y.mutable_data();
  const float* px = x.data();
  const int8_t* pw = wq.data();
  {
    py::gil_scoped_release release;
    t.quantize_rows_i8(M, K, px, K, xq.data(), ldq, x_scale.data(), x_sum.data());
    t.gemm_i8(M, N, K, xq.data(), ldq, x_scale.data(), x_sum.data(), pw, mk::packed_i8_ld(K_full), w_scale, bias,
              py_out, N, false);
  }
  return y;
}

F32 bias_gelu(const py::handle& y_obj, const std::optional<py::object>& bias_obj, const std::string& isa) {
  auto y_in = checked<float>(y_obj, "y", f32(), 2);
  const std::size_t M = dim(y_in, 0), N = dim(y_in, 1);
  F32 bias_keep;
  const float* bias = column_vector(bias_obj, "bias", N, bias_keep);
  const auto& t = table_named(isa);
  F32 y({M, N});
  float* py_out = y.mutable_data();
  std::copy(y_in.data(), y_in.data() + M * N, py_out);
  {
    py::gil_scoped_release release;
    t.bias_gelu_f32(M, N, bias, py_out, N);
  }
  return y;
}

F32 layernorm(const py::handle& x_obj, const py::handle& gamma_obj, const py::handle& beta_obj, float eps,
              const std::optional<py::object>& residual_obj, const std::string& isa) {
  auto x = checked<float>(x_obj, "x", f32(), 2);
  const std::size_t M = dim(x, 0), N = dim(x, 1);
  auto gamma = checked<float>(gamma_obj, "gamma", f32(), 1);
  auto beta = checked<float>(beta_obj, "beta", f32(), 1);
  if (dim(gamma, 0) != N || dim(beta, 0) != N)
    throw py::value_error("gamma and beta must have x.shape[1] = " + std::to_string(N) + " entries");
  if (!(eps > 0.f)) throw py::value_error("eps must be > 0");
  const float* residual = nullptr;
  F32 res_keep;
  if (residual_obj && !residual_obj->is_none()) {
    res_keep = checked<float>(*residual_obj, "residual", f32(), 2);
    if (dim(res_keep, 0) != M || dim(res_keep, 1) != N) throw py::value_error("residual must have x's shape");
    residual = res_keep.data();
  }
  const auto& t = table_named(isa);
  F32 out({M, N});
  float* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    t.layernorm_f32(M, N, x.data(), N, residual, N, gamma.data(), beta.data(), eps, po, N);
  }
  return out;
}

F32 softmax(const py::handle& x_obj, const std::optional<py::object>& mask_obj, float scale, const std::string& isa) {
  auto x_in = checked<float>(x_obj, "x", f32(), 2);
  const std::size_t M = dim(x_in, 0), N = dim(x_in, 1);
  F32 mask_keep;
  const float* mask = column_vector(mask_obj, "mask", N, mask_keep);
  const auto& t = table_named(isa);
  F32 x({M, N});
  float* px = x.mutable_data();
  std::copy(x_in.data(), x_in.data() + M * N, px);
  {
    py::gil_scoped_release release;
    t.softmax_f32(M, N, px, N, mask, scale);
  }
  return x;
}

py::array f32_to_f16(const py::handle& x_obj, const std::string& isa) {
  auto x = checked<float>(x_obj, "x", f32(), 1);
  const auto& t = table_named(isa);
  py::array out(f16(), std::vector<py::ssize_t>{x.shape(0)});
  auto* po = static_cast<uint16_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    t.f32_to_f16(dim(x, 0), x.data(), po);
  }
  return out;
}

F32 f16_to_f32(const py::handle& x_obj, const std::string& isa) {
  auto x = checked<uint16_t>(x_obj, "x", f16(), 1);
  const auto& t = table_named(isa);
  F32 out(x.shape(0));
  float* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    t.f16_to_f32(dim(x, 0), x.data(), po);
  }
  return out;
}

}  // namespace

void register_kernels(py::module_& m) {
  m.def("dot_f32", [](const py::handle& a_obj, const py::handle& b_obj, const std::string& isa) {
    auto a = checked<float>(a_obj, "a", f32(), 1);
    auto b = checked<float>(b_obj, "b", f32(), 1);
    if (a.size() != b.size())
      throw py::value_error("a and b must have the same length, got " + std::to_string(a.size()) + " and " +
                            std::to_string(b.size()));
    const auto& t = table_named(isa);
    py::gil_scoped_release release;
    return t.dot_f32(a.data(), b.data(), static_cast<std::size_t>(a.size()));
  }, py::arg("a"), py::arg("b"), py::arg("isa") = "",
     "Dot product of two float32 vectors with the given ISA's kernel (default: the selected one).");

  m.def("pack_weight_q4", [](const py::handle& q_obj, const py::handle& s_obj, const py::handle& z_obj) {
    static const py::dtype u8 = py::dtype::of<uint8_t>();
    auto q = checked<uint8_t>(q_obj, "q", u8, 2);
    auto S = checked<uint16_t>(s_obj, "scale", f16(), 2);
    auto Z = checked<uint16_t>(z_obj, "minimum", f16(), 2);
    const std::size_t N = dim(q, 0), K = dim(q, 1);
    if (K % mk::kQ4Group != 0)
      throw py::value_error("4-bit weights need an input width that is a multiple of 32, got " + std::to_string(K));
    for (const auto* a : {&S, &Z})
      if (dim(*a, 0) != K / mk::kQ4Group || dim(*a, 1) != N)
        throw py::value_error("scale and minimum must be float16 [in / 32, out] = [" + std::to_string(K / mk::kQ4Group) +
                              ", " + std::to_string(N) + "]");
    for (py::ssize_t i = 0; i < q.size(); ++i)
      if (q.data()[i] > 15) throw py::value_error("q must hold 4-bit values in [0, 15]");
    py::array_t<uint8_t> out({mk::packed_q4_panels(N), mk::packed_q4_ld(K)});
    uint8_t* dst = out.mutable_data();
    py::gil_scoped_release release;
    mk::pack_q4_panels(N, K, q.data(), K, S.data(), Z.data(), N, dst);
    return out;
  }, py::arg("q"), py::arg("scale"), py::arg("minimum"),
        "Pack 4-bit values q [out, in] (uint8 in [0, 15]) with their float16 scales and minimums [in / 32, out]\n"
        "(mlfs_edge.quant.scheme.quantize_q4_groups) into the engine's q4 \"P16\" panels (csrc/include/mlfs/kernels.h):\n"
        "[ceil(out / 16), in / 32 * 320] bytes.");
  m.def("pack_weight", &pack_weight, py::arg("w"),
        "Pack a Linear weight W [out, in] into the engine's layout (csrc/include/mlfs/kernels.h):\n"
        "float32/float16 -> W^T [in, out] (\"KN\"); int8 -> [ceil(out/32), 32*round_up(in, 4)] (\"P32K4\":\n"
        "panels of 32 outputs, each a run of groups of 4 inputs, zero-padded). Prefix slices stay strides.");
  m.def("gemm", &gemm_float, py::arg("x"), py::arg("wt"), py::arg("n") = py::none(), py::arg("bias") = py::none(),
        py::arg("alpha") = 1.0f, py::arg("isa") = "",
        "alpha * x[M, K] . W[:n, :K]^T (+ bias[:n]) with wt = pack_weight(W) (float32 or float16).\n"
        "K is x.shape[1] (<= W's inputs), n defaults to all outputs: the slice is a stride.");
  m.def("quantize_rows_i8", &quantize_rows, py::arg("x"), py::arg("isa") = "",
        "Per-row dynamic int8 quantisation (mlfs_edge.quant.scheme): (q [M, round_up(K, 4)], scale [M], sum [M]).");
  m.def("gemm_i8", &gemm_int8, py::arg("x"), py::arg("wq"), py::arg("w_scale"), py::arg("n") = py::none(),
        py::arg("bias") = py::none(), py::arg("isa") = "",
        "int8 Linear: quantise x per row, exact int32 products with wq = pack_weight(W_int8)[:, :K, :n],\n"
        "rescale by x_scale * w_scale (+ bias). Same maths as quant.scheme.int8_linear_reference.");
  m.def("bias_gelu", &bias_gelu, py::arg("y"), py::arg("bias") = py::none(), py::arg("isa") = "",
        "erf GELU of y (+ bias) as BERT computes it; returns a new array.");
  m.def("layernorm", &layernorm, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps"),
        py::arg("residual") = py::none(), py::arg("isa") = "",
        "LayerNorm over the rows of x (+ residual), like torch.nn.LayerNorm; returns a new array.");
  m.def("softmax", &softmax, py::arg("x"), py::arg("mask") = py::none(), py::arg("scale") = 1.0f,
        py::arg("isa") = "", "Row softmax of scale * x + mask (additive, per column); returns a new array.");
  m.def("f32_to_f16", &f32_to_f16, py::arg("x"), py::arg("isa") = "",
        "float32 -> float16 (round to nearest even).");
  m.def("f16_to_f32", &f16_to_f32, py::arg("x"), py::arg("isa") = "", "float16 -> float32 (exact).");
}
