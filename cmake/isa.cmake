# Per-ISA compilation: a kernel file's name ends in the ISA it needs, and only that file is built
# with that ISA's flags. The dispatcher (csrc/kernels/dispatch.cpp) calls it only when
# cpu_features() says the running CPU has the feature, so the library runs on any CPU of the
# target architecture.
#
#   x86-64  : *_avx2.cpp   (AVX2 + FMA + F16C)      *_avx512.cpp (AVX-512 F/BW/DQ/VL + VNNI)
#   aarch64 : *_neon.cpp   (ARMv8-A baseline)        *_dotprod.cpp (ARMv8.2-A + dotprod + fp16)
#             *_i8mm.cpp   (ARMv8.6-A + i8mm)
# clang ignores per-function target("arch=...") on AArch64, hence one file per level, not attributes.

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(MLFS_ARCH x86_64)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set(MLFS_ARCH aarch64)
else()
  set(MLFS_ARCH generic)
endif()
message(STATUS "mlfs_edge: target architecture ${MLFS_ARCH}")

set(MLFS_FLAGS_avx2 "-mavx2;-mfma;-mf16c")
set(MLFS_FLAGS_avx512 "-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mavx512vnni;-mfma;-mf16c")
# GCC 12's own AVX-512 headers trip -W(maybe-)uninitialized on masked intrinsics (GCC PR 105593,
# fixed in 13): silence that false positive there only.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  list(APPEND MLFS_FLAGS_avx512 "-Wno-uninitialized;-Wno-maybe-uninitialized")
endif()
set(MLFS_FLAGS_neon "-march=armv8-a")
set(MLFS_FLAGS_dotprod "-march=armv8.2-a+dotprod+fp16")
set(MLFS_FLAGS_i8mm "-march=armv8.6-a+dotprod+fp16+i8mm")

# mlfs_isa_sources(<out_var> <dir>): the ISA files in <dir> (x86/ and arm/ sub-folders) that the
# target architecture can build, each tagged with its own compile flags.
function(mlfs_isa_sources out_var dir)
  set(result "")
  if(MLFS_ARCH STREQUAL "x86_64")
    set(isas avx2 avx512)
    set(sub x86)
  elseif(MLFS_ARCH STREQUAL "aarch64")
    set(isas neon dotprod i8mm)
    set(sub arm)
  else()
    set(isas "")
  endif()
  foreach(isa ${isas})
    file(GLOB files CONFIGURE_DEPENDS ${dir}/${sub}/*_${isa}.cpp)
    foreach(f ${files})
      set_source_files_properties(${f} PROPERTIES COMPILE_OPTIONS "${MLFS_FLAGS_${isa}}")
      list(APPEND result ${f})
    endforeach()
  endforeach()
  set(${out_var} ${result} PARENT_SCOPE)
endfunction()
