// Kernel API: one table of function pointers per ISA, filled by csrc/kernels/dispatch.cpp.
// Every entry has a scalar reference (namespace ref) that the native and Python tests compare
// each ISA's version against.
#pragma once
#include <cstddef>

#include "mlfs/cpu_features.h"

namespace mlfs::kernels {

// sum_i a[i] * b[i]
using DotF32Fn = float (*)(const float* a, const float* b, std::size_t n);

struct KernelTable {
  Isa isa;
  DotF32Fn dot_f32;
};

// The table for `isa`; throws std::invalid_argument if that ISA cannot run here.
const KernelTable& table_for(Isa isa);
// The table for selected_isa(), resolved once.
const KernelTable& active();

namespace ref {
float dot_f32(const float* a, const float* b, std::size_t n);
}
namespace avx2 {
float dot_f32(const float* a, const float* b, std::size_t n);
}
namespace avx512 {
float dot_f32(const float* a, const float* b, std::size_t n);
}
namespace neon {
float dot_f32(const float* a, const float* b, std::size_t n);
}

}  // namespace mlfs::kernels
