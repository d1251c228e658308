#!/usr/bin/env python3
"""Check a built mlfs-edge wheel the way a user receives it.

1. ISA code present, from ``objdump -d`` of the wheel's ``_core*.so``: x86-64 AVX-512 (zmm
   instructions), aarch64 dotprod (sdot/udot) and i8mm (smmla/ummla/usmmla).
2. ISA code confined (``--archive``: the static library the extension was linked from, which keeps
   the symbols the stripped extension lost): an instruction beyond the architecture's baseline may
   only come from an object compiled for that ISA (``*_avx512.cpp.o`` ...), and there only in an
   internal-linkage function or one whose name carries the ISA. Anything else (an inline helper
   compiled with AVX and merged by the linker with its baseline twin) would make the extension
   need that ISA on every CPU.
3. Not required (unless ``--objdump-only``): a fresh venv holding only the wheel (``--no-deps``)
   and numpy (pinned by the constraints file) imports ``mlfs_edge._core`` under
   ``MLFS_ISA=scalar`` and runs ``python -m mlfs_edge.smoke --all-isas`` (kernels vs scalar and a
   tiny engine, under every ISA this CPU supports).

    scripts/check_wheel.py dist/mlfs_edge-*.whl --archive build/wheel/<tag>/libmlfs_native.a \\
        --constraints constraints.txt
    scripts/check_wheel.py dist-aarch64/*.whl --archive ... --objdump-only    # a cross-built wheel

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
from dataclasses import dataclass
from pathlib import Path

FUNCTION = re.compile(r"^[0-9a-f]+ <(.+)>:$")
OBJECT = re.compile(r"^(\S+\.o):\s+file format")


@dataclass(frozen=True)
class IsaRules:
    objdump: str
    patterns: dict[str, re.Pattern[str]]  # instruction class -> pattern over one disassembly line
    allowed: dict[str, tuple[str, ...]]  # instruction class -> ISA tags allowed to hold it
    required: str  # the class that must be present in the extension


def _insn(mnemonics: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*[0-9a-f]+:\s+(?:{mnemonics})\s")


RULES = {
    # x86-64: every VEX/EVEX instruction (mnemonic v...) is AVX; zmm and mask registers are AVX-512.
    "x86_64": IsaRules("objdump", {"avx": _insn(r"v[a-z0-9]+"), "avx512": re.compile(r"%zmm|%k[1-7]\b")},
                       {"avx": ("avx2", "avx512"), "avx512": ("avx512",)}, "avx512"),
    "aarch64": IsaRules("aarch64-linux-gnu-objdump",
                        {"dotprod": _insn(r"[su]dot"), "i8mm": _insn(r"[su]mmla|usmmla|usdot|sudot")},
                        {"dotprod": ("dotprod", "i8mm"), "i8mm": ("i8mm",)}, "i8mm"),
}


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
    machine = int.from_bytes(path.read_bytes()[18:20], "little")
    return {0x3E: "x86_64", 0xB7: "aarch64"}.get(machine, f"unknown ({machine:#x})")


def disassemble(rules: IsaRules, path: Path) -> str:
    objdump = rules.objdump if shutil.which(rules.objdump) else "objdump"
    proc = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        fail(f"{objdump} cannot disassemble {path} (another architecture?): {proc.stderr.strip()[:300]}")
    return proc.stdout


def count(rules: IsaRules, disassembly: str) -> dict[tuple[str, str], dict[str, int]]:
    """{(object, function): {instruction class: count}} for the functions holding any."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    obj, function = "", "?"
    for line in disassembly.splitlines():
        if m := OBJECT.match(line):
            obj = m.group(1)
        elif m := FUNCTION.match(line):
            function = m.group(1)
        else:
            for name, pattern in rules.patterns.items():
                if pattern.search(line):
                    per = counts.setdefault((obj, function), {})
                    per[name] = per.get(name, 0) + 1
    return counts


def local_functions(rules: IsaRules, archive: Path) -> set[tuple[str, str]]:
    """(object, demangled name) of the archive's internal-linkage functions (nm type 't')."""
    nm = rules.objdump.replace("objdump", "nm")
    nm = nm if shutil.which(nm) else "nm"
    out = subprocess.run([nm, "-C", "--defined-only", str(archive)], capture_output=True, text=True,
                         check=True).stdout
    local, obj = set(), ""
    for line in out.splitlines():
        if line.endswith(".o:"):
            obj = line[:-1]
        elif (parts := line.split(" ", 2)) and len(parts) == 3 and parts[1] == "t":
            local.add((obj, parts[2]))
    return local


def check_present(so: Path) -> str:
    arch = elf_machine(so)
    if arch not in RULES:
        fail(f"{so.name}: unexpected ELF machine {arch}")
    rules = RULES[arch]
    counts = count(rules, disassemble(rules, so))
    totals = {name: sum(c.get(name, 0) for c in counts.values()) for name in rules.patterns}
    if totals[rules.required] == 0:
        fail(f"{so.name} ({arch}) holds no {rules.required} instructions: the {rules.required} kernels are missing")
    return f"{arch} extension holds " + ", ".join(f"{n} {name} instructions" for name, n in totals.items())


def check_confined(archive: Path, arch: str) -> str:
    rules = RULES[arch]
    counts = count(rules, disassemble(rules, archive))
    local = local_functions(rules, archive)
    stray = []
    for (obj, function), per in counts.items():
        for name in per:
            tags = rules.allowed[name]
            from_isa_file = any(obj.endswith(f"_{tag}.cpp.o") for tag in tags)
            if not (from_isa_file and ((obj, function) in local or any(tag in function for tag in tags))):
                stray.append(f"{name} in {obj}: {function}")
    if stray:
        fail(f"{len(stray)} function(s) outside the ISA kernels use ISA instructions (the extension would need "
             "that ISA on every CPU):\n  " + "\n  ".join(stray[:10]))
    objects = sorted({obj for obj, _ in counts})
    return f"ISA instructions only in {', '.join(objects)} ({len(counts)} functions, all internal or ISA-named)"


def fresh_venv_smoke(wheel: Path, constraints: Path | None, python: str) -> None:
    with tempfile.TemporaryDirectory(prefix="mlfs-wheel-") as tmp:
        venv = Path(tmp) / "venv"
        t0 = time.perf_counter()
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        pins = ["-c", str(constraints)] if constraints else []
        # Only what the smoke test imports: numpy and the wheel itself (torch stays out of this venv).
        subprocess.run([*pip, *pins, "numpy"], check=True)
        subprocess.run([*pip, "--no-deps", str(wheel.resolve())], check=True)
        print(f"fresh venv with the wheel + numpy: {time.perf_counter() - t0:.1f} s")
        py = str(venv / "bin" / "python")
        # Run from the temp dir: the source tree's mlfs_edge must not shadow the installed one.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFS_ISA")}
        probe = "import mlfs_edge._core as c; print(c.__file__, c.selected_isa())"
        out = subprocess.run([py, "-c", probe], cwd=tmp, env={**env, "MLFS_ISA": "scalar"}, capture_output=True,
                             text=True, check=True).stdout.split()
        if not out[0].startswith(str(venv)):
            fail(f"mlfs_edge._core was imported from {out[0]}, not from the fresh venv")
        if out[1] != "scalar":
            fail(f"MLFS_ISA=scalar selected {out[1]!r}")
        print(f"import under MLFS_ISA=scalar: ok ({out[0]})")
        t0 = time.perf_counter()
        subprocess.run([py, "-m", "mlfs_edge.smoke", "--all-isas"], cwd=tmp, env=env, check=True)
        print(f"smoke test under every ISA: {time.perf_counter() - t0:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--archive", type=Path, default=None,
                        help="libmlfs_native.a of the same build (for the ISA confinement check)")
    parser.add_argument("--constraints", type=Path, default=None, help="pip constraints file pinning numpy")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the fresh venv")
    parser.add_argument("--objdump-only", action="store_true", help="skip the fresh-venv run (cross builds)")
    args = parser.parse_args()
    if not args.wheel.is_file():
        fail(f"no wheel at {args.wheel}")
    with tempfile.TemporaryDirectory() as tmp:
        so = extract_core(args.wheel, Path(tmp))
        print(f"{args.wheel.name}: {check_present(so)}")
        if args.archive is not None:
            if not args.archive.is_file():
                fail(f"no archive at {args.archive}")
            print(f"{args.archive}: {check_confined(args.archive, elf_machine(so))}")
    if not args.objdump_only:
        fresh_venv_smoke(args.wheel, args.constraints, args.python)
    print("check_wheel: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
