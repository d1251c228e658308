"""Engine benchmark: the mlfs engine beside PyTorch, ONNX Runtime (and ExecuTorch when it exports),
all in ONE process on the same input, for the full MiniLM and a ~50 % sub-network.

Backends are timed round-robin (one run of each in turn, `runs` rounds after a warm-up), so load from
other processes on a shared machine hits them all alike; compare the rows of one run as ratios.
Used by ``mlfs-edge bench engine`` and ``benchmarks/bench_engine.py``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.runtime.engine import Engine, cpu_model


@dataclass
class Backend:
    name: str
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


def _onnx_sessions(model: Any, ids: np.ndarray, mask: np.ndarray, workdir: Path, tag: str,
                   threads: int) -> dict[str, Any]:
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = workdir / f"{tag}.onnx"
    int8 = workdir / f"{tag}-int8.onnx"

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    with torch.no_grad():
        torch.onnx.export(LastHidden(model), (torch.from_numpy(ids), torch.from_numpy(mask)), str(fp32),
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"], dynamo=False,
                          opset_version=17)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = {}
    for name, path in (("onnxruntime-fp32", fp32), ("onnxruntime-int8", int8)):
        out[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return out


def _executorch_runner(model: Any, ids: np.ndarray, mask: np.ndarray) -> tuple[Callable[[], Any] | None, str]:
    """An ExecuTorch XNNPACK fp32 runner from mlfs_edge.export (owned by the export work), or (None, why not).

    Expects ``mlfs_edge.export.xnnpack_runner(model, input_ids, attention_mask) -> callable``.
    """
    from mlfs_edge import export as export_pkg

    make_runner = getattr(export_pkg, "xnnpack_runner", None)
    if make_runner is None:
        return None, "mlfs_edge.export provides no xnnpack_runner on this branch yet"
    try:
        return make_runner(model, ids, mask), ""
    except Exception as e:
        return None, f"export failed: {type(e).__name__}: {e}"


def build_backends(model_dir: Path, workdir: Path, seq: int, threads: int,
                   log: Callable[[str], None] = print) -> tuple[list[Backend], dict[str, Engine], np.ndarray,
                                                                 np.ndarray, list[str]]:
    import torch
    from transformers import AutoModel

    from mlfs_edge.runtime.packer import pack
    from mlfs_edge.supernet import extract

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    arch = ArchSpec.from_hf_config(model.config)
    ids = np.random.default_rng(0).integers(1000, arch.vocab_size, size=(1, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    engines: dict[str, Engine] = {}
    for dtype in ("fp32", "fp16", "int8"):
        log(f"packing {dtype}")
        engines[dtype] = Engine.load(pack(model, workdir / f"minilm-{dtype}.mlfs", dtype=dtype))
    subnets = {"full": SubnetConfig.full(arch), "half": half_subnet(arch)}
    backends: list[Backend] = []
    skipped: list[str] = []
    tid, tmask = torch.from_numpy(ids), torch.from_numpy(mask)
    for label, cfg in subnets.items():
        sub = "full" if label == "full" else cfg.name
        for dtype, engine in engines.items():
            backends.append(Backend(f"mlfs-{dtype}", sub, _engine_params(engine, cfg), threads,
                                    lambda e=engine, c=cfg: e.run(ids, mask, subnet=c, threads=threads), []))
        torch_model = model if label == "full" else extract(model, cfg).eval()
        params = _torch_params(torch_model)
        qmodel = torch.ao.quantization.quantize_dynamic(torch_model, {torch.nn.Linear}, dtype=torch.qint8)

        def torch_call(m: Any = torch_model) -> Any:
            with torch.inference_mode():
                return m(input_ids=tid, attention_mask=tmask).last_hidden_state

        def torch_q_call(m: Any = qmodel) -> Any:
            with torch.inference_mode():
                return m(input_ids=tid, attention_mask=tmask).last_hidden_state

        backends.append(Backend("torch-fp32", sub, params, threads, torch_call, []))
        backends.append(Backend("torch-int8-dynamic", sub, params, threads, torch_q_call, []))
        log(f"exporting ONNX ({sub})")
        try:
            for name, sess in _onnx_sessions(torch_model, ids, mask, workdir, label, threads).items():
                backends.append(Backend(name, sub, params, threads,
                                        lambda s=sess: s.run(None, {"input_ids": ids, "attention_mask": mask}), []))
        except Exception as e:
            skipped.append(f"onnxruntime ({sub}): {type(e).__name__}: {e}")
        runner, why = _executorch_runner(torch_model, ids, mask)
        if runner is None:
            skipped.append(f"executorch-xnnpack-fp32 ({sub}): {why}")
        else:
            backends.append(Backend("executorch-xnnpack-fp32", sub, params, threads, runner, []))
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


def switch_cost_us(engine: Engine, arch: ArchSpec, repeats: int = 300) -> dict[str, float]:
    """What changing sub-network costs on a loaded engine. Nothing is copied or reloaded, so the cost is
    bounded by a whole forward pass with the new config: a 1-token, 1-layer run alternating between two
    configs is timed next to the same run repeating one config."""
    ids = np.array([[101]], np.int64)
    mask = np.ones_like(ids)
    a = SubnetConfig((0,), (arch.num_heads,), (arch.intermediate,))
    b = SubnetConfig((0,), (arch.num_heads // 2,), (arch.intermediate // 2,))

    def timed(cfgs: list[SubnetConfig]) -> float:
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            engine.run(ids, mask, subnet=cfgs[i % 2])
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    for _ in range(20):
        engine.run(ids, mask, subnet=a)
    before = engine.workspace_bytes  # after the first run sized the buffers
    return {"run_after_switch_us": timed([a, b]), "run_same_config_us": timed([a, a]),
            "workspace_bytes_changed": engine.workspace_bytes - before}


_RSS_PROBE = """
import json, sys
def rss(field):
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))
import numpy as np
from mlfs_edge.runtime import Engine
base = rss('VmRSS:')
engine = Engine.load(sys.argv[1])
ids = np.random.default_rng(0).integers(1000, 2000, size=(1, int(sys.argv[2])), dtype=np.int64)
for _ in range(3):
    engine.run(ids, np.ones_like(ids))
print(json.dumps({"bare_rss": base, "peak_rss": rss('VmHWM:'), "file_size": engine.file_size,
                  "workspace_bytes": engine.workspace_bytes}))
"""


def peak_rss(path: Path, seq: int) -> dict[str, float]:
    """Peak RSS of a fresh interpreter that loads `path` and runs it, over the interpreter with numpy and
    the runtime imported (torch is not needed to run a packed model)."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path), str(seq)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    over = r["peak_rss"] - r["bare_rss"]
    return {**r, "rss_over_bare": over, "ratio_to_file": over / r["file_size"]}


def run_benchmark(model_dir: Path, seq: int = 128, threads: int = 1, runs: int = 30,
                  json_path: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
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
        rss = peak_rss(workdir / "minilm-int8.mlfs", seq)
        sizes = {dtype: e.file_size for dtype, e in engines.items()}
    rows = [{"backend": b.name, "subnet": b.subnet, "params": b.params, "threads": b.threads, "seq": seq,
             "ms_median": round(statistics.median(b.times_ms), 3), "ms_min": round(min(b.times_ms), 3),
             "ms_max": round(max(b.times_ms), 3)} for b in backends]
    result = {"rows": rows, "cpu": {"model": cpu_model(), "machine": platform.machine(),
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
        from mlfs_edge.runtime.format import atomic_write_text

        atomic_write_text(json_path, json.dumps(result, indent=2))
        print(f"wrote {json_path}")
    return result


def ratios(rows: list[dict[str, Any]], threads: int) -> dict[str, float]:
    """The target ratios of the issue, from the medians of one run (missing backends are left out)."""
    med = {(r["backend"], r["subnet"], r["threads"]): r["ms_median"] for r in rows}

    def get(backend: str, t: int = threads) -> float | None:
        return med.get((backend, "full", t))

    pairs = {
        "mlfs-int8 / torch-int8-dynamic": (get("mlfs-int8"), get("torch-int8-dynamic")),
        "mlfs-int8 / onnxruntime-int8": (get("mlfs-int8"), get("onnxruntime-int8")),
        "mlfs-fp32 / torch-fp32": (get("mlfs-fp32"), get("torch-fp32")),
        "mlfs-fp16 / mlfs-fp32": (get("mlfs-fp16"), get("mlfs-fp32")),
        "mlfs-fp32 speed-up 2 vs 1 threads": (get("mlfs-fp32", 1), get("mlfs-fp32", 2)),
        "mlfs-int8 speed-up 2 vs 1 threads": (get("mlfs-int8", 1), get("mlfs-int8", 2)),
    }
    return {k: a / b for k, (a, b) in pairs.items() if a and b}
