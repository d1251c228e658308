// Builds one KernelTable per ISA. An ISA level that lacks a kernel inherits the next lower level's
// (ggml's "fallback" idea), so every table is complete and the scalar table is the floor.
#include <stdexcept>
#include <string>

#include "mlfs/kernels.h"

namespace mlfs::kernels {
namespace {

KernelTable scalar_table() {
  return KernelTable{Isa::scalar,         &ref::dot_f32,         &ref::gemm_f32,      &ref::gemm_f16,
                     &ref::quantize_rows_i8, &ref::gemm_i8,       &ref::quantize_blocks_q8, &ref::gemm_q4,       &ref::bias_gelu_f32,
                     &ref::layernorm_f32, &ref::softmax_f32,     &ref::rmsnorm_f32,   &ref::silu_mul_f32,
                     &ref::gelu_tanh_mul_f32, &ref::softcap_f32,
                     &ref::f32_to_f16,    &ref::f16_to_f32};
}

// Each level starts from the level below and replaces what it implements.
KernelTable make_table(Isa isa) {
  KernelTable t = scalar_table();
  switch (isa) {
    case Isa::scalar: break;
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::avx2:
      t.dot_f32 = &avx2::dot_f32;
      t.gemm_f32 = &avx2::gemm_f32;
      t.gemm_f16 = &avx2::gemm_f16;
      t.gemm_i8 = &avx2::gemm_i8;
      t.gemm_q4 = &avx2::gemm_q4;
      t.quantize_blocks_q8 = &avx2::quantize_blocks_q8;
      t.rmsnorm_f32 = &avx2::rmsnorm_f32;
      t.silu_mul_f32 = &avx2::silu_mul_f32;
      t.gelu_tanh_mul_f32 = &avx2::gelu_tanh_mul_f32;
      t.softcap_f32 = &avx2::softcap_f32;
      t.quantize_rows_i8 = &avx2::quantize_rows_i8;
      t.bias_gelu_f32 = &avx2::bias_gelu_f32;
      t.layernorm_f32 = &avx2::layernorm_f32;
      t.softmax_f32 = &avx2::softmax_f32;
      t.f32_to_f16 = &avx2::f32_to_f16;
      t.f16_to_f32 = &avx2::f16_to_f32;
      break;
    case Isa::avx512:
      t = make_table(Isa::avx2);
      t.dot_f32 = &avx512::dot_f32;
      t.gemm_f32 = &avx512::gemm_f32;
      t.gemm_f16 = &avx512::gemm_f16;
      t.gemm_i8 = &avx512::gemm_i8;
      t.gemm_q4 = &avx512::gemm_q4;
      t.rmsnorm_f32 = &avx512::rmsnorm_f32;
      t.silu_mul_f32 = &avx512::silu_mul_f32;
      t.gelu_tanh_mul_f32 = &avx512::gelu_tanh_mul_f32;
      t.softcap_f32 = &avx512::softcap_f32;
      t.quantize_rows_i8 = &avx512::quantize_rows_i8;
      t.bias_gelu_f32 = &avx512::bias_gelu_f32;
      t.layernorm_f32 = &avx512::layernorm_f32;
      t.softmax_f32 = &avx512::softmax_f32;
      t.f32_to_f16 = &avx512::f32_to_f16;
      t.f16_to_f32 = &avx512::f16_to_f32;
      break;
#elif defined(__aarch64__)
    case Isa::neon:
      t.dot_f32 = &neon::dot_f32;
      t.gemm_f32 = &neon::gemm_f32;
      t.gemm_f16 = &neon::gemm_f16;
      t.gemm_i8 = &neon::gemm_i8;
      t.gemm_q4 = &neon::gemm_q4;
      t.rmsnorm_f32 = &neon::rmsnorm_f32;
      t.silu_mul_f32 = &neon::silu_mul_f32;
      t.gelu_tanh_mul_f32 = &neon::gelu_tanh_mul_f32;
      t.softcap_f32 = &neon::softcap_f32;
      t.quantize_rows_i8 = &neon::quantize_rows_i8;
      t.bias_gelu_f32 = &neon::bias_gelu_f32;
      t.layernorm_f32 = &neon::layernorm_f32;
      t.softmax_f32 = &neon::softmax_f32;
      t.f32_to_f16 = &neon::f32_to_f16;
      t.f16_to_f32 = &neon::f16_to_f32;
      break;
    case Isa::dotprod:
      t = make_table(Isa::neon);
      t.gemm_i8 = &dotprod::gemm_i8;
      t.gemm_q4 = &dotprod::gemm_q4;
      break;
    case Isa::i8mm:
      t = make_table(Isa::dotprod);
      t.gemm_i8 = &i8mm::gemm_i8;
      break;
#endif
    default: break;
  }
  t.isa = isa;
  return t;
}

}  // namespace

const KernelTable& table_for(Isa isa) {
  static const KernelTable tables[] = {make_table(Isa::scalar), make_table(Isa::avx2),
                                       make_table(Isa::avx512), make_table(Isa::neon),
                                       make_table(Isa::dotprod), make_table(Isa::i8mm)};
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("ISA ") + isa_name(isa) + " cannot run on this CPU/build");
  return tables[static_cast<int>(isa)];
}

const KernelTable& active() {
  static const KernelTable& table = table_for(selected_isa());
  return table;
}

}  // namespace mlfs::kernels
