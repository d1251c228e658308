"""int8 vs fp16 vs fp32, per sub-network and backend: accuracy, agreement, size, latency, memory.

``run_compare(...)`` builds the artefacts of each sub-network through the backend adapters
(``mlfs_edge.eval.backends``: a Hugging Face folder for PyTorch, ``.pte`` files for ExecuTorch, ONNX
files for ONNX Runtime, one packed file for the engine) under ``work_dir`` — the slow exports in a pool
of up to two processes — then measures them in one fresh subprocess per backend (per thread count for
ExecuTorch), artefact after artefact, so that no backend's imports, threads or memory reach another's.
Rows::

    {"subnet", "dtype", "backend", "accuracy", "agreement", "size_bytes", "ms_median", "threads",
     "peak_rss_mb"}

- accuracy: on the test split (each sentence at batch 1 and its own length, as an app runs it);
- agreement: share of test sentences where the prediction equals the fp32 PyTorch model's;
- size_bytes: the artefact on disk (.pte, .onnx, .mlfs) or the model's weights in memory for PyTorch
  (``mlfs_edge.quant.model_size_bytes``);
- ms_median: median latency of one forward at batch 1, ``seq_len`` (128) real tokens, for each
  thread count (one row per thread count; accuracy and memory are shared by those rows);
- peak_rss_mb: the peak resident set (VmHWM) while the artefact was loaded and run, counted from a
  reset after the previous artefact of the process was freed: interpreter, the backend's runtime
  libraries, the model and its work. An absolute figure per backend, comparable between dtypes of a
  backend; the libraries a backend imports are part of it.
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

import mlfs_edge.eval.backends as backends_pkg
from mlfs_edge.eval.backends import BACKENDS, DTYPES, Subject

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

def build_artefacts(subjects: Sequence[Subject], backends: Sequence[str], dtypes: Sequence[str], work_dir: Path,
                    model_dir: str | Path, progress: bool = True) -> dict[tuple[str, str, str], dict[str, Any]]:
    """What each measuring worker loads, per (sub-network, backend, dtype); finished files are reused.

    Quick builds (the Hugging Face folders, the engine's packed file) run here; exports that take tens of
    seconds each (ExecuTorch lowering, ONNX) run in a pool of up to two processes, one per core, each
    loading the source model once (``load_source(model_dir)`` gives the same model as here)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    from mlfs_edge import quiet

    work_dir = Path(work_dir)
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    slow: list[tuple[Subject, str, tuple[str, ...]]] = []
    for subject in subjects:
        for backend in backends:
            adapter = backends_pkg.adapter(backend)
            wanted = tuple(d for d in dtypes if d in adapter.DTYPES)
            if not wanted:
                continue
            if adapter.BUILD_IN_WORKER:
                groups = [(d,) for d in wanted] if adapter.DTYPES_APART else [wanted]
                slow += [(subject, backend, group) for group in groups]
            else:
                for dtype, artefact in adapter.build(subject, wanted, work_dir).items():
                    out[subject.name, backend, dtype] = artefact
    if not slow:
        return out
    # longest first (the biggest sub-networks' exports), so that the two processes finish together
    slow.sort(key=lambda job: -job[0].layer_params)
    workers = max(1, min(2, os.cpu_count() or 1, len(slow)))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_builder,
                             initargs=(str(model_dir), quiet.installed())) as pool:
        futures = {pool.submit(_build_in_worker, backend, s.subnet.to_dict(), wanted, str(work_dir), s.output,
                               tuple(s.calibration), s.max_length): (s, backend) for s, backend, wanted in slow}
        bar = tqdm(total=len(futures), desc=f"export ({workers} processes)", unit="export", disable=not progress)
        for future in as_completed(futures):
            subject, backend = futures[future]
            try:
                built = future.result()
            except Exception as e:
                raise RuntimeError(f"building the {backend} artefacts of {subject.name} failed: "
                                   f"{type(e).__name__}: {e}") from None
            for dtype, artefact in built.items():
                out[subject.name, backend, dtype] = artefact
            bar.update()
        bar.close()
    return out


_BUILD_SOURCE: tuple[Any, Any] | None = None  # (model, tokenizer) of a build process, loaded once


def _init_builder(model_dir: str, hide_known_noise: bool) -> None:
    import torch

    global _BUILD_SOURCE
    if hide_known_noise:
        from mlfs_edge import quiet

        quiet.install()
    torch.set_num_threads(1)  # one process per core
    model, tokenizer, _ = load_source(model_dir)
    _BUILD_SOURCE = (model, tokenizer)


def _build_in_worker(backend: str, subnet: dict[str, Any], dtypes: tuple[str, ...], work_dir: str, output: str,
                     calibration: tuple[str, ...], max_length: int) -> dict[str, dict[str, Any]]:
    from mlfs_edge.config import SubnetConfig

    assert _BUILD_SOURCE is not None, "_init_builder did not run"
    model, tokenizer = _BUILD_SOURCE
    subject = Subject(model, tokenizer, SubnetConfig.from_dict(subnet), output, calibration, max_length)
    return backends_pkg.adapter(backend).build(subject, dtypes, Path(work_dir))


# --- measuring (in subprocesses) ------------------------------------------------------------------------

def _measure(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs in a fresh process, one per backend (per thread count for ExecuTorch): for each job in
    turn, load its artefact, predict the (already tokenized) test sentences at batch 1, time the
    seq_len input per thread count, then free it. Imports only that backend's runtime (the ONNX
    Runtime and engine workers do not import torch)."""
    import gc

    import numpy as np

    threads = task["threads"]
    x = np.asarray([task["latency_ids"]], dtype=np.int64)
    mask = np.ones_like(x)
    results = []
    for job in task["jobs"]:
        _reset_peak_rss()
        runner = backends_pkg.load(task["backend"], job["artefact"], job["dtype"], max(threads))
        preds = []
        for ids in task["inputs"] if job["predict"] else []:
            row = np.asarray([ids], dtype=np.int64)
            preds.append(int(np.argmax(runner.predict(row, np.ones_like(row))[0])))
        latency = {}
        for n in threads if job["time"] else []:
            runner.set_threads(n)
            for _ in range(3):
                runner.predict(x, mask)
            times = []
            for _ in range(task["runs"]):
                t0 = time.perf_counter()
                runner.predict(x, mask)
                times.append((time.perf_counter() - t0) * 1e3)
            latency[n] = statistics.median(times)
        results.append({"predictions": preds, "latency_ms": latency, "size_bytes": runner.size_bytes,
                        "peak_rss_mb": _peak_rss_mb()})
        del runner
        gc.collect()
    return results


def _reset_peak_rss() -> None:
    """Free what the previous artefact left (glibc keeps freed heap pages), then restart the peak
    counter at the current resident set (Linux: writing 5 to clear_refs resets VmHWM), so each
    artefact's peak is its own: interpreter, runtime libraries, this model and its work."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):  # not Linux, or not permitted: the peak then spans the process so far
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    """This process's peak resident set since the last reset (VmHWM). Not ru_maxrss: on Linux that
    survives exec and would report the parent's size, copied into the child at fork."""
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


def _run_worker(task: dict[str, Any]) -> list[dict[str, Any]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Each worker sets its backend's thread count itself. An inherited OMP_NUM_THREADS=1 also makes
    # ExecuTorch 1.5's threadpool hang in its first fp16 XNNPACK forward after a reset to 1 thread.
    env.pop("OMP_NUM_THREADS", None)
    timeout_s = 600 + 600 * len(task["jobs"])
    proc = subprocess.run([sys.executable, "-m", "mlfs_edge.eval.compare", "--worker"], input=json.dumps(task),
                          capture_output=True, text=True, env=env, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("[", "{"))]
    result = json.loads(lines[-1]) if lines else {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    if proc.returncode != 0 or isinstance(result, dict):
        what = ", ".join(f"{j['key'][0]} {j['dtype']}" for j in task["jobs"])
        why = result.get("error") if isinstance(result, dict) else f"exit code {proc.returncode}"
        raise RuntimeError(f"measuring {task['backend']} ({what}) failed: {why}")
    return result


# --- the comparison -------------------------------------------------------------------------------

def mlfs_unavailable_reason() -> str | None:
    """Why the native-engine rows are left out (None when the engine can run them)."""
    from mlfs_edge.eval.backends import engine

    return engine.unavailable_reason()


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
    subjects = [Subject(model, tokenizer, cfg, "logits", tuple(data.train.texts[:64]), MAX_LENGTH) for cfg in cfgs]
    if progress:
        print(f"[compare] {', '.join(s.name for s in subjects)}: building artefacts ({', '.join(settings.dtypes)} "
              f"for {', '.join(backends)})")
    artefacts = build_artefacts(subjects, backends, settings.dtypes, work_dir, model_dir, progress)
    asked = set(artefacts)  # the rows asked for; the fp32 PyTorch predictions are needed in any case:
    for s in subjects:  # agreement is measured against them
        artefacts.setdefault((s.name, "pytorch", "fp32"), {"path": str(s.hf_folder(work_dir)), "output": s.output})

    # One measuring process per backend (ExecuTorch: per thread count, see its adapter), the jobs of
    # every sub-network in turn; predictions once per (sub-network, dtype), latency for the rows asked.
    order = [s.name for s in subjects]
    tasks = []
    for backend in dict.fromkeys(["pytorch", *backends]):
        keys = sorted((k for k in artefacts if k[1] == backend), key=lambda k: (order.index(k[0]), DTYPES.index(k[2])))
        groups = [[n] for n in settings.threads] if backend == "executorch" else [list(settings.threads)]
        for i, threads in enumerate(groups):
            jobs = [{"key": list(k), "dtype": k[2], "artefact": artefacts[k], "predict": i == 0, "time": k in asked}
                    for k in keys if i == 0 or k in asked]
            if jobs:
                tasks.append({"backend": backend, "jobs": jobs, "inputs": inputs, "latency_ids": window,
                              "threads": threads, "runs": settings.latency_runs})
    measured: dict[tuple[str, str, str], dict[str, Any]] = {}
    bar = tqdm(total=sum(len(t["jobs"]) for t in tasks), desc="measure", unit="artefact", disable=not progress)
    for task in tasks:
        bar.set_postfix_str(f"{task['backend']} ({len(task['jobs'])})")
        for job, part in zip(task["jobs"], _run_worker(task), strict=True):
            key = tuple(job["key"])
            if key not in measured:
                measured[key] = part
            else:
                measured[key]["latency_ms"].update(part["latency_ms"])
                measured[key]["peak_rss_mb"] = max(measured[key]["peak_rss_mb"], part["peak_rss_mb"])
            bar.update()
    bar.close()

    rows: list[dict[str, Any]] = []
    for s in subjects:
        reference = measured[s.name, "pytorch", "fp32"]["predictions"]
        for backend in backends:
            for dtype in settings.dtypes:
                result = measured.get((s.name, backend, dtype))
                if result is None:
                    continue
                preds = result["predictions"]
                accuracy = sum(int(p == y) for p, y in zip(preds, test.labels, strict=True)) / len(test)
                agreement = sum(int(p == r) for p, r in zip(preds, reference, strict=True)) / len(test)
                for n, ms in result["latency_ms"].items():
                    rows.append({"subnet": s.name, "dtype": dtype, "backend": backend, "accuracy": accuracy,
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
