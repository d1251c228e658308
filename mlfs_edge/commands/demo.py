"""mlfs-edge demo: the product's story, end to end, on the bundled model and data.

teacher fine-tune → one MLFS run → the palette (MLFS vs the sliced teacher) → one packed .mlfs file →
the engine picks a sub-network under a latency budget on this CPU → int8 / fp16 / fp32 of three MLFS
sub-networks across four backends. Ends with a guard (non-zero exit) so CI notices a demo that
stopped telling the truth: a big sub-network far below the teacher, or int8 far below fp32.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlfs_edge.commands._common import DEFAULT_RUN_DIR

ORDER = 30
STEPS = 6
BIG_FRACTION = 0.5  # guard: sub-networks with at least this share of the layer parameters ...
BIG_MAX_DROP = 0.05  # ... may lose at most 5 points against the teacher
INT8_MAX_DROP = 0.02  # guard: an int8 row may lose at most 2 points against its fp32 row


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the end-to-end demo: teacher, MLFS palette, packed engine, budget pick, int8 vs fp16",
        description="On the bundled all-MiniLM-L6-v2 and Rotten Tomatoes (or --data): fine-tune the teacher, run MLFS "
                    "(the shipped config's schedule, shortened by --mlfs-steps), evaluate the palette of "
                    "sub-networks against the same slices of the teacher without MLFS, pack the supernet into one "
                    ".mlfs file, let the native engine pick the most accurate sub-network under a latency budget on "
                    "this CPU, and compare fp32/fp16/int8 of three MLFS sub-networks (full, ~50 %, ~25 %) across "
                    "PyTorch, ExecuTorch, ONNX Runtime and the native engine. Everything lands in --out, which is "
                    "an ordinary training run folder: every other command takes it.",
        epilog="A re-run reuses the finished teacher and supernet in --out (delete the folder to start over). The "
               "demo exits non-zero when a sub-network of ≥ 50 % of the layer parameters is more than 5 points "
               "below the teacher, or an int8 row more than 2 points below its fp32 row (--no-guard: report only).")
    p.add_argument("--config", default="configs/mlfs_minilm_rt.toml",
                   help="the MLFS training config (default: %(default)s, run from the repository root)")
    p.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="your own .csv/.jsonl/.parquet file (or a bundled name) instead of the config's data")
    p.add_argument("--text-column", default=None, help="text column of a --data file (default: the config's)")
    p.add_argument("--label-column", default=None, help="label column of a --data file (default: the config's)")
    p.add_argument("--out", default=str(DEFAULT_RUN_DIR / "demo"), help="the run folder (default: %(default)s)")
    p.add_argument("--mlfs-steps", type=float, default=0.3, metavar="FRACTION",
                   help="share of the config's MLFS steps to run, per stage (default: %(default)s, for the 15-minute "
                        "budget on 2 cores; 1 = the shipped schedule, ~8 min more here at 1.24 s a step)")
    p.add_argument("--teacher-epochs", type=float, default=1.0, metavar="N",
                   help="epochs of the teacher fine-tune (default: %(default)s, for the 15-minute budget; the "
                        "shipped config's stage 0 runs 2: 85.77 vs 84.48 %% here, ~3 min longer)")
    p.add_argument("--compare-test", type=int, default=300, metavar="N",
                   help="test sentences per row of the int8/fp16/fp32 comparison (default: %(default)s)")
    p.add_argument("--budget", type=float, default=0.5, metavar="FRACTION",
                   help="the engine's latency budget, as a share of the full model's latency here "
                        "(default: %(default)s)")
    p.add_argument("--no-guard", action="store_true", help="report the guard's findings but exit 0")
    p.set_defaults(func=run)


def _step(n: int, what: str) -> None:
    print(f"\n[{n}/{STEPS}] {what}", flush=True)


def run(args: argparse.Namespace) -> int:
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.train.mlfs import MLFSConfig

    if not 0 < args.mlfs_steps <= 1 or not 0 < args.budget <= 1 or args.compare_test < 10 or args.teacher_epochs <= 0:
        raise ValueError("--mlfs-steps and --budget take a fraction in (0, 1]; --compare-test at least 10 sentences; "
                         "--teacher-epochs more than 0")
    if not Path(args.config).is_file():
        raise FileNotFoundError(f"training config {args.config} not found: run the demo from the repository root "
                                "(`make demo`) or pass --config")
    cfg = MLFSConfig.from_toml(args.config, data=args.data, text_column=args.text_column,
                               label_column=args.label_column, out=args.out)
    if cfg.resolved_task() != "classification":
        raise ValueError(f"the demo runs a classification config; {args.config} trains a {cfg.resolved_task()}")
    stages = tuple(replace(s, steps=max(1, round(s.steps * args.mlfs_steps))) for s in cfg.stages)
    cfg = replace(cfg, stages=stages, teacher_finetune={**cfg.teacher_finetune, "epochs": args.teacher_epochs})
    cfg = cfg.validate()
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}  # wall time of each step, printed at the end and kept in demo.json

    def timed(name: str, step: Any, *step_args: Any) -> Any:
        t0 = time.perf_counter()
        result = step(*step_args)
        seconds[name] = round(time.perf_counter() - t0, 1)
        return result

    teacher_record, test_texts = timed("teacher", _teacher, cfg)
    summary = timed("mlfs", _mlfs, cfg, args)
    palette = timed("palette", _palette, cfg, summary)
    packed = timed("pack", _pack, cfg)
    budget_ms, picked, arch = timed("budget", _budget, packed, palette, args.budget, test_texts)
    compare_rows = timed("compare", _compare, cfg, palette, args.compare_test)
    wall = time.perf_counter() - t_start

    failures = guard_failures(palette, compare_rows)
    small = SubnetConfig.from_dict(min(palette["rows"], key=lambda r: r["param_fraction"])["subnet"])
    _closing(cfg, packed, wall, teacher_record, budget_ms, _spec(picked, arch), _spec(small, arch))
    print("time per step: " + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()))
    _write_record(cfg, args, seconds, wall, palette, failures)
    if failures:
        print("\ndemo guard: " + ("FAILED" if not args.no_guard else "would fail") + "\n  " + "\n  ".join(failures),
              file=sys.stderr)
        return 0 if args.no_guard else 3
    print(f"\ndemo guard passed: every sub-network of ≥ {BIG_FRACTION:.0%} of the layer parameters within "
          f"{100 * BIG_MAX_DROP:.0f} points of the teacher; every int8 row within {100 * INT8_MAX_DROP:.0f} points of "
          "its fp32 row.")
    return 0


def _teacher(cfg: Any) -> tuple[dict[str, Any], list[str]]:
    """The teacher's fine-tune record, and two test sentences for the engine to classify later."""
    from mlfs_edge.data import load_classification
    from mlfs_edge.train.mlfs import ensure_teacher

    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    teacher = Path(cfg.out) / "teacher"
    reuse = (teacher / "mlfs_meta.json").is_file()
    model = "all-MiniLM-L6-v2" if cfg.model == "minilm" else cfg.model
    epochs = cfg.teacher_finetune.get("epochs")
    _step(1, f"teacher: {'reusing' if reuse else 'fine-tuning'} {model} + a classification head on "
             f"{data.name} ({len(data.train)} train sentences, labels {', '.join(data.label_names)}"
             f"{f', {epochs:g} epoch(s)' if epochs and not reuse else ''}) — every sub-network is judged against it")
    _, record = ensure_teacher(cfg, data, progress=True)
    print(f"teacher: test accuracy {100 * record['test_accuracy']:.2f}% ({len(data.test)} sentences), "
          f"{record['wall_s']:.0f} s")
    return record, data.test.texts[:2]


def _mlfs(cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    from mlfs_edge.train.mlfs import finished_run, train_mlfs

    steps = " + ".join(f"{s.steps} {s.name}" for s in cfg.stages)
    _step(2, f"MLFS: one run trains shared LoRA adapters on the frozen teacher for every sub-network at once "
             f"({steps} steps = {args.mlfs_steps:.0%} of {args.config}'s schedule; sandwich sampling, "
             "distillation from the full model)")
    summary = finished_run(cfg.out, cfg)
    if summary is not None:
        print(f"reusing the finished supernet in {cfg.out}/supernet (same config; delete {cfg.out} to retrain)")
        return summary
    summary = train_mlfs(cfg, progress=True, command=shlex.join(["mlfs-edge", *args.argv]))
    print(f"supernet: {summary['steps']} steps in {summary['mlfs_wall_s']:.0f} s, "
          f"{100 * summary['trainable_fraction']:.2f} % of the parameters trained (LoRA)")
    return summary


def _palette(cfg: Any, summary: dict[str, Any]) -> dict[str, Any]:
    from mlfs_edge.commands.eval import classification_palette, write_palette

    _step(3, f"palette: test accuracy of {len(cfg.palette)} sub-networks sliced from the one supernet, beside the "
             "same slices of the teacher without MLFS (what MLFS buys)")
    record, table, message = classification_palette(argparse.Namespace(palette=None, rank=None), cfg, summary)
    write_palette(Path(cfg.out), record, table, None)
    print(table)
    print(f"{message}; plot {cfg.out}/palette.png")
    return record


def _pack(cfg: Any) -> Path:
    from mlfs_edge.runtime import Engine, pack

    supernet = Path(cfg.out) / "supernet"
    path = Path(cfg.out) / "supernet-int8.mlfs"
    _step(4, "pack: the whole supernet into one int8 .mlfs file — the engine runs any sub-network from it by "
             "slicing, no copies")
    pack(supernet, path, dtype="int8", tokenizer=supernet, source=str(supernet))
    engine = Engine.load(path)
    print(f"{path}: {engine.file_size / 2**20:.1f} MiB, {engine.arch.num_layers} layers, labels "
          f"{', '.join(engine.labels)}")
    return path


def _budget(packed: Path, palette: dict[str, Any], fraction: float, texts: list[str]) -> tuple[float, Any, Any]:
    import numpy as np
    from transformers import AutoTokenizer

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.report import markdown_table
    from mlfs_edge.runtime import Engine

    engine = Engine.load(packed)
    accuracy = {SubnetConfig.from_dict(r["subnet"]): r["accuracy"] for r in palette["rows"]}
    full = SubnetConfig.full(engine.arch)
    _step(5, f"budget: the engine measures each palette sub-network on this CPU (batch 1, 128 tokens, 1 thread) "
             f"and picks the most accurate one within {fraction:.0%} of the full model's latency")
    latency = engine.profile(accuracy, seq=128, threads=1, runs=10)
    budget = fraction * latency[full]
    picked = engine.pick(budget, accuracy, latency_table=latency)
    print(markdown_table([{"sub-network": c.name, "fraction": f"{100 * c.param_fraction(engine.arch):.1f}%",
                           "accuracy %": f"{100 * accuracy[c]:.2f}", "ms (int8)": f"{latency[c]:.2f}",
                           "": "← picked" if c == picked else ("over budget" if latency[c] > budget else "")}
                          for c in sorted(accuracy, key=lambda c: latency[c])]))
    tokenizer = AutoTokenizer.from_pretrained(engine.tokenizer_dir())
    enc = tokenizer(texts, padding=True, return_tensors="np")
    logits = engine.run(np.ascontiguousarray(enc["input_ids"], np.int64),
                        np.ascontiguousarray(enc["attention_mask"], np.int64), subnet=picked)
    print(f"budget {budget:.2f} ms: picked {picked.name} ({latency[picked]:.2f} ms, {100 * accuracy[picked]:.2f}%). "
          "On two test sentences it says:")
    for text, row in zip(texts, logits, strict=True):
        print(f"  {engine.labels[int(row.argmax())]:<10} | {text[:100]}")
    return budget, picked, engine.arch


def _spec(cfg: Any, arch: Any) -> str:
    """A sub-network as the command line takes it: the short form when it says exactly this one."""
    from mlfs_edge.config import SubnetConfig

    if cfg == SubnetConfig.full(arch):
        return "full"
    if cfg.is_uniform():
        short = f"depth={cfg.depth},heads={cfg.heads[0]},mlp={cfg.mlp[0]}"
        if SubnetConfig.parse(short, arch) == cfg:
            return short
    return shlex.quote(cfg.to_json())


def _nearest(rows: list[dict[str, Any]], fraction: float) -> str:
    return min(rows, key=lambda r: abs(r["param_fraction"] - fraction))["name"]


def _compare(cfg: Any, palette: dict[str, Any], test_sentences: int) -> list[dict[str, Any]]:
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.eval.compare import CompareSettings, run_compare, table, write_outputs

    rows = palette["rows"]
    by_name = {r["name"]: SubnetConfig.from_dict(r["subnet"]) for r in rows}
    names = list(dict.fromkeys([max(rows, key=lambda r: r["param_fraction"])["name"], _nearest(rows, 0.5),
                                _nearest(rows, 0.25)]))
    _step(6, f"compare: fp32 / fp16 / int8 of the MLFS sub-networks {', '.join(names)} on PyTorch, ExecuTorch, "
             f"ONNX Runtime and the native engine ({test_sentences} test sentences each at batch 1; latency at 128 "
             "tokens, 1 thread). int8 is each runtime's own: PyTorch's and ONNX Runtime's dynamic quantisation, "
             "ExecuTorch's XNNPACK quantizer, the engine's packed int8")
    out = Path(cfg.out)
    settings = CompareSettings(threads=(1,), latency_runs=10, max_test=test_sentences, data=cfg.data,
                               text_column=cfg.text_column, label_column=cfg.label_column)
    t0 = time.perf_counter()
    result = run_compare(out / "supernet", [by_name[n].to_json() for n in names], out / "compare", settings)
    write_outputs(result, out / "compare.json", out / "compare.png",
                  {"model": str(out / "supernet"), "data": cfg.data, "wall_s": time.perf_counter() - t0})
    print(table(result))
    print("Latency is a median on a shared machine: compare ratios within this table. fp16 saves size; it is fast "
          "only on CPUs with native fp16 arithmetic (ARMv8.2+), not on x86.")
    return result


def guard_failures(palette: dict[str, Any], compare_rows: list[dict[str, Any]]) -> list[str]:
    """What the demo must not show: a sub-network of ≥ 50 % of the layer parameters more than 5 points
    below the teacher, or an int8 row more than 2 points below the fp32 row of the same sub-network,
    backend and thread count. Empty when all is well."""
    failures = []
    teacher = palette["teacher_accuracy"]
    for r in palette["rows"]:
        if r["param_fraction"] >= BIG_FRACTION and r["accuracy"] < teacher - BIG_MAX_DROP:
            failures.append(f"{r['name']} ({100 * r['param_fraction']:.0f} % of the layer parameters) scores "
                            f"{100 * r['accuracy']:.2f}%, more than {100 * BIG_MAX_DROP:.0f} points below the "
                            f"teacher's {100 * teacher:.2f}%")
    fp32 = {(r["subnet"], r["backend"], r["threads"]): r["accuracy"] for r in compare_rows if r["dtype"] == "fp32"}
    for r in compare_rows:
        ref = fp32.get((r["subnet"], r["backend"], r["threads"]))
        if r["dtype"] == "int8" and ref is not None and r["accuracy"] < ref - INT8_MAX_DROP:
            failures.append(f"int8 {r['subnet']} on {r['backend']} scores {100 * r['accuracy']:.2f}%, more than "
                            f"{100 * INT8_MAX_DROP:.0f} points below its fp32 row ({100 * ref:.2f}%)")
    return failures


def _write_record(cfg: Any, args: argparse.Namespace, seconds: dict[str, float], wall: float,
                  palette: dict[str, Any], failures: list[str]) -> None:
    """<out>/demo.json: what the demo measured, with the command that made it."""
    import json

    from mlfs_edge.atomic import write_atomically

    record = {"command": shlex.join(["mlfs-edge", *args.argv]), "wall_s": round(wall, 1), "step_s": seconds,
              "mlfs_steps": [s.steps for s in cfg.stages], "teacher_accuracy": palette["teacher_accuracy"],
              "palette": [{k: r[k] for k in ("name", "param_fraction", "accuracy", "accuracy_no_mlfs")}
                          for r in palette["rows"]], "guard_failures": failures}
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(Path(cfg.out) / "demo.json", lambda tmp: tmp.write_text(text))


def _closing(cfg: Any, packed: Path, wall: float, teacher: dict[str, Any], budget_ms: float, picked: str,
             small: str) -> None:
    out = shlex.quote(str(cfg.out))
    print(f"\ndemo done in {wall / 60:.1f} min. Everything is in the run folder {cfg.out}:")
    for path, what in (("teacher/", f"the fine-tuned teacher ({100 * teacher['test_accuracy']:.2f}%)"),
                       ("supernet/", "the MLFS supernet (a Hugging Face folder; every sub-network is a slice)"),
                       ("run_config.json", "the resolved training config every command reads"),
                       ("palette.json, palette.md, palette.png", "accuracy vs size, MLFS vs sliced teacher"),
                       (packed.name, "the packed int8 supernet for the native engine"),
                       ("compare.json, compare.png", "fp32/fp16/int8 × backends: accuracy, size, latency"),
                       ("demo.json", "this demo's times per step, palette and guard")):
        print(f"  {cfg.out}/{path:<40} {what}")
    print("Next:")
    print(f"  .venv/bin/mlfs-edge run {out} --text 'a gripping film' --budget-ms {budget_ms:.1f}   "
          "# classify under a budget")
    print(f"  .venv/bin/mlfs-edge slice {out} --subnet {picked} --out {out}/picked   "
          "# the budget's pick as a standalone HF model")
    print(f"  .venv/bin/mlfs-edge export --model {out} --subnet {small} --out {out}/export   "
          "# the smallest sub-network as an ExecuTorch .pte for android_demo/")
    print("  .venv/bin/mlfs-edge demo --data my.csv --text-column text --label-column label --out runs/mine   "
          "# the same story on your data")
