"""scripts/check_wheel.py's ISA confinement check fails where it should: on small archives compiled
here, an AVX instruction outside an AVX file, or in an external-linkage helper without the ISA in
its name (the one the linker could merge with a baseline twin), is reported; confined code passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_wheel  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("ar") is None or
                                check_wheel.elf_machine(Path(sys.executable).resolve()) != "x86_64",
                                reason="needs g++ and ar on x86-64")

SUM = "{ float s = 0; for (int i = 0; i < n; ++i) s += x[i] * x[i]; return s; }"


def archive(tmp_path: Path, files: dict[str, tuple[str, list[str]]]) -> Path:
    objects = []
    for name, (source, flags) in files.items():
        src = tmp_path / name
        src.write_text(source)
        obj = tmp_path / f"{name}.o"
        subprocess.run(["g++", "-O3", "-c", *flags, str(src), "-o", str(obj)], check=True)
        objects.append(obj)
    lib = tmp_path / "libtest.a"
    subprocess.run(["ar", "rcs", str(lib), *map(str, objects)], check=True)
    return lib


def confined(lib: Path) -> tuple[bool, str]:
    try:
        return True, check_wheel.check_confined(lib, "x86_64")
    except SystemExit:
        return False, ""


def test_confined_isa_code_passes(tmp_path):
    lib = archive(tmp_path, {
        "k_avx2.cpp": ("namespace k::avx2 { namespace { float h(const float* x, int n) " + SUM + " }\n"
                       "float sum(const float* x, int n) { return h(x, n); } }", ["-mavx2", "-mfma"]),
        "plain.cpp": ("float plain(const float* x, int n) " + SUM, []),
    })
    ok, summary = confined(lib)
    assert ok and "k_avx2.cpp.o" in summary


def test_avx_outside_an_isa_file_fails(tmp_path, capsys):
    lib = archive(tmp_path, {"plain.cpp": ("float plain(const float* x, int n) " + SUM, ["-mavx2"])})
    assert not confined(lib)[0]
    assert "avx in plain.cpp.o: plain(float const*, int)" in capsys.readouterr().err


def test_external_inline_helper_in_an_isa_file_fails(tmp_path, capsys):
    # An inline (weak, external) helper emitted with AVX code: the linker may keep this copy for the
    # scalar callers too.
    source = ("inline float helper(const float* x, int n) " + SUM + "\n"
              "namespace k::avx2 { float sum(const float* x, int n) { return helper(x, n) + 1; } }")
    lib = archive(tmp_path, {"k_avx2.cpp": (source, ["-mavx2", "-fno-inline"])})
    assert not confined(lib)[0]
    assert "helper(float const*, int)" in capsys.readouterr().err
