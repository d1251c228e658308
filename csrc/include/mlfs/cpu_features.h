// Run-time CPU feature detection and ISA selection.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace mlfs {

struct CpuFeatures {
  // x86-64 (each also requires the OS to save the matching register state, checked via XGETBV)
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512vnni = false;
  bool avx_vnni = false;
  // aarch64 (Linux: getauxval(AT_HWCAP / AT_HWCAP2); macOS: sysctl hw.optional.arm.FEAT_*)
  bool neon = false, dotprod = false, fp16 = false, i8mm = false;
};

// Detected once per process.
const CpuFeatures& cpu_features();

// (name, present) pairs for the running architecture, in a stable order.
std::vector<std::pair<std::string, bool>> cpu_feature_list();

// Kernel families, from the portable scalar reference up. The numeric order is the preference order
// within an architecture.
enum class Isa { scalar = 0, avx2, avx512, neon, dotprod, i8mm };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);  // compiled in for this architecture *and* present on this CPU
// Highest supported ISA, or the one named by the MLFS_ISA environment variable
// (scalar|avx2|avx512|neon|dotprod|i8mm); throws std::invalid_argument when MLFS_ISA names an ISA
// this CPU or build cannot run.
Isa selected_isa();
// All ISAs that can run here, scalar first (what the kernel tests iterate over).
std::vector<Isa> supported_isas();

}  // namespace mlfs
