"""int8 vs fp16 vs fp32, per sub-network and backend: accuracy, agreement, size, latency, memory.

``run_compare(...)`` builds the artefacts of each sub-network (a Hugging Face folder for PyTorch,
``.pte`` files for ExecuTorch, ONNX files for ONNX Runtime) under ``work_dir`` and measures each
(sub-network, dtype, backend) in a fresh subprocess, so that threads, imports and memory do not leak
from one measurement into the next. Rows::

    {"subnet", "dtype", "backend", "accuracy", "agreement", "size_bytes", "ms_median", "threads",
     "peak_rss_mb"}

- accuracy: on the test split (each sentence at batch 1 and its own length, as an app runs it);
- agreement: share of test sentences where the prediction equals the fp32 PyTorch model's;
- size_bytes: the artefact on disk (.pte, .onnx) or the model's weights in memory for PyTorch
  (``mlfs_edge.quant.model_size_bytes``);
- ms_median: median latency of one forward at batch 1, ``seq_len`` (128) real tokens, for each
  thread count (one row per thread count; accuracy and memory are shared by those rows);
- peak_rss_mb: the peak resident set (VmHWM) of the measuring subprocess: interpreter,
  runtime libraries, the model and the work above. It is an absolute figure per backend, comparable
  between dtypes of a backend; the libraries a backend imports are part of it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKENDS = ("pytorch", "executorch", "onnxruntime", "mlfs")
DTYPES = ("fp32", "fp16", "int8")
ROW_KEYS = ("subnet", "dtype", "backend", "accuracy", "agreement", "size_bytes", "ms_median", "threads",
            "peak_rss_mb")
QUICK_TEST_SENTENCES = 500
MAX_LENGTH = 128  # longest test input, and the .pte exports' dynamic-length bound


@dataclass(frozen=True)
class CompareSettings:
    dtypes: tuple[str, ...] = DTYPES
    backends: tuple[str, ...] = ("pytorch", "executorch", "onnxruntime", "mlfs")
    threads: tuple[int, ...] = (1, 2)
    seq_len: int = 128
    latency_runs: int = 20
    max_test: int | None = None  # None: the whole test split
    data: str = "rotten_tomatoes"
    text_column: str = "text"
    label_column: str = "label"

    def validate(self) -> CompareSettings:
        for d in self.dtypes:
            if d not in DTYPES:
                raise ValueError(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
        for b in self.backends:
            if b not in BACKENDS:
                raise ValueError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        if not self.dtypes or not self.backends:
            raise ValueError("give at least one dtype and one backend")
        if any(t < 1 for t in self.threads) or self.latency_runs < 1:
            raise ValueError("threads and latency runs must be at least 1")
        return self


# --- the palette ------------------------------------------------------------------------------------

def load_source(model_dir: str | Path):  # noqa: ANN201
    """The model sub-networks are sliced from, its tokenizer and its search space.

    A trained supernet folder (``mlfs_meta.json`` with a "supernet" entry, search space in the run's
    ``mlfs_train.json``) is already importance-ordered; a fine-tuned teacher is reordered here
    (weight importance, function-preserving) so that its prefixes are the best slices.
    """
    import mlfs_edge.supernet as supernet
    from mlfs_edge.config import ArchSpec, SearchSpace
    from mlfs_edge.models import load_classifier

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no config.json): give a training run folder "
                                "(`mlfs-edge demo` writes runs/demo), a trained supernet or a fine-tuned classifier")
    config = json.loads((model_dir / "config.json").read_text())
    labels = [config.get("id2label", {}).get(str(i), str(i)) for i in range(len(config.get("id2label", {})) or 2)]
    model, tokenizer = load_classifier(model_dir, len(labels), labels)
    meta_path = model_dir / "mlfs_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    arch = ArchSpec.from_hf_config(model.config)
    train_json = model_dir.parent / "mlfs_train.json"
    if "supernet" in meta and train_json.is_file():
        space = SearchSpace.from_dict(arch, json.loads(train_json.read_text())["search_space"])
    else:
        supernet.reorder_by_importance(model, method="weight")
        space = SearchSpace.default(arch)
    return model.eval(), tokenizer, space


def default_palette(space: Any) -> list[Any]:
    """Three sub-networks of the space: the largest, a middle one and the smallest."""
    mid = space.config(space.depths[len(space.depths) // 2], space.heads[len(space.heads) // 2],
                       space.mlp[len(space.mlp) // 2])
    palette = [space.largest(), mid, space.smallest()]
    return list(dict.fromkeys(palette))


def parse_subnets(specs: Sequence[str], space: Any) -> list[Any]:
    """Sub-networks from the command line (see ``SubnetConfig.parse``), each checked against the space."""
    from mlfs_edge.config import SubnetConfig

    out = []
    for spec in specs:
        cfg = SubnetConfig.parse(spec, space.arch)
        if not space.contains(cfg) and cfg != SubnetConfig.full(space.arch):
            raise ValueError(f"sub-network {cfg.name} is outside the search space (depths {list(space.depths)}, "
                             f"heads {list(space.heads)}, mlp {list(space.mlp)}, layer policy "
                             f"{space.layer_policy}); pick values from those lists")
        out.append(cfg)
    return out


# --- artefacts ------------------------------------------------------------------------------------

def build_artefacts(model: Any, tokenizer: Any, cfg: Any, dtypes: Sequence[str], backends: Sequence[str],
                    work_dir: Path, calibration: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (backend, dtype): what a worker loads. Exports are reused when their manifest says they
    were made for the same sub-network and dtype (a re-run only measures)."""
    from mlfs_edge.export import ExportConfig, Manifest, export_pte
    from mlfs_edge.supernet import extract

    sub = extract(model, cfg)
    sub_dir = work_dir / cfg.name
    hf_dir = sub_dir / "hf"
    if not (hf_dir / "config.json").is_file():
        from mlfs_edge.models import save_atomically

        save_atomically(sub, tokenizer, hf_dir, {"subnet": cfg.to_dict()})
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    for dtype in dtypes:
        if "pytorch" in backends:
            jobs["pytorch", dtype] = {"path": str(hf_dir)}
        if "executorch" in backends:
            manifest = sub_dir / "pte" / f"{cfg.name}-{dtype}.json"
            try:
                reuse = Manifest.read(manifest).subnet == cfg.to_dict()
            except (OSError, ValueError):
                reuse = False
            if not reuse:
                manifest = export_pte(sub, tokenizer, sub_dir / "pte", f"{cfg.name}-{dtype}",
                                      ExportConfig(dtype=dtype, output="logits", max_length=MAX_LENGTH,
                                                   calibration_texts=tuple(calibration)),
                                      subnet=cfg.to_dict())
            jobs["executorch", dtype] = {"path": str(manifest)}
        if "mlfs" in backends:
            # The engine runs any sub-network straight from the one packed supernet (prefix slices),
            # so the whole model is packed once per dtype; size_bytes is that one file's size.
            jobs["mlfs", dtype] = {"path": str(_packed_file(model, tokenizer, work_dir / "mlfs", "supernet", dtype)),
                                   "subnet": cfg.to_dict()}
        if "onnxruntime" in backends and dtype in ("fp32", "int8"):
            jobs["onnxruntime", dtype] = {"path": str(_onnx_file(sub, sub_dir / "onnx", dtype)),
                                          "tokenizer": str(hf_dir)}
    return jobs


def _packed_file(model: Any, tokenizer: Any, out_dir: Path, name: str, dtype: str) -> Path:
    """The model in the native engine's packed file (same int8 scheme as everywhere)."""
    from mlfs_edge.runtime import pack

    path = out_dir / f"{name}-{dtype}.mlfs"
    if not path.is_file():
        pack(model, path, dtype=dtype, tokenizer=tokenizer)
    return path


def _onnx_file(sub: Any, out_dir: Path, dtype: str) -> Path:
    """fp32 ONNX of the logits wrapper (dynamic length), and its ONNX Runtime dynamic int8
    quantisation (per channel): the outside reference for our int8."""
    from mlfs_edge.atomic import write_atomically

    fp32 = out_dir / "model-fp32.onnx"
    if not fp32.is_file():
        import torch
        from torch.export import Dim

        from mlfs_edge.export import EncoderForExport

        wrapper = EncoderForExport(sub, "logits").eval()
        seq = Dim("seq", min=2, max=MAX_LENGTH)
        example = (torch.ones(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long))

        def write_fp32(tmp: Path) -> None:
            program = torch.onnx.export(wrapper, example, dynamo=True, input_names=["input_ids", "attention_mask"],
                                        output_names=["logits"],
                                        dynamic_shapes={"input_ids": {1: seq}, "attention_mask": {1: seq}},
                                        external_data=False, verbose=False)
            program.save(str(tmp))

        write_atomically(fp32, write_fp32)
    if dtype == "fp32":
        return fp32
    int8 = out_dir / "model-int8.onnx"
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        write_atomically(int8, lambda tmp: quantize_dynamic(str(fp32), str(tmp), per_channel=True,
                                                            weight_type=QuantType.QInt8))
    return int8


# --- measuring (in a subprocess) ------------------------------------------------------------------------

def _measure(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: load one artefact, predict the (already tokenized) test sentences at
    batch 1, time the seq_len input per thread count. Imports only what the backend needs (the ONNX
    Runtime worker does not import torch), so peak RSS is that backend's."""
    import numpy as np

    threads = job["threads"]
    predict, set_threads, size = _load_backend(job["backend"], job["dtype"], job["path"], job.get("subnet"),
                                               max(threads))
    set_threads(max(threads))
    preds = []
    for ids in job["inputs"]:
        x = np.asarray([ids], dtype=np.int64)
        preds.append(int(np.argmax(predict(x, np.ones_like(x))[0])))
    x = np.asarray([job["latency_ids"]], dtype=np.int64)
    mask = np.ones_like(x)
    latency = {}
    for n in threads:
        set_threads(n)
        for _ in range(3):
            predict(x, mask)
        times = []
        for _ in range(job["runs"]):
            t0 = time.perf_counter()
            predict(x, mask)
            times.append((time.perf_counter() - t0) * 1e3)
        latency[n] = statistics.median(times)
    return {"predictions": preds, "latency_ms": latency, "size_bytes": size, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident set since exec (VmHWM). Not ru_maxrss: on Linux that survives
    exec and would report the parent's size, copied into the child at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tokenize(tokenizer: Any, texts: list[str], max_length: int, seq_len: int,
              window_texts: list[str] | None = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of each text (no padding: batch 1 at its own length) and a latency input of exactly
    `seq_len` real tokens (sentences of `window_texts`, default `texts`, joined until they fill it)."""
    inputs = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    window = tokenizer(" ".join((window_texts or texts)[:200]), truncation=True, max_length=seq_len)["input_ids"]
    if len(window) < seq_len:
        raise ValueError(f"the test sentences are too short to fill {seq_len} tokens; lower the sequence length")
    return inputs, window


def _load_backend(backend: str, dtype: str, path: str, subnet: dict[str, Any] | None = None,
                  threads: int = 1) -> tuple[Any, Any, int]:
    """(predict(ids, mask) -> logits, set_threads(n), size_bytes) for one artefact; numpy in and out.
    `threads`: the count to start with (ExecuTorch can take no other: see below)."""
    if backend == "onnxruntime":
        import onnxruntime as ort

        sessions: dict[int, Any] = {}
        current = [1]

        def set_ort_threads(n: int) -> None:
            if n not in sessions:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = n
                opts.inter_op_num_threads = 1
                sessions[n] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            current[0] = n

        def predict_ort(ids: Any, mask: Any) -> Any:
            return sessions[current[0]].run(None, {"input_ids": ids, "attention_mask": mask})[0]

        return predict_ort, set_ort_threads, os.path.getsize(path)
    if backend == "mlfs":
        from mlfs_edge.config import SubnetConfig
        from mlfs_edge.runtime import Engine

        engine = Engine.load(path)
        active = SubnetConfig.from_dict(subnet) if subnet else None
        engine_threads = [1]

        def predict_mlfs(ids: Any, mask: Any) -> Any:
            return engine.run(ids, mask, subnet=active, threads=engine_threads[0])

        return predict_mlfs, lambda n: engine_threads.__setitem__(0, n), engine.file_size
    import torch

    if backend == "pytorch":
        from transformers import AutoModelForSequenceClassification

        import mlfs_edge.supernet  # noqa: F401  (registers the narrow-head BERT with the Auto classes)
        from mlfs_edge.quant import Fp16Config, Int8Config, model_size_bytes, quantize

        model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager").eval()
        if dtype != "fp32":
            quantize(model, Fp16Config() if dtype == "fp16" else Int8Config())

        def predict_torch(ids: Any, mask: Any) -> Any:
            with torch.inference_mode():
                ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
                return model(input_ids=ids_t, attention_mask=mask_t).logits.float().numpy()

        return predict_torch, torch.set_num_threads, model_size_bytes(model)
    if backend == "executorch":
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        from mlfs_edge.export import PteModel

        # ExecuTorch 1.5's threadpool may only be resized before a program is loaded: its XNNPACK
        # delegate keeps the pool it was loaded with, and a resize afterwards corrupts the heap (seen
        # here: hangs, segfaults and malloc aborts in fp16 programs). One process per thread count.
        _unsafe_reset_threadpool(threads)
        pte = PteModel(path, load_tokenizer=False)

        def predict_pte(ids: Any, mask: Any) -> Any:
            return pte.forward(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

        def fixed_threads(n: int) -> None:
            if n != threads:
                raise ValueError(f"an ExecuTorch worker runs at the {threads} thread(s) it was loaded with, not {n}")

        return predict_pte, fixed_threads, pte.size_bytes
    raise ValueError(f"backend {backend!r} cannot be measured here")


def _run_worker(job: dict[str, Any], timeout_s: float = 1200) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Each worker sets its backend's thread count itself. An inherited OMP_NUM_THREADS=1 also makes
    # ExecuTorch 1.5's threadpool hang in its first fp16 XNNPACK forward after a reset to 1 thread.
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-m", "mlfs_edge.eval.compare", "--worker"], input=json.dumps(job),
                          capture_output=True, text=True, env=env, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    if proc.returncode != 0 or "error" in result:
        raise RuntimeError(f"measuring {job['backend']} {job['dtype']} of {job['path']} failed: {result.get('error')}")
    return result


# --- the comparison -------------------------------------------------------------------------------

def mlfs_unavailable_reason() -> str | None:
    """Why the native-engine rows are left out (None when the engine can run them)."""
    try:
        from mlfs_edge.runtime import Engine, pack  # noqa: F401
    except ImportError as e:
        return f"the native engine (mlfs_edge.runtime.Engine/pack) is not in this build: {e}"
    return None


def run_compare(model_dir: str | Path, subnets: Sequence[str] | None = None, work_dir: str | Path = "runs/compare",
                settings: CompareSettings = CompareSettings(), quick: bool = False,
                progress: bool = True) -> list[dict[str, Any]]:
    """Compare the sub-networks of `model_dir` across dtypes and backends; return the rows.

    `subnets`: command-line specs (``SubnetConfig.parse``); None: ``default_palette`` (its smallest
    sub-network with `quick`, which also keeps 500 test sentences and 5 timed runs).
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    from mlfs_edge.data import load_classification
    from mlfs_edge.models import check_labels

    settings.validate()
    if quick:
        settings = replace(settings, max_test=settings.max_test or QUICK_TEST_SENTENCES,
                           latency_runs=min(settings.latency_runs, 5))
    model, tokenizer, space = load_source(model_dir)
    cfgs = parse_subnets(subnets, space) if subnets else default_palette(space)
    if quick:
        cfgs = cfgs[-1:] if not subnets else cfgs[:1]  # the palette's smallest: the fastest to export
    data = load_classification(settings.data, settings.text_column, settings.label_column)
    check_labels(model_dir, data.label_names, data.name)
    test = data.test.subset(settings.max_test)
    backends = list(settings.backends)
    if "mlfs" in backends:
        reason = mlfs_unavailable_reason()
        if reason:
            print(f"[compare] no mlfs rows: {reason}")
            backends.remove("mlfs")
    work_dir = Path(work_dir)
    inputs, window = _tokenize(tokenizer, test.texts, MAX_LENGTH, settings.seq_len, data.test.texts)
    rows: list[dict[str, Any]] = []
    for cfg in cfgs:
        if progress:
            print(f"[compare] {cfg.name}: building artefacts ({', '.join(settings.dtypes)} for {', '.join(backends)})")
        jobs = build_artefacts(model, tokenizer, cfg, settings.dtypes, backends, work_dir,
                               data.train.texts[:64])
        reference = None
        if ("pytorch", "fp32") not in jobs:
            jobs = {("pytorch", "fp32"): {"path": str(work_dir / cfg.name / "hf"), "reference_only": True}, **jobs}
        ordered = sorted(jobs.items(), key=lambda kv: (kv[0] != ("pytorch", "fp32"), BACKENDS.index(kv[0][0]),
                                                       DTYPES.index(kv[0][1])))
        for (backend, dtype), job in tqdm(ordered, desc=f"measure {cfg.name}", disable=not progress):
            # ExecuTorch fixes its thread count at load: one worker per count, predictions in the first
            per_process = [[n] for n in settings.threads] if backend == "executorch" else [list(settings.threads)]
            result: dict[str, Any] = {}
            for i, threads in enumerate(per_process):
                part = _run_worker({**job, "backend": backend, "dtype": dtype, "inputs": inputs if i == 0 else [],
                                    "latency_ids": window, "threads": threads, "runs": settings.latency_runs})
                if not result:
                    result = part
                else:
                    result["latency_ms"].update(part["latency_ms"])
                    result["peak_rss_mb"] = max(result["peak_rss_mb"], part["peak_rss_mb"])
            preds = result["predictions"]
            if reference is None:
                reference = preds
            if job.get("reference_only"):
                continue
            accuracy = sum(int(p == y) for p, y in zip(preds, test.labels, strict=True)) / len(test)
            agreement = sum(int(p == r) for p, r in zip(preds, reference, strict=True)) / len(test)
            for n, ms in result["latency_ms"].items():
                rows.append({"subnet": cfg.name, "dtype": dtype, "backend": backend, "accuracy": accuracy,
                             "agreement": agreement, "size_bytes": result["size_bytes"], "ms_median": ms,
                             "threads": int(n), "peak_rss_mb": result["peak_rss_mb"]})
    return rows


def write_outputs(rows: list[dict[str, Any]], json_path: str | Path | None, plot_path: str | Path | None,
                  meta: dict[str, Any] | None = None) -> None:
    """The rows as JSON ({"meta", "rows"}) and the Pareto plot, each written atomically."""
    from mlfs_edge.atomic import write_atomically

    if json_path:
        payload = json.dumps({"meta": meta or {}, "rows": rows}, indent=2)
        write_atomically(Path(json_path), lambda tmp: tmp.write_text(payload))
    if plot_path:
        write_atomically(Path(plot_path), lambda tmp: pareto_plot(rows, tmp))


def table(rows: list[dict[str, Any]]) -> str:
    from mlfs_edge.report import markdown_table

    shown = [{"subnet": r["subnet"], "dtype": r["dtype"], "backend": r["backend"], "threads": r["threads"],
              "accuracy %": f"{100 * r['accuracy']:.2f}", "agreement %": f"{100 * r['agreement']:.2f}",
              "size MB": f"{r['size_bytes'] / 1e6:.1f}", "ms median": f"{r['ms_median']:.2f}",
              "peak RSS MB": f"{r['peak_rss_mb']:.0f}"} for r in rows]
    return markdown_table(shown)


MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}
COLORS = {"pytorch": "tab:blue", "executorch": "tab:orange", "onnxruntime": "tab:green", "mlfs": "tab:red"}


def pareto_plot(rows: list[dict[str, Any]], path: str | Path, threads: int | None = None) -> None:
    """Latency (x, log) vs accuracy (y): one marker per dtype, one colour per backend, the Pareto
    front (no other point both faster and more accurate) as a line; at one thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = threads or min(r["threads"] for r in rows)
    pts = [r for r in rows if r["threads"] == threads]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in pts:
        ax.scatter(r["ms_median"], 100 * r["accuracy"], marker=MARKERS[r["dtype"]], color=COLORS[r["backend"]],
                   s=60, edgecolors="black", linewidths=0.5)
        ax.annotate(r["subnet"], (r["ms_median"], 100 * r["accuracy"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    front, best = [], -1.0
    for r in sorted(pts, key=lambda r: (r["ms_median"], -r["accuracy"])):
        if r["accuracy"] > best:
            front.append(r)
            best = r["accuracy"]
    ax.plot([r["ms_median"] for r in front], [100 * r["accuracy"] for r in front], "k--", lw=1, label="Pareto front")
    for dtype, marker in MARKERS.items():
        ax.scatter([], [], marker=marker, color="gray", label=dtype)
    for backend, color in COLORS.items():
        if any(r["backend"] == backend for r in pts):
            ax.scatter([], [], marker="o", color=color, label=backend)
    ax.set_xscale("log")
    ax.set_xlabel(f"median latency, ms (batch 1, seq 128, {threads} thread{'s' if threads > 1 else ''})")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("sub-networks × dtype × backend: latency vs accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    try:
        print(json.dumps(_measure(json.loads(sys.stdin.read()))), flush=True)
    except Exception as e:  # reported to the parent as one line
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)
