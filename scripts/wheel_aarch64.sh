#!/usr/bin/env bash
# Cross-build the linux aarch64 wheel on this x86-64 machine and check it under qemu-user with
# Debian's arm64 CPython 3.11, unpacked from its .debs (no arm64 root filesystem, no binfmt):
#   1. Debian's arm64 python3.11 + headers, downloaded and unpacked once into build/py-aarch64/;
#   2. the wheel (dist-aarch64/), built by scikit-build-core with cmake/aarch64-linux-gnu.cmake
#      against those headers;
#   3. scripts/check_wheel.py --objdump-only: dotprod/i8mm code present and confined to its kernels;
#   4. the wheel + the manylinux aarch64 numpy installed into a target folder, and
#      `python -m mlfs_edge.smoke --all-isas` run under qemu on three CPU models (max: neon +
#      dotprod + i8mm; cortex-a76: neon + dotprod; cortex-a53: neon), so each ARM level executes.
# Usage: scripts/wheel_aarch64.sh [host python, default .venv/bin/python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
ROOT=$PWD/build/py-aarch64
PYVER=3.11
NUMPY=$(grep -E '^numpy==' constraints.txt)

for tool in aarch64-linux-gnu-g++ qemu-aarch64-static dpkg-deb apt-get; do
  command -v "$tool" > /dev/null || { echo "wheel_aarch64: $tool is missing (apt-get install g++-aarch64-linux-gnu qemu-user-static)" >&2; exit 1; }
done

# 1. The interpreter and its headers. Only what CPython needs to start and import numpy: the
#    cross toolchain's sysroot (/usr/aarch64-linux-gnu) already has libc, libm, libstdc++.
if [ ! -x "$ROOT/root/usr/bin/python$PYVER" ]; then
  echo "==> Debian arm64 python$PYVER (.debs, unpacked into $ROOT/root)"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  rm -rf "$ROOT/debs" "$ROOT/root.tmp" && mkdir -p "$ROOT/debs" "$ROOT/root.tmp"
  (cd "$ROOT/debs" && apt-get download -qq "python$PYVER-minimal:arm64" "libpython$PYVER-minimal:arm64" \
     "libpython$PYVER-stdlib:arm64" "libpython$PYVER-dev:arm64" "libpython$PYVER:arm64" zlib1g:arm64 \
     libexpat1:arm64 libffi8:arm64 libbz2-1.0:arm64 liblzma5:arm64)
  for deb in "$ROOT"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT/root.tmp"; done
  # One include folder with the aarch64 pyconfig.h in place of Debian's multiarch dispatcher.
  cp "$ROOT/root.tmp/usr/include/aarch64-linux-gnu/python$PYVER/pyconfig.h" \
     "$ROOT/root.tmp/usr/include/python$PYVER/pyconfig.h"
  rm -rf "$ROOT/root" && mv "$ROOT/root.tmp" "$ROOT/root"
fi

# 2. The wheel. _PYTHON_HOST_PLATFORM gives the wheel its tag, PYTHON_MODULE_EXTENSION the module
#    its aarch64 file name (pybind11 would otherwise ask the x86-64 host interpreter).
echo "==> cross-building the aarch64 wheel"
rm -rf dist-aarch64
_PYTHON_HOST_PLATFORM=linux-aarch64 CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-2} \
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps . -w dist-aarch64/ \
  --config-settings=build-dir=build/wheel-aarch64 \
  --config-settings=cmake.define.CMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
  --config-settings=cmake.define.Python_INCLUDE_DIR="$ROOT/root/usr/include/python$PYVER" \
  --config-settings=cmake.define.PYTHON_MODULE_EXTENSION=".cpython-${PYVER/./}-aarch64-linux-gnu.so"
WHEEL=$(ls dist-aarch64/mlfs_edge-*-linux_aarch64.whl)

# 3. The disassembly checks.
"$PY" scripts/check_wheel.py "$WHEEL" --archive build/wheel-aarch64/libmlfs_native.a --objdump-only

# 4. Installed for aarch64 (pip --target with an explicit platform), then run under qemu.
echo "==> installing the wheel + $NUMPY for aarch64 into $ROOT/site"
rm -rf "$ROOT/site"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: --target "$ROOT/site" \
  --implementation cp --python-version "$PYVER" --platform manylinux_2_28_aarch64 --platform linux_aarch64 \
  "$NUMPY" "$WHEEL"
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
export LD_LIBRARY_PATH=$ROOT/root/lib/aarch64-linux-gnu:$ROOT/root/usr/lib/aarch64-linux-gnu
export PYTHONHOME=$ROOT/root/usr PYTHONPATH=$ROOT/site PYTHONNOUSERSITE=1
# The smoke test's children need the emulator too: qemu-user cannot exec an aarch64 binary itself.
export MLFS_SMOKE_LAUNCHER=qemu-aarch64-static
for cpu in max cortex-a76 cortex-a53; do
  echo "==> smoke test under QEMU_CPU=$cpu"
  (cd "$ROOT" && QEMU_CPU=$cpu qemu-aarch64-static "$ROOT/root/usr/bin/python$PYVER" -m mlfs_edge.smoke --all-isas)
done
echo "wheel_aarch64: ok ($WHEEL)"
