"""Which training change helps MLFS, each measured on its own over seeds (issue 16, deliverable 2).

Every variant is the config with ONE change (below), trained and evaluated over the same seeds with
the config's stage-0 teacher shared by all (so the spread is MLFS's alone and every variant distils
from the same teacher), then compared with the unchanged config sub-network by sub-network: mean ±
sd over seeds and the paired bootstrap interval of "variant − config" over the test items (each
side's per-item correctness averaged over its seeds; mlfs_edge.stats).

    .venv/bin/python benchmarks/mlfs_ablation.py --config configs/mlfs_minilm_rt.toml --seeds 0,1,2

The unchanged config is `mlfs-edge eval --config CONFIG --seeds ...` (the runs the quality study
trains: reused when they exist). Each variant's config is written to
runs/ablation_<data>/<variant>.toml and trained there (`mlfs-edge eval --config that.toml --seeds
...`: finished seeds reused, interrupted ones resumed), so any variant can be rerun by hand.
Writes benchmarks/results/mlfs_ablation_<data>.json (with the command) and prints the table.

Variants (--variants picks some; default all):
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import tomllib

RESULTS = Path(__file__).resolve().parent / "results"

# name → (what it changes, the change as TOML keys merged into the config)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "feature_replaced": ("feature distillation maps each kept layer to the last teacher layer it replaces "
                         "(TinyBERT / DynaBERT) instead of the same layer", {"loss": {"feature_map": "replaced"}}),
    "sampling_params": ("random sandwich slots drawn evenly in layer parameters instead of each dimension "
                        "uniformly", {"sampling": "params"}),
    "palette_share": ("half of the random sandwich slots are palette members (a target-size prior)",
                      {"palette_share": 0.5}),
    "augment_edit": ("+1 teacher-labelled word-edited copy of every training sentence",
                     {"augment": "edit", "augment_ratio": 1.0}),
    "augment_news": ("+1 teacher-labelled news sentence per training sentence (off-domain text)",
                     {"augment": "news", "augment_ratio": 1.0}),
    "rank16": ("LoRA rank 16 (alpha 32) instead of 8: the per-stage capacity", {"lora": {"rank": 16, "alpha": 32.0}}),
    "stages_rebalanced": ("the same 550 steps split 50 / 500 instead of 150 / 400: more of the budget where "
                          "depth varies", {"stages": {0: {"steps": 50}, 1: {"steps": 500}}}),
    "rank16_rebalanced": ("rank16 and stages_rebalanced together (the two that helped on their own)",
                          {"lora": {"rank": 16, "alpha": 32.0}, "stages": {0: {"steps": 50}, 1: {"steps": 500}}}),
    "stage2_lr": ("the widths+depths stage at learning rate 5e-4 instead of 1e-3 (its fresh adapters start from "
                  "the merged stage-1 model)", {"stages": {1: {"lr": 5e-4}}}),
}
__doc__ += "\n".join(f"  {name}: {what}" for name, (what, _) in VARIANTS.items()) + "\n"


def merged(raw: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The config's TOML dict with `change` merged in (nested tables key by key; "stages" by index)."""
    out = copy.deepcopy(raw)
    for key, value in change.items():
        if key == "stages":
            for i, fields in value.items():
                out["stages"][i].update(fields)
        elif isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mlfs_minilm_rt.toml", help="the MLFS config every variant changes")
    p.add_argument("--seeds", default="0,1,2", metavar="0,1,2", help="seeds per variant (default 0,1,2)")
    p.add_argument("--variants", default=",".join(VARIANTS), metavar="A,B",
                   help=f"variants to run (default all: {', '.join(VARIANTS)})")
    p.add_argument("--quick", action="store_true", help="the config's [quick] variant (a smoke test)")
    p.add_argument("--work-dir", default=None, help="where variants train (default runs/ablation_<data>)")
    p.add_argument("--reference-out", default=None, metavar="DIR",
                   help="train the unchanged config in DIR (as <work-dir>/config.toml) instead of its own out: "
                        "the whole ablation again, e.g. on another machine, without touching the config's runs")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train up to N runs (a variant's seed each) at once, one process each: for a machine "
                        "with many cores or a GPU (default 1: one after another)")
    p.add_argument("--json", default=None, help="result file (default results/mlfs_ablation_<data>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    from mlfs_edge import quiet

    quiet.install()  # the known third-party noise hidden, as in `mlfs-edge`
    command = "python " + shlex.join([os.path.relpath(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))
    from mlfs_edge.eval.seeds import RunsFailed

    try:
        run(args, command)
    except (ValueError, RunsFailed) as e:  # bad input, a missing run or a failed parallel run: no traceback
        raise SystemExit(f"error: {e}") from None


def run(args: argparse.Namespace, command: str) -> None:
    from mlfs_edge.atomic import write_atomically
    from mlfs_edge.cli import main as cli
    from mlfs_edge.config import dumps_toml
    from mlfs_edge.eval.seeds import parse_seeds
    from mlfs_edge.train.mlfs import MLFSConfig
    from mlfs_edge.train.run_folder import seed_config, teacher_folder

    seeds = parse_seeds(args.seeds)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"unknown variants {', '.join(unknown) or '(none given)'}: choose from {', '.join(VARIANTS)}")
    raw = tomllib.loads(Path(args.config).read_text())
    base = MLFSConfig.from_toml(args.config, quick=args.quick)
    if base.resolved_task() == "causal_lm":
        raise ValueError("the ablation compares classification palettes (accuracy per test item): give a "
                         "classification config")
    data = Path(base.data).stem
    work = Path(args.work_dir or f"runs/ablation_{data}")
    teacher = str(teacher_folder(base))
    flags = (["--quick"] * args.quick) + (["--no-progress"] * args.no_progress)

    def study(config: str, cfg: MLFSConfig) -> dict[str, Any]:
        argv = ["eval", "--config", config, "--seeds", args.seeds, *flags]
        print(f"\n== mlfs-edge {shlex.join(argv)}", flush=True)
        if cli(argv) != 0:
            raise SystemExit(1)  # its one-line error is printed already
        result = json.loads((Path(cfg.out) / "palette_seeds.json").read_text())
        result["palettes"] = {s: json.loads((Path(seed_config(cfg, s).out) / "palette.json").read_text())
                              for s in seeds}
        # where each seed trained (runs before the field existed ran on CPUs: no GPU was used then)
        result["devices"] = sorted({json.loads((Path(seed_config(cfg, s).out) / "mlfs_train.json").read_text())
                                    .get("device", "cpu") for s in seeds})
        return result

    def written(name: str, what: str, change: dict[str, Any], out: Path) -> tuple[str, MLFSConfig]:
        """<work>/<name>.toml: the config with `change`, training in `out` from the shared teacher."""
        cfg_raw = merged(raw, change) | {"out": str(out), "teacher": teacher}
        path = work / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f"# {name}: {what}\n# (written by benchmarks/mlfs_ablation.py from {args.config})\n" \
            + dumps_toml(cfg_raw)
        # a change the config refuses fails here, before any training; --quick trains in <out>_quick
        cfg = MLFSConfig.from_dict(tomllib.loads(text), quick=args.quick)
        write_atomically(path, lambda tmp, text=text: tmp.write_text(text))
        return str(path), cfg

    configs = [written("config", "the config unchanged", {}, Path(args.reference_out)) if args.reference_out
               else (args.config, base)] + [written(n, *VARIANTS[n], work / n) for n in names]
    if args.jobs > 1:
        train_in_parallel(base, [path for path, _ in configs], seeds, flags, args.jobs, work)
    reference = study(*configs[0])
    results = {name: study(*pair) for name, pair in zip(names, configs[1:], strict=True)}
    record = compare(reference, results, seeds)
    record = {"command": command, "config": args.config, "data": base.data, "seeds": seeds, "teacher": teacher,
              "variants": {n: {"change": VARIANTS[n][0], "keys": VARIANTS[n][1]} for n in names}, **record}
    print_table(record)
    path = Path(args.json or RESULTS / f"mlfs_ablation_{data}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, default=str) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
    print(f"written {path}")


def train_in_parallel(base: Any, configs: list[str], seeds: list[int], flags: list[str], jobs: int,
                      work: Path) -> None:
    """Every (config, seed) run as its own `mlfs-edge eval --seeds <seed>` process, `jobs` at a time
    (each seed trains in its own folder, so they never share files), after the shared teacher of `base`;
    logs in <work>/logs. The studies that follow then reuse the finished runs."""
    from mlfs_edge.eval.seeds import CLI, ensure_teachers, run_in_parallel

    ensure_teachers([base], progress="--no-progress" not in flags)
    run_in_parallel([(["-c", CLI, "eval", "--config", config, "--seeds", str(seed), *flags],
                      work / "logs" / f"{Path(config).stem}.seed{seed}.log") for config in configs for seed in seeds],
                    jobs)


def compare(reference: dict[str, Any], variants: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Per variant and sub-network: accuracy mean ± sd (%) and variant − config with its paired
    bootstrap interval (percentage points); the unchanged config's own row first."""
    from mlfs_edge.stats import BOOTSTRAP_SEED, LEVEL, RESAMPLES, paired_bootstrap

    pct = lambda v: None if v is None else 100 * v  # noqa: E731
    names = [r["name"] for r in reference["rows"]]

    def rows_of(result: dict[str, Any], vs_reference: bool) -> list[dict[str, Any]]:
        if [r["name"] for r in result["rows"]] != names:
            raise ValueError("a variant evaluated another palette than the config: keep the palette unchanged")
        rows = []
        for i, r in enumerate(result["rows"]):
            row = {"subnet": r["name"], "param_fraction": r["param_fraction"], "mean": pct(r["accuracy_mean"]),
                   "sd": pct(r["accuracy_sd"]), "per_seed": [pct(v) for v in r["accuracy_per_seed"]]}
            if vs_reference:
                ci = paired_bootstrap([result["palettes"][s]["rows"][i]["correct"] for s in seeds],
                                      [reference["palettes"][s]["rows"][i]["correct"] for s in seeds])
                row |= {"diff_vs_config": pct(ci.diff), "diff_vs_config_ci": [pct(ci.low), pct(ci.high)]}
            rows.append(row)
        return rows

    return {"teacher_mean": pct(reference["teacher_accuracy_mean"]), "test_examples": reference["test_examples"],
            "bootstrap": {"resamples": RESAMPLES, "level": LEVEL, "rng_seed": BOOTSTRAP_SEED,
                          "unit": "test item; each side's per-item correctness averaged over its seeds"},
            "config_rows": rows_of(reference, False),
            "config_wall_s": reference["mlfs_wall_s_mean"], "config_devices": reference["devices"],
            "results": {n: {"wall_s": v["mlfs_wall_s_mean"], "devices": v["devices"], "rows": rows_of(v, True)}
                        for n, v in variants.items()}}


def print_table(record: dict[str, Any]) -> None:
    from mlfs_edge.report import markdown_table, mean_sd_cell

    cols = [r["subnet"] for r in record["config_rows"]]
    table = [{"variant": "config (unchanged)", **{c: mean_sd_cell(r["mean"], r["sd"], scale=1.0)
                                                 for c, r in zip(cols, record["config_rows"], strict=True)},
              "MLFS s": f"{record['config_wall_s']:.0f}"}]
    for name, v in record["results"].items():
        table.append({"variant": name, **{
            c: f"{mean_sd_cell(r['mean'], r['sd'], scale=1.0)} ({r['diff_vs_config']:+.2f} "
               f"[{r['diff_vs_config_ci'][0]:+.2f}, {r['diff_vs_config_ci'][1]:+.2f}])"
            for c, r in zip(cols, v["rows"], strict=True)}, "MLFS s": f"{v['wall_s']:.0f}"})
    print()
    print(markdown_table(table))
    print(f"\naccuracy % mean ± sd over seeds {', '.join(map(str, record['seeds']))}; in brackets the variant − "
          f"config difference (points) and its {round(100 * record['bootstrap']['level'])} % paired bootstrap "
          f"interval over {record['test_examples']} test items; teacher {record['teacher_mean']:.2f} %")


if __name__ == "__main__":
    main()
