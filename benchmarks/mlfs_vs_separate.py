"""Cost and quality of one MLFS run vs fine-tuning every sub-network separately (issues 8 and 16).

The alternative to one supernet run is one training run per deployed model: slice each palette
sub-network out of the (importance-ordered) teacher as a pruned copy and fine-tune it on its own
with LoRA + knowledge distillation from the teacher (LLM-Neo: the same adapters and the same KD loss
MLFS uses, the strongest of the project's LoRA baselines). Each copy gets `--epochs` of the training
split (length-grouped batches as everywhere else). All runs happen here, one after another, on the
same machine.

One seed (the config's MLFS run, which must be trained and evaluated first):

    .venv/bin/python benchmarks/mlfs_vs_separate.py --config configs/mlfs_minilm_rt.toml

writes benchmarks/results/mlfs_vs_separate.json: each copy's wall time and accuracy beside MLFS's.

Several seeds (issue 16: the quality study with error bars):

    .venv/bin/python benchmarks/mlfs_vs_separate.py --config configs/mlfs_minilm_rt.toml --seeds 0,1,2

runs `mlfs-edge eval --config ... --seeds 0,1,2` (the whole MLFS run per seed, trained or reused,
one stage-0 teacher shared by all seeds unless --teacher-per-seed), then the separate LoRA-KD
fine-tunes once per seed (seeded with it; kept in each seed's run folder as separate_kd.json and
reused). With `--jobs N` each seed's MLFS run and each seed's separate fine-tunes are first trained
as their own processes, N at a time (logs in <out>/logs; on a GPU or a many-core machine), after the
teacher; the study then reuses them. It writes benchmarks/results/mlfs_quality_<data>.json: {seeds,
teacher_mean, teacher_sd, mlfs_wall_s, separate_wall_s, rows: [{subnet, param_fraction, mlfs_mean,
mlfs_sd, separate_kd_mean, sliced_mean, diff_vs_separate_ci: [low, high]}]}, accuracies in %. The interval is the paired
percentile bootstrap of MLFS − separate over the test items (mlfs_edge.stats: 2,000 resamples, fixed
RNG seed; each method's per-item correctness averaged over its seeds). For the full network the
"separate fine-tune" is the teacher itself (its full fine-tune).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SEPARATE = "separate_kd.json"  # a seed's separate fine-tunes, in its run folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mlfs_minilm_rt.toml", help="MLFS training config (TOML)")
    p.add_argument("--quick", action="store_true", help="the config's [quick] variant (a smoke test)")
    p.add_argument("--epochs", type=float, default=1.0, help="training epochs per separate fine-tune")
    p.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="the quality study over these seeds (MLFS trained or reused per seed); writes "
                        "mlfs_quality_<data>.json")
    p.add_argument("--teacher-per-seed", action="store_true",
                   help="with --seeds: each seed fine-tunes its own stage-0 teacher (default: one shared)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="with --seeds: train each seed's MLFS run and each seed's separate fine-tunes as their "
                        "own processes, N at a time (a GPU or many cores; default 1: one after another)")
    p.add_argument("--separate-only", action="store_true",
                   help="with --seeds: only the seeds' separate fine-tunes, kept in their run folders (what "
                        "--jobs runs per seed), no MLFS and no result file")
    p.add_argument("--json", default=None,
                   help="result file (default: results/mlfs_vs_separate.json, with --seeds "
                        "results/mlfs_quality_<data>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mlfs_edge import quiet

    quiet.install()  # the known third-party noise hidden, as in `mlfs-edge`
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/mlfs_vs_separate.py", *argv])
    from mlfs_edge.eval.seeds import RunsFailed

    try:
        if args.seeds is None:
            if args.jobs != 1 or args.separate_only:
                raise ValueError("--jobs and --separate-only go with --seeds (the quality study)")
            single_seed(args, command)
        elif args.separate_only:
            separate_only(args)
        else:
            over_seeds(args, command)
    except (ValueError, RunsFailed) as e:  # bad input, a missing run or a failed parallel run: no traceback
        raise SystemExit(f"mlfs_vs_separate: error: {e}") from None


def separate_kd(cfg: Any, seed: int, epochs: float, progress: bool, done: Sequence[dict[str, Any]] = (),
                on_row: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """One LoRA-KD fine-tune per palette sub-network (all but the full one) of the run `cfg`, sliced
    from its importance-ordered teacher and seeded with `seed`: [{subnet, param_fraction, steps,
    wall_s, accuracy, correct}] (`correct`: per-item correctness over the test split). Sub-networks
    in `done` (rows of an interrupted call) are not trained again; `on_row` gets the rows so far
    after each fine-tune (to keep them)."""
    import torch

    from mlfs_edge.config import ArchSpec, SubnetConfig
    from mlfs_edge.data import load_classification
    from mlfs_edge.metrics import compute_device, device_name, evaluate_classifier
    from mlfs_edge.models import load_classifier
    from mlfs_edge.prune.retrain import ClassifierTask, RetrainConfig, retrain
    from mlfs_edge.stats import encode_correct
    from mlfs_edge.supernet import reorder_by_importance
    from mlfs_edge.supernet.extract import extract
    from mlfs_edge.train.mlfs import calibration_batches
    from mlfs_edge.train.run_folder import teacher_folder

    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    train, test = data.train.subset(cfg.max_train_examples), data.test.subset(cfg.max_eval_examples)
    teacher_dir = teacher_folder(cfg)
    teacher, tokenizer = load_classifier(teacher_dir, data.num_labels, data.label_names)
    teacher.eval()
    reorder_by_importance(teacher, cfg.importance, calibration_batches(tokenizer, data.train.texts, cfg))  # as MLFS
    device = compute_device()  # where MLFS trains too
    teacher.to(device)
    arch = ArchSpec.from_hf_config(teacher.config)
    task = ClassifierTask(tokenizer, cfg.max_length)
    steps = max(1, math.ceil(epochs * len(train) / cfg.batch_size))
    rcfg = RetrainConfig(steps=steps, batch_size=cfg.batch_size, lora_lr=cfg.stages[0].lr, lora_r=cfg.lora.rank,
                         lora_alpha=int(cfg.lora.alpha), temperature=cfg.loss.temperature, seed=seed)
    full = SubnetConfig.full(arch)
    subnets = [c for c in (SubnetConfig.parse(s, arch) for s in cfg.palette) if c != full]
    finished = {r["subnet"]: r for r in done}
    rows = []
    for sub in sorted(subnets, key=lambda c: c.layer_params(arch)):
        if sub.name in finished:
            rows.append(finished[sub.name])
            print(f"  {sub.name}: reused ({100 * finished[sub.name]['accuracy']:.2f}%)")
            continue
        torch.manual_seed(seed)
        student = extract(teacher, sub).to(device).train()
        t0, c0 = time.perf_counter(), time.process_time()
        res = retrain(student, task, train, "lora-kd", rcfg, teacher=teacher, progress=progress)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        result = evaluate_classifier(res.model, tokenizer, test, max_length=cfg.max_length)
        rows.append({"subnet": sub.name, "param_fraction": sub.param_fraction(arch), "steps": steps,
                     "wall_s": wall, "cpu_s": cpu, "device": device_name(device), "accuracy": result.accuracy,
                     "correct": encode_correct(result.predictions, test.labels)})
        print(f"  {sub.name}: {steps} LoRA-KD steps in {wall:.0f} s, accuracy {100 * result.accuracy:.2f}%")
        if on_row is not None:
            on_row(rows)
    return rows


def single_seed(args: argparse.Namespace, command: str) -> None:
    """The cost comparison against the config's one MLFS run (results/mlfs_vs_separate.json)."""
    from mlfs_edge.report import markdown_table
    from mlfs_edge.train.mlfs import SUMMARY, MLFSConfig

    cfg = MLFSConfig.from_toml(args.config, quick=args.quick)
    out = Path(cfg.out)
    if not (out / "palette.json").is_file():
        raise ValueError(f"run `mlfs-edge train --config {args.config}` and `mlfs-edge eval --config {args.config}` "
                         "first: this compares against that run")
    summary = json.loads((out / SUMMARY).read_text())
    mlfs_acc = {r["name"]: r["accuracy"] for r in json.loads((out / "palette.json").read_text())["rows"]}
    rows = [{"subnet": r["subnet"], "param_fraction": r["param_fraction"], "steps": r["steps"],
             "wall_s": r["wall_s"], "accuracy_separate": r["accuracy"], "accuracy_mlfs": mlfs_acc.get(r["subnet"])}
            for r in separate_kd(cfg, cfg.seed, args.epochs, not args.no_progress)]
    separate = sum(r["wall_s"] for r in rows)
    teacher_s, mlfs_s = summary["full_finetune_wall_s"], summary["mlfs_wall_s"]
    print(markdown_table([{"sub-network": r["subnet"], "fraction": f"{100 * r['param_fraction']:.1f}%",
                           "separate: wall": f"{r['wall_s']:.0f} s",
                           "separate: acc": f"{100 * r['accuracy_separate']:.2f}%",
                           "MLFS acc": f"{100 * r['accuracy_mlfs']:.2f}%" if r["accuracy_mlfs"] else "-"}
                          for r in rows]))
    print(f"\n{len(rows)} separate fine-tunes: {separate:.0f} s = {separate / teacher_s:.2f}× the teacher fine-tune "
          f"({teacher_s:.0f} s); one MLFS run for all of them: {mlfs_s:.0f} s = {mlfs_s / teacher_s:.2f}× "
          f"(MLFS / separate = {mlfs_s / separate:.2f})")
    record = {"command": command, "config": args.config, "epochs_per_subnet": args.epochs,
              "method": "lora-kd on the pruned copy",
              "teacher_finetune_wall_s": teacher_s, "mlfs_wall_s": mlfs_s, "separate_total_wall_s": separate,
              "separate_vs_teacher": separate / teacher_s, "mlfs_vs_teacher": mlfs_s / teacher_s,
              "mlfs_vs_separate": mlfs_s / separate, "rows": rows}
    path = Path(args.json or RESULTS / "mlfs_vs_separate.json")
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {path}")


def separate_key(run_cfg: Any, seed: int, epochs: float) -> dict[str, Any]:
    """Everything `separate_kd` reads from the config: a kept result is reused only when all of it matches."""
    from mlfs_edge.train.run_folder import teacher_folder

    # the teacher as the folder itself: the same fine-tunes whether a config names it or leaves it empty
    return {"seed": seed, "epochs": epochs, "palette": list(run_cfg.palette),
            "teacher": str(teacher_folder(run_cfg).resolve()),
            "data": run_cfg.data, "max_train_examples": run_cfg.max_train_examples,
            "max_eval_examples": run_cfg.max_eval_examples, "max_length": run_cfg.max_length,
            "batch_size": run_cfg.batch_size, "importance": run_cfg.importance,
            "calibration_examples": run_cfg.calibration_examples, "lora_rank": run_cfg.lora.rank,
            "lora_alpha": run_cfg.lora.alpha, "lr": run_cfg.stages[0].lr, "temperature": run_cfg.loss.temperature}


def seed_separate(run_cfg: Any, seed: int, epochs: float, progress: bool) -> tuple[list[dict[str, Any]], bool]:
    """The seed's separate fine-tunes: reused from <run>/separate_kd.json when it was made with the same
    seed, epochs, palette, teacher, data and fine-tune recipe (`separate_key`), else run and written
    there — after each sub-network, so an interrupted benchmark picks up at the next one. They do not
    depend on the MLFS run itself, so retraining MLFS with another stage budget reuses them."""
    from mlfs_edge.atomic import write_atomically

    path = Path(run_cfg.out) / SEPARATE
    key = separate_key(run_cfg, seed, epochs)
    done: list[dict[str, Any]] = []
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            if not saved.get("partial"):
                return saved["rows"], True
            done = saved["rows"]

    def keep(rows: list[dict[str, Any]], partial: bool = True) -> None:
        text = json.dumps({"key": key, "partial": partial, "rows": rows}, indent=2) + "\n"
        write_atomically(path, lambda tmp: tmp.write_text(text))

    rows = separate_kd(run_cfg, seed, epochs, progress, done, keep)
    keep(rows, partial=False)
    return rows, False


def study_configs(args: argparse.Namespace) -> tuple[Any, list[int], list[Any]]:
    """The config, the seeds and each seed's run config (its folder and teacher)."""
    from mlfs_edge.eval.seeds import parse_seeds
    from mlfs_edge.train.mlfs import MLFSConfig
    from mlfs_edge.train.run_folder import seed_config

    seeds = parse_seeds(args.seeds)
    base = MLFSConfig.from_toml(args.config, quick=args.quick)
    if base.resolved_task() == "causal_lm":
        raise ValueError("the separate LoRA-KD comparison is for classification configs")
    return base, seeds, [seed_config(base, s, not args.teacher_per_seed) for s in seeds]


def separate_only(args: argparse.Namespace) -> None:
    """--separate-only: each seed's separate fine-tunes, kept in its run folder (reused when done)."""
    _, seeds, run_cfgs = study_configs(args)
    for seed, run_cfg in zip(seeds, run_cfgs, strict=True):
        rows, reused = seed_separate(run_cfg, seed, args.epochs, not args.no_progress)
        print(f"seed {seed}: {len(rows)} separate fine-tunes {'reused' if reused else 'run'} "
              f"({run_cfg.out}/{SEPARATE})")


def train_in_parallel(args: argparse.Namespace, base: Any, seeds: list[int], run_cfgs: list[Any]) -> None:
    """--jobs N: the teacher(s) first, then per seed one MLFS process and one separate-fine-tune process."""
    from mlfs_edge.eval.seeds import CLI, ensure_teachers, run_in_parallel

    ensure_teachers([base] if not args.teacher_per_seed else run_cfgs, progress=not args.no_progress)
    flags = (["--quick"] * args.quick) + (["--teacher-per-seed"] * args.teacher_per_seed) + ["--no-progress"]
    logs = Path(base.out) / "logs"
    runs = []
    for seed in seeds:
        runs.append((["-c", CLI, "eval", "--config", args.config, "--seeds", str(seed), *flags],
                     logs / f"mlfs.seed{seed}.log"))
        runs.append(([__file__, "--config", args.config, "--seeds", str(seed), "--separate-only",
                      "--epochs", str(args.epochs), *flags], logs / f"separate.seed{seed}.log"))
    run_in_parallel(runs, args.jobs)


def over_seeds(args: argparse.Namespace, command: str) -> None:
    """The issue-16 quality study: MLFS over seeds vs a separate LoRA-KD fine-tune per size and seed."""
    from mlfs_edge.atomic import write_atomically
    from mlfs_edge.cli import main as cli
    from mlfs_edge.report import markdown_table, mean_sd_cell
    from mlfs_edge.stats import BOOTSTRAP_SEED, LEVEL, RESAMPLES, mean_sd, paired_bootstrap

    base, seeds, run_cfgs = study_configs(args)
    if args.jobs > 1:
        train_in_parallel(args, base, seeds, run_cfgs)
    eval_argv = ["eval", "--config", args.config, "--seeds", args.seeds] + (["--quick"] * args.quick) + \
        (["--teacher-per-seed"] * args.teacher_per_seed) + (["--no-progress"] * args.no_progress)
    print(f"MLFS over seeds {args.seeds}: mlfs-edge {shlex.join(eval_argv)}")
    if cli(eval_argv) != 0:
        raise SystemExit(1)  # its one-line error is printed already
    study = json.loads((Path(base.out) / "palette_seeds.json").read_text())
    palettes, separate = {}, {}
    for seed, run_cfg in zip(seeds, run_cfgs, strict=True):
        palettes[seed] = json.loads((Path(run_cfg.out) / "palette.json").read_text())
        separate[seed], reused = seed_separate(run_cfg, seed, args.epochs, not args.no_progress)
        print(f"seed {seed}: {len(separate[seed])} separate fine-tunes {'reused' if reused else 'run'} "
              f"({run_cfg.out}/{SEPARATE})")
    teacher_mean, teacher_sd = mean_sd([p["teacher_accuracy"] for p in palettes.values()])
    pct = lambda v: None if v is None else 100 * v  # noqa: E731  (the issue's schema: accuracies in %)
    rows = []
    for i, row in enumerate(study["rows"]):
        name = row["name"]
        mlfs = [palettes[s]["rows"][i]["correct"] for s in seeds]
        sliced = [palettes[s]["rows"][i]["correct_no_mlfs"] for s in seeds]
        if row["param_fraction"] == 1.0:  # the full network's own fine-tune is the teacher
            alt_acc = [palettes[s]["teacher_accuracy"] for s in seeds]
            alt = [palettes[s]["teacher_correct"] for s in seeds]
        else:
            found = [next((r for r in separate[s] if r["subnet"] == name), None) for s in seeds]
            if any(r is None for r in found):
                raise ValueError(f"{name}: no separate fine-tune for every seed (palettes differ?)")
            alt_acc, alt = [r["accuracy"] for r in found], [r["correct"] for r in found]
        vs_sep = paired_bootstrap(mlfs, alt)
        vs_sliced = paired_bootstrap(mlfs, sliced)
        sep_mean, sep_sd = mean_sd(alt_acc)
        rows.append({"subnet": name, "param_fraction": row["param_fraction"],
                     "mlfs_mean": pct(row["accuracy_mean"]), "mlfs_sd": pct(row["accuracy_sd"]),
                     "separate_kd_mean": pct(sep_mean), "separate_kd_sd": pct(sep_sd),
                     "separate_is_teacher": row["param_fraction"] == 1.0,
                     "sliced_mean": pct(row["no_mlfs_mean"]), "sliced_sd": pct(row["no_mlfs_sd"]),
                     "diff_vs_separate": pct(vs_sep.diff), "diff_vs_separate_ci": [pct(vs_sep.low), pct(vs_sep.high)],
                     "diff_vs_sliced": pct(vs_sliced.diff), "diff_vs_sliced_ci": [pct(vs_sliced.low),
                                                                                   pct(vs_sliced.high)]})
    mlfs_s = study["mlfs_wall_s_mean"]
    # process CPU seconds, the steadier cost on a shared machine (rows of older separate_kd.json files lack it)
    mlfs_cpu = [p.get("mlfs_cpu_s") for p in palettes.values()]
    separate_cpu = [sum(r["cpu_s"] for r in separate[s]) if all("cpu_s" in r for r in separate[s]) else None
                    for s in seeds]
    cpu_ratio = mean_sd(mlfs_cpu)[0] / mean_sd(separate_cpu)[0] if None not in mlfs_cpu + separate_cpu else None
    separate_s = mean_sd([sum(r["wall_s"] for r in separate[s]) for s in seeds])[0]
    teacher_s = mean_sd([p["full_finetune_wall_s"] for p in palettes.values()])[0]
    record = {"command": command, "config": args.config, "data": base.data, "seeds": seeds,
              "teacher": study["teacher"], "shared_teacher": study["shared_teacher"],
              "teacher_mean": pct(teacher_mean), "teacher_sd": pct(teacher_sd),
              "mlfs_wall_s": mlfs_s, "mlfs_wall_s_sd": study["mlfs_wall_s_sd"], "separate_wall_s": separate_s,
              "mlfs_cpu_s": mlfs_cpu, "separate_cpu_s": separate_cpu, "mlfs_vs_separate_cpu": cpu_ratio,
              "teacher_finetune_wall_s": teacher_s, "mlfs_vs_separate_cost": mlfs_s / separate_s,
              "epochs_per_subnet": args.epochs, "method": "lora-kd on the pruned copy, one per sub-network and seed",
              "test_examples": study["test_examples"],
              "bootstrap": {"resamples": RESAMPLES, "level": LEVEL, "rng_seed": BOOTSTRAP_SEED,
                            "unit": "test item; each method's per-item correctness averaged over its seeds",
                            "full_row": "the alternative to MLFS's full network is the teacher (its full fine-tune)"},
              "rows": rows}
    ci = lambda lo_hi: f"[{lo_hi[0]:+.2f}, {lo_hi[1]:+.2f}]"  # noqa: E731
    print(markdown_table([{
        "sub-network": r["subnet"], "fraction": f"{100 * r['param_fraction']:.1f}%",
        "MLFS %": mean_sd_cell(r["mlfs_mean"], r["mlfs_sd"], scale=1.0),
        "separate KD %": mean_sd_cell(r["separate_kd_mean"], r["separate_kd_sd"], scale=1.0)
        + (" (teacher)" if r["separate_is_teacher"] else ""),
        "MLFS − separate [95 % CI]": f"{r['diff_vs_separate']:+.2f} {ci(r['diff_vs_separate_ci'])}",
        "sliced %": mean_sd_cell(r["sliced_mean"], r["sliced_sd"], scale=1.0),
        "MLFS − sliced [95 % CI]": f"{r['diff_vs_sliced']:+.2f} {ci(r['diff_vs_sliced_ci'])}"} for r in rows]))
    print(f"\nteacher {mean_sd_cell(teacher_mean, teacher_sd)} % ({study['teacher']}); MLFS {mlfs_s:.0f} s per seed "
          f"vs {len(separate[seeds[0]])} separate fine-tunes {separate_s:.0f} s (MLFS / separate = "
          f"{mlfs_s / separate_s:.2f}{'' if cpu_ratio is None else f'; in CPU time {cpu_ratio:.2f}'}); seeds "
          f"{', '.join(map(str, seeds))}")
    path = Path(args.json or RESULTS / f"mlfs_quality_{Path(base.data).stem}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
    print(f"written {path}")


if __name__ == "__main__":
    main()
