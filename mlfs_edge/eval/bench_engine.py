"""Engine benchmark: the mlfs engine beside PyTorch, ONNX Runtime and ExecuTorch, all in ONE process
on the same input, for the full MiniLM and a ~50 % sub-network, every dtype each runtime offers —
built and loaded through the same backend adapters as `mlfs-edge compare` (``mlfs_edge.eval.backends``).

Backends are timed round-robin (one run of each in turn, `runs` rounds after a warm-up), so load from
other processes on a shared machine hits them all alike; compare the rows of one run as ratios.
Used by ``mlfs-edge bench engine`` and ``benchmarks/bench_engine.py``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.eval.backends import ADAPTERS, Subject
from mlfs_edge.runtime.benchmark import peak_rss, switch_cost_us
from mlfs_edge.runtime.engine import Engine, cpu_model

ORDER = ("mlfs", "pytorch", "onnxruntime", "executorch")  # row order of the table


@dataclass
class Backend:
    name: str  # "<runtime>-<dtype>", e.g. "onnxruntime-int8"
    subnet: str
    params: int
    threads: int
    fn: Callable[[], Any]
    times_ms: list[float]


def half_subnet(arch: ArchSpec) -> SubnetConfig:
    """The ~50 % sub-network: every layer, half the heads, half the MLP channels."""
    return SubnetConfig.uniform(arch, heads=arch.num_heads // 2, mlp=arch.intermediate // 2)


def _torch_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _engine_params(engine: Engine, cfg: SubnetConfig) -> int:
    """Layer parameters of the sub-network + the embeddings and their LayerNorm (what torch counts,
    less the unused pooler)."""
    dims, arch = engine._core.dims, engine.arch
    tables = arch.vocab_size + dims["max_positions"] + dims["type_vocab_size"]
    return cfg.layer_params(arch) + tables * arch.hidden + 2 * arch.hidden


def build_backends(model_dir: Path, workdir: Path, seq: int, threads: int,
                   log: Callable[[str], None] = print) -> tuple[list[Backend], dict[str, Engine], np.ndarray,
                                                                 np.ndarray, list[str]]:
    """Every (runtime, dtype) of the full model and its ~50 % sub-network, loaded and ready to time;
    the engine by dtype (one packed file each, loaded once); the input; and what could not be built."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    arch = ArchSpec.from_hf_config(model.config)
    ids = np.random.default_rng(0).integers(1000, arch.vocab_size, size=(1, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    backends: list[Backend] = []
    skipped: list[str] = []
    engines: dict[str, Engine] = {}
    for label, cfg in {"full": SubnetConfig.full(arch), "half": half_subnet(arch)}.items():
        # a bare encoder: every runtime returns the masked-mean sentence embedding
        subject = Subject(model, tokenizer, cfg, output="embedding", max_length=max(seq, 2))
        sub = "full" if label == "full" else cfg.name
        for name in ORDER:
            adapter = ADAPTERS[name]
            log(f"building {name} {', '.join(adapter.DTYPES)} ({sub})")
            try:
                artefacts = adapter.build(subject, adapter.DTYPES, workdir)
                for dtype, artefact in artefacts.items():
                    runner = adapter.load(artefact, dtype, threads)
                    if name == "mlfs":
                        if dtype not in engines:  # both sub-networks run from the same packed file
                            engines[dtype] = Engine.load(artefact["path"])
                        params = _engine_params(engines[dtype], cfg)
                    else:
                        params = _torch_params(subject.model)
                    backends.append(Backend(f"{name}-{dtype}", sub, params, threads,
                                            lambda r=runner: r.predict(ids, mask), []))
            except Exception as e:  # one runtime failing to build must not hide the others' numbers
                skipped.append(f"{name} ({sub}): {type(e).__name__}: {e}")
    return backends, engines, ids, mask, skipped


def time_round_robin(backends: list[Backend], runs: int, warmup: int = 3,
                     progress: Callable[[int], None] | None = None) -> None:
    for b in backends:
        for _ in range(warmup):
            b.fn()
    for r in range(runs):
        for b in backends:
            t0 = time.perf_counter()
            b.fn()
            b.times_ms.append((time.perf_counter() - t0) * 1e3)
        if progress:
            progress(r)


def run_benchmark(model_dir: Path, seq: int = 128, threads: int = 1, runs: int = 30,
                  json_path: Path | None = None, log: Callable[[str], None] = print,
                  command: str = "") -> dict[str, Any]:
    from tqdm.auto import tqdm

    from mlfs_edge.report import markdown_table

    if runs < 1:
        raise ValueError("runs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="mlfs-bench-") as tmp:
        workdir = Path(tmp)
        backends, engines, ids, mask, skipped = build_backends(model_dir, workdir, seq, threads, log)
        arch = engines["fp32"].arch
        # Thread scaling of the engine itself: the same full network at 1 and 2 threads.
        full_params = _engine_params(engines["fp32"], SubnetConfig.full(arch))
        for dtype in ("fp32", "int8"):
            for n in sorted({1, 2} - {threads}):
                backends.append(Backend(f"mlfs-{dtype}", "full", full_params, n,
                                        lambda e=engines[dtype], n=n: e.run(ids, mask, threads=n), []))
        bar = tqdm(total=runs, desc=f"timing {len(backends)} backends round-robin", unit="round")
        time_round_robin(backends, runs, progress=lambda _: bar.update())
        bar.close()
        switch = switch_cost_us(engines["int8"], arch)
        rss = peak_rss(Path(engines["int8"].path), seq)
        sizes = {dtype: e.file_size for dtype, e in engines.items()}
    rows = [{"backend": b.name, "subnet": b.subnet, "params": b.params, "threads": b.threads, "seq": seq,
             "ms_median": round(statistics.median(b.times_ms), 3), "ms_min": round(min(b.times_ms), 3),
             "ms_max": round(max(b.times_ms), 3)} for b in backends]
    result = {"command": command, "rows": rows, "cpu": {"model": cpu_model(), "machine": platform.machine(),
                                    "logical_cpus": os.cpu_count()},
              "runs": runs, "switch": switch, "memory": rss, "file_sizes": sizes, "skipped": skipped,
              "ratios": ratios(rows, threads)}
    print(markdown_table(rows))
    for s in skipped:
        print(f"skipped: {s}")
    print(f"\nsub-network switch on a loaded engine: < {switch['run_after_switch_us']:.1f} us, the whole 1-token "
          f"forward with the new config (same config: {switch['run_same_config_us']:.1f} us); workspace bytes "
          f"changed: {switch['workspace_bytes_changed']}, weights copied: 0 (slices are strides)")
    print(f"int8 engine peak RSS over the bare interpreter: {rss['rss_over_bare'] / 2**20:.1f} MiB = "
          f"{rss['ratio_to_file']:.2f} x the packed file ({rss['file_size'] / 2**20:.1f} MiB)")
    print("ratios (same run): " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()))
    if json_path:
        from mlfs_edge.atomic import write_atomically

        payload = json.dumps(result, indent=2)
        write_atomically(Path(json_path), lambda tmp: tmp.write_text(payload))
        print(f"wrote {json_path}")
    return result


def ratios(rows: list[dict[str, Any]], threads: int) -> dict[str, float]:
    """The engine against each runtime's same dtype, from the medians of one run (backends that were
    not measured are left out, not invented)."""
    med = {(r["backend"], r["subnet"], r["threads"]): r["ms_median"] for r in rows}

    def get(backend: str, t: int = threads) -> float | None:
        return med.get((backend, "full", t))

    pairs = {f"mlfs-{d} / {peer}-{d}": (get(f"mlfs-{d}"), get(f"{peer}-{d}"))
             for d in ("fp32", "fp16", "int8") for peer in ("pytorch", "onnxruntime", "executorch")}
    pairs.update({
        "mlfs-fp16 / mlfs-fp32": (get("mlfs-fp16"), get("mlfs-fp32")),
        "mlfs-fp32 speed-up 2 vs 1 threads": (get("mlfs-fp32", 1), get("mlfs-fp32", 2)),
        "mlfs-int8 speed-up 2 vs 1 threads": (get("mlfs-int8", 1), get("mlfs-int8", 2)),
    })
    return {k: a / b for k, (a, b) in pairs.items() if a and b}
