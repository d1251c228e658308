#include "mlfs/cpu_features.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define MLFS_X86 1
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#define MLFS_ARM64 1
#define MLFS_ARM64_APPLE 1
#elif defined(__aarch64__)
#include <sys/auxv.h>
#define MLFS_ARM64 1
#endif

namespace mlfs {
namespace {

#if MLFS_X86
unsigned long long xgetbv0() {
  unsigned int eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27);
  const bool has_avx = ecx & (1u << 28);
  const bool has_fma = ecx & (1u << 12);
  const bool has_f16c = ecx & (1u << 29);
  if (!osxsave || !has_avx) return f;
  const unsigned long long xcr0 = xgetbv0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;       // SSE + AVX state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;     // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!os_ymm) return f;
  f.fma = has_fma;
  f.f16c = has_f16c;
  unsigned int max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  f.avx2 = ebx & (1u << 5);
  if (os_zmm) {
    f.avx512f = ebx & (1u << 16);
    f.avx512dq = ebx & (1u << 17);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
    f.avx512vnni = ecx & (1u << 11);
  }
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  f.avx_vnni = eax & (1u << 4);
  return f;
}
#elif MLFS_ARM64_APPLE
// macOS has no getauxval: the kernel publishes each feature as a sysctl (FEAT_* since macOS 12; an
// absent key reads as "no", so an older macOS falls back to plain NEON rather than guessing).
bool sysctl_flag(const char* name) {
  int value = 0;
  std::size_t size = sizeof value;
  return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
}

CpuFeatures detect() {
  CpuFeatures f;
  f.neon = true;  // AdvSIMD is mandatory on every Apple arm64 CPU
  f.fp16 = sysctl_flag("hw.optional.arm.FEAT_FP16");
  f.dotprod = sysctl_flag("hw.optional.arm.FEAT_DotProd");
  f.i8mm = sysctl_flag("hw.optional.arm.FEAT_I8MM");
  return f;
}
#elif MLFS_ARM64
// Bit positions from the Linux uapi <asm/hwcap.h>; spelled out so that old headers still build.
constexpr unsigned long kHwcapAsimd = 1UL << 1;
constexpr unsigned long kHwcapAsimdHp = 1UL << 10;
constexpr unsigned long kHwcapAsimdDp = 1UL << 20;
constexpr unsigned long kHwcap2I8mm = 1UL << 13;

CpuFeatures detect() {
  CpuFeatures f;
  const unsigned long hw = getauxval(AT_HWCAP);
  const unsigned long hw2 = getauxval(AT_HWCAP2);
  f.neon = hw & kHwcapAsimd;
  f.fp16 = hw & kHwcapAsimdHp;
  f.dotprod = hw & kHwcapAsimdDp;
  f.i8mm = hw2 & kHwcap2I8mm;
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::vector<std::pair<std::string, bool>> cpu_feature_list() {
  const CpuFeatures& f = cpu_features();
#if MLFS_X86
  return {{"avx2", f.avx2},         {"fma", f.fma},           {"f16c", f.f16c},
          {"avx512f", f.avx512f},   {"avx512bw", f.avx512bw}, {"avx512dq", f.avx512dq},
          {"avx512vl", f.avx512vl}, {"avx512vnni", f.avx512vnni}, {"avx_vnni", f.avx_vnni}};
#elif MLFS_ARM64
  return {{"neon", f.neon}, {"dotprod", f.dotprod}, {"fp16", f.fp16}, {"i8mm", f.i8mm}};
#else
  (void)f;
  return {};
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
    case Isa::dotprod: return "dotprod";
    case Isa::i8mm: return "i8mm";
  }
  return "unknown";
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::scalar: return true;
#if MLFS_X86
    case Isa::avx2: return f.avx2 && f.fma && f.f16c;
    case Isa::avx512:
      return f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512vnni && f.fma && f.f16c;
#elif MLFS_ARM64
    case Isa::neon: return f.neon;
    case Isa::dotprod: return f.neon && f.dotprod && f.fp16;
    case Isa::i8mm: return f.neon && f.dotprod && f.fp16 && f.i8mm;
#endif
    default: (void)f; return false;
  }
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon, Isa::dotprod, Isa::i8mm})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

Isa selected_isa() {
  const char* forced = std::getenv("MLFS_ISA");
  if (forced != nullptr && forced[0] != '\0') {
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon, Isa::dotprod, Isa::i8mm}) {
      if (std::strcmp(forced, isa_name(isa)) == 0) {
        if (!isa_supported(isa))
          throw std::invalid_argument(std::string("MLFS_ISA=") + forced +
                                      " is not supported on this CPU/build; unset it or pick one of "
                                      "the ISAs that mlfs_edge._core.supported_isas() lists");
        return isa;
      }
    }
    throw std::invalid_argument(std::string("MLFS_ISA=") + forced +
                                " is unknown; use scalar, avx2, avx512, neon, dotprod or i8mm");
  }
  return supported_isas().back();
}

}  // namespace mlfs
