// Builds one KernelTable per ISA. An ISA level that lacks a kernel inherits the next lower level's
// (ggml's "fallback" idea), so every table is complete and the scalar table is the floor.
#include <stdexcept>
#include <string>

#include "mlfs/kernels.h"

namespace mlfs::kernels {
namespace {

KernelTable make_table(Isa isa) {
  KernelTable t{Isa::scalar, &ref::dot_f32};
  t.isa = isa;
  switch (isa) {
    case Isa::scalar: break;
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::avx512: t.dot_f32 = &avx512::dot_f32; break;
    case Isa::avx2: t.dot_f32 = &avx2::dot_f32; break;
#elif defined(__aarch64__)
    case Isa::i8mm:
    case Isa::dotprod:
    case Isa::neon: t.dot_f32 = &neon::dot_f32; break;
#endif
    default: break;
  }
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
