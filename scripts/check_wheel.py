#!/usr/bin/env python3
"""Check a built mlfs-edge wheel the way a user receives it.

1. ISA hygiene, from the disassembly of the wheel's ``_core*.so``: the faster ISA code is present
   (x86-64: AVX-512 zmm instructions; aarch64: dotprod sdot/udot and i8mm smmla/ummla), and every
   instruction that needs more than the architecture's baseline lives in a function of that ISA's
   kernels (its name carries avx2 / avx512 / dotprod / i8mm). An AVX instruction elsewhere would make
   the whole extension require AVX: typically an inline helper compiled in an ISA file and merged
   by the linker with its baseline twin.
2. A fresh venv holding only the wheel (``--no-deps``) and numpy (pinned by the constraints file):
   ``import mlfs_edge._core`` under ``MLFS_ISA=scalar``, then ``python -m mlfs_edge.smoke --all-isas``
   (kernels vs scalar, a tiny engine forward, under every ISA this CPU supports).

    scripts/check_wheel.py dist/mlfs_edge-*.whl --constraints constraints.txt
    scripts/check_wheel.py dist/...aarch64.whl --objdump-only      # a cross-built wheel

Exits non-zero, naming the failed check.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

FUNCTION = re.compile(r"^[0-9a-f]+ <(.+)>:$")
# x86-64: any VEX/EVEX instruction (mnemonic starting with v) is AVX; zmm / mask registers are AVX-512.
X86_AVX = re.compile(r"^\s*[0-9a-f]+:\s+v[a-z0-9]+\s")
X86_AVX512 = re.compile(r"%zmm|%k[1-7]\b")
# aarch64: the dot-product and int8 matrix-multiply instructions.
ARM_DOTPROD = re.compile(r"^\s*[0-9a-f]+:\s+[su]dot\s")
ARM_I8MM = re.compile(r"^\s*[0-9a-f]+:\s+(?:[su]mmla|usmmla|usdot|sudot)\s")


def fail(message: str) -> None:
    print(f"check_wheel: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def extract_core(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if re.fullmatch(r"mlfs_edge/_core\..*\.so", n)]
        if len(names) != 1:
            fail(f"{wheel.name} should hold exactly one mlfs_edge/_core*.so, found {names}")
        return Path(zf.extract(names[0], into))


def elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    machine = int.from_bytes(header[18:20], "little")
    return {0x3E: "x86_64", 0xB7: "aarch64"}.get(machine, f"unknown ({machine:#x})")


def per_function(disassembly: str, patterns: dict[str, re.Pattern[str]]) -> dict[str, dict[str, int]]:
    """{function: {pattern name: matching instruction count}} for functions with any match."""
    counts: dict[str, dict[str, int]] = {}
    current = "?"
    for line in disassembly.splitlines():
        header = FUNCTION.match(line)
        if header:
            current = header.group(1)
            continue
        for name, pattern in patterns.items():
            if pattern.search(line):
                counts.setdefault(current, {}).setdefault(name, 0)
                counts[current][name] += 1
    return counts


def check_isa_code(so: Path) -> str:
    """Check ISA hygiene of the extension; returns a one-line summary of what was counted."""
    arch = elf_machine(so)
    if arch == "x86_64":
        objdump = "objdump"
        patterns = {"avx": X86_AVX, "avx512": X86_AVX512}
        # Which function-name tags may hold which instructions (avx512 code also uses VEX forms).
        allowed = {"avx": ("avx2", "avx512"), "avx512": ("avx512",)}
        required = "avx512"
    elif arch == "aarch64":
        objdump = "aarch64-linux-gnu-objdump" if shutil.which("aarch64-linux-gnu-objdump") else "objdump"
        patterns = {"dotprod": ARM_DOTPROD, "i8mm": ARM_I8MM}
        allowed = {"dotprod": ("dotprod", "i8mm"), "i8mm": ("i8mm",)}
        required = "i8mm"
    else:
        fail(f"{so.name}: unexpected ELF machine {arch}")
    # The extension is stripped: code of internal-linkage functions counts toward the exported
    # function before it. Every external-linkage function (the kind the linker could merge across ISA
    # files) keeps its own dynamic symbol, so those are named exactly.
    cmd = [objdump, "-d", "-C", "--no-show-raw-insn", str(so)]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    counts = per_function(text, patterns)
    totals = {name: sum(c.get(name, 0) for c in counts.values()) for name in patterns}
    if totals[required] == 0:
        fail(f"{so.name} ({arch}) holds no {required} instructions: the {required} kernels are missing")
    stray = [(fn, name) for fn, c in counts.items() for name in c
             if not any(tag in fn for tag in allowed[name])]
    if stray:
        listing = "\n  ".join(f"{name} in {fn}" for fn, name in stray[:10])
        fail(f"{len(stray)} function(s) outside the ISA kernels use ISA instructions (the extension would "
             f"need that ISA on every CPU):\n  {listing}")
    functions = {name: sum(1 for c in counts.values() if name in c) for name in patterns}
    return f"{arch}: " + ", ".join(f"{totals[n]} {n} instructions in {functions[n]} functions" for n in patterns) \
        + "; none outside their ISA's kernels"


def fresh_venv_smoke(wheel: Path, constraints: Path | None, python: str) -> None:
    with tempfile.TemporaryDirectory(prefix="mlfs-wheel-") as tmp:
        venv = Path(tmp) / "venv"
        t0 = time.perf_counter()
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        pins = ["-c", str(constraints)] if constraints else []
        # Only what the smoke test imports: the wheel itself and numpy (torch stays out of this venv).
        subprocess.run([*pip, "--no-deps", str(wheel.resolve())], check=True)
        subprocess.run([*pip, *pins, "numpy"], check=True)
        print(f"fresh venv with the wheel + numpy: {time.perf_counter() - t0:.1f} s")
        py = str(venv / "bin" / "python")
        # Run from the temp dir: the source tree's mlfs_edge must not shadow the installed one.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFS_ISA")}
        where = subprocess.run([py, "-c", "import mlfs_edge._core as c; print(c.__file__)"], cwd=tmp, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(str(venv)):
            fail(f"mlfs_edge._core was imported from {where}, not from the fresh venv")
        scalar = subprocess.run([py, "-c", "import mlfs_edge._core as c; print(c.selected_isa())"], cwd=tmp,
                                env={**env, "MLFS_ISA": "scalar"}, capture_output=True, text=True, check=True)
        if scalar.stdout.strip() != "scalar":
            fail(f"MLFS_ISA=scalar selected {scalar.stdout.strip()!r}")
        print(f"import under MLFS_ISA=scalar: ok ({where})")
        t0 = time.perf_counter()
        subprocess.run([py, "-m", "mlfs_edge.smoke", "--all-isas"], cwd=tmp, env=env, check=True)
        print(f"smoke test under every ISA: {time.perf_counter() - t0:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--constraints", type=Path, default=None, help="pip constraints file pinning numpy")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the fresh venv")
    parser.add_argument("--objdump-only", action="store_true", help="only the disassembly check (cross builds)")
    args = parser.parse_args()
    if not args.wheel.is_file():
        fail(f"no wheel at {args.wheel}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{args.wheel.name}: {check_isa_code(extract_core(args.wheel, Path(tmp)))}")
    if not args.objdump_only:
        fresh_venv_smoke(args.wheel, args.constraints, args.python)
    print("check_wheel: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
