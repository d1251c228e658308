"""A palette over several seeds: mean ± sd per sub-network and paired bootstrap intervals.

`mlfs-edge eval --seeds 0,1,2` (and benchmarks/mlfs_vs_separate.py) evaluate one MLFS run per seed
(`train.mlfs.train_seed`), each writing its own palette.json; `summarize_seeds` folds those records
into one: accuracy (causal LM: perplexity) mean ± sd across seeds per sub-network, the same for the
sliced teacher without MLFS, and for classification the paired bootstrap interval of "MLFS − sliced
teacher" over the test items (`stats.paired_bootstrap`: items resampled, each side averaged over its
seeds). `ensure_teachers` and `run_in_parallel` let the benchmarks train those runs as separate
processes at once (`--jobs N`: a GPU or a many-core machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlfs_edge.report import markdown_table, mean_sd_cell
from mlfs_edge.stats import BOOTSTRAP_SEED, LEVEL, RESAMPLES, mean_sd, paired_bootstrap

if TYPE_CHECKING:
    from mlfs_edge.train.mlfs_config import MLFSConfig

# `python -c` of this runs the mlfs-edge command line with the arguments that follow
CLI = "import sys; from mlfs_edge.cli import main; sys.exit(main(sys.argv[1:]))"


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' → [0, 1, 2]: distinct non-negative integers, in the order given."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.isdigit() for p in parts):
        raise ValueError(f"--seeds takes distinct non-negative integers separated by commas (e.g. 0,1,2), got "
                         f"{text!r}")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds names a seed twice: {text!r}")
    return seeds


def teacher_note(shared: bool, task: str) -> str:
    """What the seeds share, said in the output and recorded in the JSON."""
    if task == "causal_lm":
        return "no stage 0 (the pretrained LM is the teacher): only the MLFS seed changes"
    if shared:
        return "one stage-0 teacher shared by all seeds: the spread is MLFS's alone"
    return "a stage-0 teacher per seed: the spread includes the teacher fine-tune's"


class RunsFailed(RuntimeError):
    """Some of the processes `run_in_parallel` started failed: the message names their logs."""


def ensure_teachers(cfgs: Sequence[MLFSConfig], progress: bool = True) -> None:
    """The stage-0 teacher of each classification config in `cfgs`, fine-tuned now where it is missing:
    runs started at once in parallel processes would otherwise each begin the same fine-tune (or, when
    they name the teacher folder, fail on it). A causal LM has no stage 0."""
    from mlfs_edge.data import load_classification
    from mlfs_edge.train.run_folder import teacher_folder
    from mlfs_edge.train.tasks import ensure_teacher

    done: set[Path] = set()
    for cfg in cfgs:
        folder = teacher_folder(cfg).resolve()
        if cfg.resolved_task() == "causal_lm" or folder in done:
            continue
        done.add(folder)
        if (folder / "mlfs_meta.json").is_file():
            continue  # already fine-tuned: no need to read the data
        print(f"fine-tuning the stage-0 teacher {folder} first (the parallel runs share it)", flush=True)
        ensure_teacher(cfg, load_classification(cfg.data, cfg.text_column, cfg.label_column), progress)


def run_in_parallel(runs: Sequence[tuple[list[str], Path]], jobs: int) -> None:
    """Each (argv, log) as its own `python <argv>` process, up to `jobs` at a time, its output in its log
    (runs must not share files: each seed trains in its own folder). Each process gets one OpenMP thread
    unless OMP_NUM_THREADS is set: N processes, not N × cores. Raises RunsFailed naming the failed logs."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    queue = list(runs)
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    running: list[tuple[subprocess.Popen, Path]] = []
    failed: list[Path] = []
    folders = ", ".join(sorted({str(log.parent) for _, log in runs}))
    print(f"{len(queue)} runs, {jobs} at a time (logs in {folders})", flush=True)
    while queue or running:
        while queue and len(running) < jobs:
            argv, log = queue.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                running.append((subprocess.Popen([sys.executable, *argv], stdout=f, stderr=subprocess.STDOUT,
                                                 env=env), log))
        time.sleep(1)
        for proc, log in [r for r in running if r[0].poll() is not None]:
            running.remove((proc, log))
            if proc.returncode != 0:
                failed.append(log)
            print(f"  {'FAILED' if proc.returncode else 'done'}: {log.stem} ({len(queue) + len(running)} left)",
                  flush=True)
    if failed:
        tail = "\n".join(failed[0].read_text().splitlines()[-5:])
        raise RunsFailed(f"{len(failed)} run(s) failed (logs: {', '.join(map(str, failed))}); the first ends:\n"
                           f"{tail}")


def _mean_sd_fields(prefix: str, values: list[float]) -> dict[str, Any]:
    mean, sd = mean_sd(values)
    return {f"{prefix}_mean": mean, f"{prefix}_sd": sd, f"{prefix}_per_seed": values}


def summarize_seeds(records: Mapping[int, dict[str, Any]], resamples: int = RESAMPLES) -> dict[str, Any]:
    """One record from the palette.json records of several seeds ({seed: record}, same palette and
    test items). Classification rows: accuracy_mean/sd/per_seed, no_mlfs_mean/sd/per_seed and
    diff_vs_no_mlfs (MLFS − sliced teacher, fractions) with its bootstrap interval; causal LM rows:
    perplexity_* and perplexity_no_mlfs_*."""
    if not records:
        raise ValueError("no seeds to summarize")
    seeds = sorted(records)
    recs = [records[s] for s in seeds]
    names = [r["name"] for r in recs[0]["rows"]]
    for seed, rec in zip(seeds, recs, strict=True):
        if [r["name"] for r in rec["rows"]] != names:
            raise ValueError(f"seed {seed} evaluated another palette than seed {seeds[0]}: evaluate all with the "
                             "same --palette")
    lm = "teacher_perplexity" in recs[0]
    rows = []
    for i, name in enumerate(names):
        per_seed = [rec["rows"][i] for rec in recs]
        first = per_seed[0]
        row: dict[str, Any] = {"name": name, "subnet": first["subnet"], "params": first["params"],
                               "param_fraction": first["param_fraction"]}
        if lm:
            row |= _mean_sd_fields("perplexity", [r["perplexity"] for r in per_seed])
            row |= _mean_sd_fields("perplexity_no_mlfs", [r["perplexity_no_mlfs"] for r in per_seed])
        else:
            row |= _mean_sd_fields("accuracy", [r["accuracy"] for r in per_seed])
            row |= _mean_sd_fields("no_mlfs", [r["accuracy_no_mlfs"] for r in per_seed])
            ci = paired_bootstrap([r["correct"] for r in per_seed], [r["correct_no_mlfs"] for r in per_seed],
                                  resamples=resamples)
            row |= {"diff_vs_no_mlfs": ci.diff, "diff_vs_no_mlfs_ci": [ci.low, ci.high]}
        rows.append(row)
    out: dict[str, Any] = {"seeds": seeds, "task": "causal_lm" if lm else "classification", "data": recs[0]["data"],
                           "runs": {str(s): r.get("run", "") for s, r in zip(seeds, recs, strict=True)}}
    if lm:
        out |= _mean_sd_fields("teacher_perplexity", [r["teacher_perplexity"] for r in recs])
    else:
        out |= _mean_sd_fields("teacher_accuracy", [r["teacher_accuracy"] for r in recs])
        out |= {"test_examples": recs[0]["test_examples"],
                "bootstrap": {"resamples": resamples, "level": LEVEL, "rng_seed": BOOTSTRAP_SEED,
                              "unit": "test item; each side's per-item correctness averaged over its seeds"}}
    out |= _mean_sd_fields("mlfs_wall_s", [r["mlfs_wall_s"] for r in recs])
    out["rows"] = rows
    return out


def seeds_table(summary: dict[str, Any]) -> str:
    """The palette as mean ± sd over seeds (accuracy in %, or perplexity), markdown."""
    if summary["task"] == "causal_lm":
        return markdown_table([{
            "sub-network": r["name"], "layer params": f"{r['params'] / 1e6:.2f}M",
            "fraction": f"{100 * r['param_fraction']:.1f}%",
            "ppl MLFS": mean_sd_cell(r["perplexity_mean"], r["perplexity_sd"], scale=1.0),
            "ppl no MLFS": mean_sd_cell(r["perplexity_no_mlfs_mean"], r["perplexity_no_mlfs_sd"], scale=1.0)}
            for r in summary["rows"]])
    teacher = summary["teacher_accuracy_mean"]
    level = round(100 * summary["bootstrap"]["level"])
    ci = lambda r: f"{100 * r['diff_vs_no_mlfs']:+.2f} [{100 * r['diff_vs_no_mlfs_ci'][0]:+.2f}, "\
                   f"{100 * r['diff_vs_no_mlfs_ci'][1]:+.2f}]"  # noqa: E731
    return markdown_table([{
        "sub-network": r["name"], "layer params": f"{r['params'] / 1e6:.2f}M",
        "fraction": f"{100 * r['param_fraction']:.1f}%",
        "MLFS acc %": mean_sd_cell(r["accuracy_mean"], r["accuracy_sd"]),
        "Δ vs teacher": f"{100 * (r['accuracy_mean'] - teacher):+.2f}",
        "sliced teacher, no MLFS %": mean_sd_cell(r["no_mlfs_mean"], r["no_mlfs_sd"]),
        f"MLFS − sliced [{level} % CI]": ci(r)}
        for r in summary["rows"]])
