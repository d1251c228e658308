"""mlfs-edge eval: accuracy and size of a palette of sub-networks of a trained supernet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mlfs_edge.commands._common import add_seed_args

ORDER = 42


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a palette of sub-networks of a trained supernet (JSON, table, plot)",
        description="For every sub-network of the run's palette: test accuracy (causal_lm: held-out "
                    "perplexity) when sliced from the MLFS supernet and when sliced from the teacher (the "
                    "pretrained LM) without MLFS training, and its parameter count. The data, columns and "
                    "palette are the ones the run recorded (run_config.json) unless overridden here. "
                    "Writes <run>/palette.json, <run>/palette.md and <run>/palette.png. With --seeds: the whole "
                    "MLFS run once per seed (the config's own seed is the run folder itself, any other seed "
                    "<run>/seed<N>; finished seeds are reused, interrupted ones resumed, missing ones trained), "
                    "each seed's palette.json kept in its folder, and <run>/palette_seeds.json / .md: mean ± sd "
                    "per sub-network over the seeds, and (classification) the paired bootstrap 95 % interval of "
                    "MLFS − sliced teacher over the test items. By default all seeds share the run's stage-0 "
                    "teacher, so the spread is that of MLFS alone (--teacher-per-seed: each seed fine-tunes "
                    "its own).",
        epilog="Examples: mlfs-edge eval runs/mine  |  mlfs-edge eval --config configs/mlfs_minilm_rt.toml  |  "
               "mlfs-edge eval runs/mine --data other.csv --text-column review --label-column stars  |  "
               "mlfs-edge eval --config configs/mlfs_minilm_rt.toml --seeds 0,1,2")
    p.add_argument("run", nargs="?", default=None,
                   help="the run folder (the --out of `mlfs-edge train`) or the supernet folder inside it")
    p.add_argument("--config", default=None,
                   help="the training config instead of a run folder (its `out` is the run); with a run folder, "
                        "it must be the config the run was trained with")
    p.add_argument("--quick", action="store_true", help="with --config: evaluate its --quick run")
    p.add_argument("--palette", nargs="+", default=None, help="sub-network specs instead of the run's palette")
    p.add_argument("--json", default=None, help="also write the result JSON here (e.g. benchmarks/results/...)")
    p.add_argument("--out", default=None, help="with --config: override the config's output folder")
    p.add_argument("--rank", type=int, default=None,
                   help="LoRA rank to evaluate at, for a supernet trained with [lora] elastic_ranks (default: full)")
    p.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="evaluate on this data instead of the run's (a bundled name or a .csv/.jsonl/.parquet "
                        "file; causal_lm: a text corpus); its test split is used")
    p.add_argument("--text-column", default=None, help="text column of --data (default: the run's)")
    p.add_argument("--label-column", default=None, help="label column of --data (default: the run's)")
    add_seed_args(p, "train (or reuse) and evaluate")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mlfs_edge.train.run_folder import resolve_run

    if args.seeds is not None:
        return run_seeds(args)
    if args.teacher_per_seed:
        raise ValueError("--teacher-per-seed goes with --seeds")
    found = resolve_run(args.run, args.config, quick=args.quick, out=args.out)
    summary = found.summary()
    overrides = {"data": args.data, "text_column": args.text_column, "label_column": args.label_column}
    cfg = replace(found.config, **{k: v for k, v in overrides.items() if v is not None})
    out = found.folder
    print(f"[eval] run {out}: {cfg.model} on {cfg.data}" + (" (--data override)" if args.data else ""))
    evaluate = _lm_palette if summary.get("task") == "causal_lm" else classification_palette
    record, table, message = evaluate(args, cfg, summary)
    write_palette(out, record, table, args.json)
    print(table)
    copy = f"; copies: {args.json} and {Path(args.json).with_suffix('.png')}" if args.json else ""
    print(f"\n{message}. Written: {out}/palette.json, palette.md, palette.png{copy}")
    _warn_if_collapsed(record, out)
    return 0


def _warn_if_collapsed(record: dict[str, Any], run: Path) -> None:
    from mlfs_edge.eval.palette import collapse_warning

    if warning := collapse_warning(record, run):
        print(warning, file=sys.stderr, flush=True)


def seeds_base(args: argparse.Namespace) -> Any:
    """The config a --seeds study starts from: the run folder's (checked against --config if both are
    given) or --config's, whose folder need not hold a run yet."""
    from mlfs_edge.train.mlfs import MLFSConfig
    from mlfs_edge.train.run_folder import resolve_run

    if args.run is not None:
        return resolve_run(args.run, args.config, quick=args.quick, out=args.out).config
    if args.config is None:
        raise ValueError("give a run folder (the --out of `mlfs-edge train`) or --config")
    return MLFSConfig.from_toml(args.config, quick=args.quick, out=args.out)


def run_seeds(args: argparse.Namespace) -> int:
    """--seeds: one MLFS run per seed (trained, resumed or reused), each evaluated, then mean ± sd."""
    import json
    import shlex
    from dataclasses import replace

    from mlfs_edge.atomic import write_atomically
    from mlfs_edge.eval.seeds import parse_seeds, seeds_table, summarize_seeds, teacher_note
    from mlfs_edge.train.mlfs import train_seed

    seeds = parse_seeds(args.seeds)
    base = seeds_base(args)
    task = base.resolved_task()
    shared = not args.teacher_per_seed
    command = shlex.join(["mlfs-edge", *getattr(args, "argv", [])])
    print(f"[eval] {len(seeds)} seeds of {base.model} on {base.data} ({teacher_note(shared, task)})")
    overrides = {"data": args.data, "text_column": args.text_column, "label_column": args.label_column}
    records = {}
    for i, seed in enumerate(seeds):
        run_cfg, summary, how = train_seed(base, seed, shared, progress=not args.no_progress, command=command)
        cfg = replace(run_cfg, **{k: v for k, v in overrides.items() if v is not None})
        record = reusable_palette(args, cfg)
        evaluated = record is None
        if record is None:
            evaluate = _lm_palette if task == "causal_lm" else classification_palette
            record, table, _ = evaluate(args, cfg, summary)
            write_palette(Path(cfg.out), record, table, None)
        print(f"[eval] seed {seed} ({i + 1}/{len(seeds)}): run {cfg.out} {how}, palette "
              f"{'evaluated' if evaluated else 'reused'}")
        _warn_if_collapsed(record, Path(cfg.out))
        records[seed] = record
    result = {"command": command, "teacher": teacher_note(shared, task), "shared_teacher": shared,
              **summarize_seeds(records)}
    table = seeds_table(result)
    out = Path(base.out)
    text = json.dumps(result, indent=2) + "\n"
    write_atomically(out / "palette_seeds.json", lambda tmp: tmp.write_text(text))
    write_atomically(out / "palette_seeds.md", lambda tmp: tmp.write_text(table + "\n"))
    if args.json:
        write_atomically(Path(args.json), lambda tmp: tmp.write_text(text))
    print(table)
    copy = f"; copy: {args.json}" if args.json else ""
    print(f"\nmean ± sd over seeds {', '.join(map(str, seeds))}. Written: {out}/palette_seeds.json, "
          f"palette_seeds.md and each seed's palette.json{copy}")
    return 0


def reusable_palette(args: argparse.Namespace, cfg: Any) -> dict[str, Any] | None:
    """The seed run's palette.json when it is newer than its training and evaluated the same palette,
    rank and data (with per-item correctness, for the bootstrap); else None (evaluate again)."""
    import json

    from mlfs_edge.train.run_folder import SUMMARY

    path, summary = Path(cfg.out) / "palette.json", Path(cfg.out) / SUMMARY
    if not path.is_file() or path.stat().st_mtime < summary.stat().st_mtime:
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = record.get("palette_specs") == list(args.palette or cfg.palette) and \
        record.get("eval_rank") == args.rank and record.get("data") == cfg.data
    per_item = "teacher_perplexity" in record or all("correct" in r for r in record.get("rows", []))
    return record if same and per_item else None


def _command(args: argparse.Namespace, cfg: Any) -> str:
    """The command that reproduces a result, recorded in its JSON."""
    import shlex

    from mlfs_edge.train.run_folder import open_run

    argv = getattr(args, "argv", [])
    evaluate = shlex.join(["mlfs-edge", *argv]) if argv[:1] == ["eval"] else \
        f"mlfs-edge eval {shlex.quote(str(cfg.out))}"
    train = open_run(cfg.out).command
    if train.startswith("mlfs-edge eval"):  # trained by `eval --seeds`: that command does both
        return train
    return f"{train} && {evaluate}" if train else evaluate


def _common(args: argparse.Namespace, cfg: Any, summary: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The record fields both tasks share."""
    return {"command": _command(args, cfg), "data": cfg.data, "run": str(cfg.out), "seed": cfg.seed,
            "palette_specs": list(args.palette or cfg.palette), "eval_rank": args.rank, "rows": result["rows"],
            "mlfs_wall_s": summary["mlfs_wall_s"],
            "mlfs_cpu_s": summary.get("mlfs_cpu_s"),  # process CPU seconds: steadier on a shared machine
            "full_finetune_wall_s": summary["full_finetune_wall_s"],  # None for causal_lm (no stage 0)
            "trainable_fraction": summary["trainable_fraction"], "trainable_params": summary.get("trainable_params"),
            "steps": summary["steps"], "lora_rank": result["lora_rank"]}


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)  # `mlfs-edge demo` calls in with a Namespace of its own


def write_palette(out: Path, record: dict[str, Any], table: str, json_path: str | None) -> None:
    """<out>/palette.json and palette.md; with --json a copy of the JSON there, and the plot beside it."""
    import json
    import shutil

    from mlfs_edge.atomic import write_atomically

    text = json.dumps(record, indent=2) + "\n"
    write_atomically(out / "palette.json", lambda tmp: tmp.write_text(text))
    write_atomically(out / "palette.md", lambda tmp: tmp.write_text(table + "\n"))
    if json_path:  # the result travels with its plot: benchmarks/results/<name>.json and .png
        write_atomically(Path(json_path), lambda tmp: tmp.write_text(text))
        shutil.copyfile(out / "palette.png", Path(json_path).with_suffix(".png"))


def classification_palette(args: argparse.Namespace, cfg: Any, summary: dict[str, Any]) -> tuple[dict, str, str]:
    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.palette import evaluate_palette, plot_palette
    from mlfs_edge.report import markdown_table
    from mlfs_edge.train.run_folder import SUPERNET_DIR

    out = Path(cfg.out)
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    result = evaluate_palette(out / SUPERNET_DIR, data, list(args.palette or cfg.palette), cfg.max_eval_examples,
                              rank=args.rank, progress=_progress(args))
    record = {**_common(args, cfg, summary, result), "teacher_accuracy": result["teacher_accuracy"],
              "teacher_correct": result["teacher_correct"], "test_examples": result["test_examples"]}
    table = markdown_table([{
        "sub-network": r["name"], "layer params": f"{r['params'] / 1e6:.2f}M",
        "fraction": f"{100 * r['param_fraction']:.1f}%", "acc MLFS": f"{100 * r['accuracy']:.2f}%",
        "acc no MLFS": f"{100 * r['accuracy_no_mlfs']:.2f}%",
        "Δ vs teacher": f"{100 * (r['accuracy'] - result['teacher_accuracy']):+.2f}"} for r in result["rows"]])
    plot_palette(result, out / "palette.png", f"MLFS on {data.name}: accuracy vs size")
    return record, table, (f"teacher accuracy {100 * result['teacher_accuracy']:.2f}% on {result['test_examples']} "
                           f"test sentences; MLFS training {summary['mlfs_wall_s']:.0f} s vs teacher fine-tune "
                           f"{summary['full_finetune_wall_s']:.0f} s")


def _lm_palette(args: argparse.Namespace, cfg: Any, summary: dict[str, Any]) -> tuple[dict, str, str]:
    """Decoders: held-out perplexity instead of accuracy (no stage 0: the pretrained LM is the teacher)."""
    from mlfs_edge.data import load_lm_text, load_text
    from mlfs_edge.eval.palette_lm import evaluate_lm_palette, plot_lm_palette
    from mlfs_edge.report import markdown_table
    from mlfs_edge.train.run_folder import SUPERNET_DIR

    out = Path(cfg.out)
    corpus = load_lm_text(cfg.data, cfg.text_column)
    # Draft acceptance also on a second kind of text (a play instead of news, or news for other data).
    second = "hamlet" if cfg.data != "hamlet" else "news"
    result = evaluate_lm_palette(out / SUPERNET_DIR, corpus.test, list(args.palette or cfg.palette), cfg.block_size,
                                 cfg.max_eval_tokens, rank=args.rank, progress=_progress(args),
                                 draft_texts={second: load_text(second).test})
    record = {**_common(args, cfg, summary, result), "task": "causal_lm", "model": cfg.model,
              "split": "test", "teacher": summary["teacher"], "teacher_perplexity": result["teacher_perplexity"],
              "eval_tokens": result["eval_tokens"], "block_size": result["block_size"],
              "train_tokens": summary["steps"] * cfg.batch_size * cfg.block_size}
    table = markdown_table([{
        "sub-network": r["name"], "layer params": f"{r['params'] / 1e6:.2f}M",
        "fraction": f"{100 * r['param_fraction']:.1f}%", "ppl MLFS": f"{r['perplexity']:.2f}",
        "ppl no MLFS": f"{r['perplexity_no_mlfs']:.2f}",
        f"draft accept. ({cfg.data})": f"{100 * r['draft_acceptance']:.1f}%",
        f"draft accept. ({second})": f"{100 * r[f'draft_acceptance_{second}']:.1f}%"} for r in result["rows"]])
    plot_lm_palette(result, out / "palette.png", f"MLFS {cfg.model} on {cfg.data}: perplexity vs size")
    return record, table, (f"pretrained full model perplexity {result['teacher_perplexity']:.2f} on "
                           f"{result['eval_tokens']} held-out tokens ({cfg.data} test split, blocks of "
                           f"{cfg.block_size}); MLFS training {summary['mlfs_wall_s']:.0f} s, {summary['steps']} steps")
