"""Gradient-scaling ablation: the same MLFS run with γ = 0 (no scaling) and with the config's γ.

The j-th sub-network's loss is scaled by (n₁/nⱼ)^γ so that small sub-networks converge as fast as the
largest. This trains the shipped config once per γ (same teacher, same batches, same sub-network
draws: everything random is a function of (seed, stage, step)), then reports the smallest
sub-network's training-loss curve and every palette sub-network's test accuracy, side by side.

    .venv/bin/python benchmarks/mlfs_gamma_ablation.py --config configs/mlfs_minilm_rt.toml --reuse-main

`--reuse-main` takes the config's own finished run (`mlfs-edge train --config ...`) as the run for
the config's γ instead of training it again (only when its recorded config is the same).
Writes benchmarks/results/mlfs_gamma_ablation.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the per-step loss of one batch is noisy)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def run_for_gamma(cfg: Any, gamma: float, reuse_main: bool) -> dict[str, Any]:
    from mlfs_edge.train.mlfs import finished_run, train_mlfs

    if reuse_main and gamma == cfg.loss.gamma:
        summary = finished_run(cfg.out, cfg)
        if summary is not None:
            print(f"γ = {gamma}: reusing the config's finished run {cfg.out}")
            return {"out": cfg.out, "summary": summary}
        print(f"γ = {gamma}: no finished run of this config in {cfg.out}; training it")
    run_cfg = replace(cfg, loss=replace(cfg.loss, gamma=gamma), out=f"runs/gamma_ablation/gamma{gamma:g}",
                      teacher=cfg.teacher or str(Path(cfg.out) / "teacher"))
    summary = finished_run(run_cfg.out, run_cfg)
    if summary is not None:  # an earlier invocation got this far: don't train it twice
        print(f"γ = {gamma}: reusing the finished run {run_cfg.out}")
        return {"out": run_cfg.out, "summary": summary}
    print(f"γ = {gamma}: training {run_cfg.out}")
    return {"out": run_cfg.out, "summary": train_mlfs(run_cfg)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mlfs_minilm_rt.toml", help="MLFS training config (TOML)")
    p.add_argument("--gammas", type=float, nargs="+", default=None,
                   help="γ values to compare (default: 0 and the config's γ)")
    p.add_argument("--reuse-main", action="store_true", help="use the config's finished run for its own γ")
    p.add_argument("--window", type=int, default=25, help="moving-average window of the loss curves (steps)")
    p.add_argument("--json", default=str(RESULTS / "mlfs_gamma_ablation.json"))
    p.add_argument("--plot", default=str(RESULTS / "mlfs_gamma_ablation.png"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.palette import evaluate_palette
    from mlfs_edge.report import markdown_table
    from mlfs_edge.train.mlfs import SUPERNET_DIR, MLFSConfig

    cfg = MLFSConfig.from_toml(args.config)
    gammas = args.gammas if args.gammas is not None else sorted({0.0, cfg.loss.gamma})
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    results: dict[str, Any] = {}
    for gamma in gammas:
        run = run_for_gamma(cfg, gamma, args.reuse_main)
        palette = evaluate_palette(Path(run["out"]) / SUPERNET_DIR, data, list(cfg.palette), cfg.max_eval_examples)
        history = run["summary"]["history"]
        smallest = [h["smallest"] for h in history]
        tail = smallest[-args.window:]
        results[f"{gamma:g}"] = {
            "gamma": gamma, "out": run["out"], "mlfs_wall_s": run["summary"]["mlfs_wall_s"],
            "smallest_loss_final": sum(tail) / len(tail),
            "smallest_loss_curve": [round(v, 4) for v in smooth(smallest, args.window)],
            "largest_loss_curve": [round(v, 4) for v in smooth([h["largest"] for h in history], args.window)],
            "rows": [{k: r[k] for k in ("name", "param_fraction", "accuracy")} for r in palette["rows"]],
        }
    first = next(iter(results.values()))["rows"]
    table = markdown_table([{"sub-network": row["name"], "fraction": f"{100 * row['param_fraction']:.1f}%",
                             **{f"acc γ={g}": f"{100 * res['rows'][i]['accuracy']:.2f}%" for g, res in results.items()}}
                            for i, row in enumerate(first)])
    print(table)
    for g, res in results.items():
        print(f"γ = {g}: smallest sub-network's loss, mean of the last {args.window} steps: "
              f"{res['smallest_loss_final']:.4f}; MLFS wall {res['mlfs_wall_s']:.0f} s")
    record = {"command": shlex.join(["python", "benchmarks/mlfs_gamma_ablation.py", *sys.argv[1:]]),
              "config": args.config, "window": args.window, "results": results}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    plot(results, Path(args.plot), args.window)
    print(f"written {args.json} and {args.plot}")


def plot(results: dict[str, Any], path: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for g, res in results.items():
        left.plot(res["smallest_loss_curve"], label=f"smallest, γ={g}")
        left.plot(res["largest_loss_curve"], linestyle=":", label=f"largest, γ={g}")
        fr = [r["param_fraction"] * 100 for r in res["rows"]]
        right.plot(fr, [r["accuracy"] * 100 for r in res["rows"]], marker="o", label=f"γ={g}")
    left.set(xlabel="training step", ylabel=f"loss ({window}-step moving average)",
             title="smallest sub-network's loss (unscaled)")
    right.set(xlabel="% of the layer parameters", ylabel="test accuracy %", title="palette accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
