"""Installed-wheel smoke test: the native core imports, its kernels agree with the scalar reference,
and a tiny engine runs. Needs only numpy and mlfs_edge._core (no torch), so it runs in a fresh
venv holding just the wheel.

    python -m mlfs_edge.smoke              # under the ISA the dispatcher picks (MLFS_ISA honoured)
    python -m mlfs_edge.smoke --all-isas   # re-run under MLFS_ISA=each ISA this CPU supports,
                                           # compare their engine outputs with scalar, and check that
                                           # forcing an ISA the CPU lacks is a clean error

Exit status 0 when every check passes; a failed check raises (non-zero status, traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from mlfs_edge import _core

# A tiny BERT: odd sizes (head_dim 12, MLP 40) so the kernels' vector tails run too.
VOCAB, HIDDEN, HEADS, LAYERS, MLP, MAX_POS = 64, 48, 4, 2, 40, 16
DTYPES = ("fp32", "fp16", "int8")
# Engine outputs of one ISA against scalar's: float paths differ only by summation order / FMA;
# int8 may flip a rounding of a quantised activation.
ISA_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-3, "int8": 2e-2}


def _quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row, the scheme of mlfs_edge.quant.scheme (written in numpy: no torch here)."""
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8), scale


def check_gemm(isa: str, rng: np.random.Generator) -> dict[str, float]:
    """Each GEMM of `isa` against the scalar kernels; returns the max abs difference per dtype."""
    m, k, n = 5, 70, 37  # not multiples of any register tile
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    diffs = {}
    for name, packed in (("fp32", _core.pack_weight(w)), ("fp16", _core.pack_weight(w.astype(np.float16)))):
        got, want = (_core.gemm(x, packed, bias=bias, isa=i) for i in (isa, "scalar"))
        diffs[name] = float(np.abs(got - want).max())
        exact = x @ w.astype(np.float16 if name == "fp16" else np.float32).astype(np.float32).T + bias
        assert np.abs(want - exact).max() < 1e-3, f"scalar {name} GEMM disagrees with numpy"
    q, scale = _quantize_rows(w)
    packed = _core.pack_weight(q)
    got, want = (_core.gemm_i8(x, packed, scale, bias=bias, isa=i) for i in (isa, "scalar"))
    diffs["int8"] = float(np.abs(got - want).max())
    for name, diff in diffs.items():
        assert diff <= 1e-4, f"{isa} {name} GEMM differs from scalar by {diff:.3g}"
    return diffs


def tiny_packed_model(dtype: str, seed: int = 0) -> bytes:
    """A random tiny BERT encoder (mean pooling) as .mlfs bytes, laid out as runtime.packer writes it."""
    from mlfs_edge.runtime.format import ModelDims, encode

    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors: dict[str, np.ndarray] = {}

    def linear(name: str, out_f: int, in_f: int) -> None:
        w = rand(out_f, in_f, scale=1 / np.sqrt(in_f))
        if dtype == "int8":
            q, scale = _quantize_rows(w)
            tensors[f"{name}.w"], tensors[f"{name}.w.scale"] = _core.pack_weight(q), scale
        else:
            tensors[f"{name}.w"] = _core.pack_weight(w.astype(np.float16) if dtype == "fp16" else w)
        tensors[f"{name}.b"] = rand(out_f, scale=0.02)

    def norm(name: str) -> None:
        tensors[f"{name}.w"], tensors[f"{name}.b"] = 1 + rand(HIDDEN, scale=0.05), rand(HIDDEN, scale=0.05)

    word = rand(VOCAB, HIDDEN, scale=1.0)
    if dtype == "int8":
        tensors["emb.word"], tensors["emb.word.scale"] = _quantize_rows(word)
    else:
        tensors["emb.word"] = word.astype(np.float16) if dtype == "fp16" else word
    tensors["emb.pos"], tensors["emb.type"] = rand(MAX_POS, HIDDEN), rand(2, HIDDEN)
    norm("emb.ln")
    for i in range(LAYERS):
        for short in ("q", "k", "v", "o"):
            linear(f"l{i}.{short}", HIDDEN, HIDDEN)
        linear(f"l{i}.ff1", MLP, HIDDEN)
        linear(f"l{i}.ff2", HIDDEN, MLP)
        norm(f"l{i}.ln1")
        norm(f"l{i}.ln2")
    dims = ModelDims(LAYERS, HIDDEN, HEADS, HIDDEN // HEADS, MLP, VOCAB, MAX_POS, 2, 0, "mean", dtype, 1e-12)
    arch = {"family": "bert", "num_layers": LAYERS, "hidden": HIDDEN, "num_heads": HEADS, "num_kv_heads": HEADS,
            "head_dim": HIDDEN // HEADS, "intermediate": MLP, "vocab_size": VOCAB}
    return encode(dims, tensors, {"arch": arch, "labels": [], "pooling": "mean", "dtype": dtype})


def run_engines() -> dict[str, list[list[float]]]:
    """Each dtype's tiny engine on a padded batch; checks padding invariance and a sub-network."""
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.runtime import Engine

    ids = np.array([[1, 5, 9, 13, 17, 21, 25, 2], [1, 7, 11, 2, 0, 0, 0, 0]], dtype=np.int64)
    mask = (np.arange(8)[None, :] < np.array([[8], [4]])).astype(np.int64)
    outputs = {}
    for dtype in DTYPES:
        engine = Engine.from_bytes(tiny_packed_model(dtype))
        out = engine.run(ids, mask, threads=2)
        assert out.shape == (2, HIDDEN) and out.dtype == np.float32 and np.isfinite(out).all(), dtype
        # Padding must not leak: the short row alone, unpadded, gives the same embedding.
        alone = engine.run(ids[1:, :4].copy(), mask[1:, :4].copy())
        assert np.abs(alone - out[1:]).max() <= 1e-5, f"{dtype}: padding changes the output"
        small = engine.run(ids, mask, subnet=SubnetConfig((1,), (2,), (16,)))
        assert small.shape == (2, HIDDEN) and np.isfinite(small).all() and not np.allclose(small, out), dtype
        outputs[dtype] = out.tolist()
    return outputs


def check_current_isa(expect: str | None) -> dict[str, object]:
    isa = _core.selected_isa()
    if expect is not None:
        assert isa == expect, f"MLFS_ISA={expect} but the dispatcher selected {isa}"
    start = time.perf_counter()
    gemm = check_gemm(isa, np.random.default_rng(0))
    engines = run_engines()
    return {"arch": _core.arch(), "isa": isa, "supported": _core.supported_isas(), "gemm_max_diff": gemm,
            "engine": engines, "seconds": round(time.perf_counter() - start, 3)}


def _child(isa: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFS_ISA": isa}
    # MLFS_SMOKE_LAUNCHER prefixes each child interpreter, e.g. "qemu-aarch64-static -L /sysroot" when
    # this smoke test itself runs under qemu-user, which cannot exec a foreign binary on its own.
    launcher = shlex.split(os.environ.get("MLFS_SMOKE_LAUNCHER", ""))
    return subprocess.run([*launcher, sys.executable, "-m", "mlfs_edge.smoke", "--json"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def check_all_isas() -> None:
    isas = list(_core.supported_isas())
    results = {}
    for isa in isas:
        proc = _child(isa)
        if proc.returncode != 0:
            raise SystemExit(f"smoke test under MLFS_ISA={isa} failed (exit {proc.returncode}):\n{proc.stderr}")
        results[isa] = json.loads(proc.stdout)
        print(f"MLFS_ISA={isa:8s} ok: GEMM max |isa - scalar| "
              + ", ".join(f"{k} {v:.1e}" for k, v in results[isa]["gemm_max_diff"].items())
              + f"; engine fp32/fp16/int8 ran ({results[isa]['seconds']:.2f} s)")
    for isa in isas[1:]:
        for dtype in DTYPES:
            got, want = (np.array(results[i]["engine"][dtype]) for i in (isa, "scalar"))
            diff = float(np.abs(got - want).max())
            assert diff <= ISA_TOLERANCE[dtype], f"engine {dtype} under {isa} differs from scalar by {diff:.3g}"
            print(f"engine {dtype} {isa} vs scalar: max abs diff {diff:.2e}")
    # An ISA of the other architecture (or an unknown name) must be a clean error, never SIGILL.
    foreign = "neon" if _core.arch() == "x86_64" else "avx512"
    proc = _child(foreign)
    assert proc.returncode == 1 and f"MLFS_ISA={foreign}" in proc.stderr, (
        f"MLFS_ISA={foreign} should fail cleanly, got exit {proc.returncode}: {proc.stderr[-300:]}")
    print(f"MLFS_ISA={foreign} on {_core.arch()}: refused with a clean error (as it should be)")
    print(f"smoke ok: {_core.arch()}, ISAs {', '.join(isas)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlfs_edge.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--all-isas", action="store_true", help="run under every supported MLFS_ISA and compare")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (used by --all-isas)")
    args = parser.parse_args(argv)
    if args.all_isas:
        check_all_isas()
        return 0
    result = check_current_isa(os.environ.get("MLFS_ISA") or None)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"smoke ok: {result['arch']} ISA {result['isa']} (supported: {', '.join(result['supported'])}); "
              f"GEMM max |isa - scalar| {result['gemm_max_diff']}; tiny engine fp32/fp16/int8 ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
