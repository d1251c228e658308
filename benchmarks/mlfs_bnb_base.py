"""QLoRA-style frozen base: MLFS with the base projections stored by bitsandbytes (int8, nf4) vs fp32.

Each variant runs the shipped config's stages, cut to `--steps-scale` of their steps, from the same
teacher, in its own process (so peak RSS is that variant's); then a few palette sub-networks are
evaluated on the test split. Reported per variant: seconds per training step, peak RSS, bytes of the
frozen projection weights, and test accuracy. Only ratios between rows of one run are meaningful
(shared machine).

    .venv/bin/python benchmarks/mlfs_bnb_base.py --config configs/mlfs_minilm_rt.toml

Needs the config's teacher (`mlfs-edge train --config ...` writes it). Writes
benchmarks/results/mlfs_bnb_base.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SUBNETS = ["full", "depth=6,heads=6,mlp=768", "depth=3,heads=6,mlp=384"]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(config: str, mode: str, scale: float, out: str) -> dict[str, Any]:
    """One variant: train (cut-down stages), then measure the frozen base and the accuracy."""
    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.palette import evaluate_palette
    from mlfs_edge.train.mlfs import SUPERNET_DIR, MLFSConfig, train_mlfs

    cfg = MLFSConfig.from_toml(config)
    # fresh_adapters merges into the base, which a quantized base cannot take: off for every variant.
    stages = tuple(replace(s, steps=max(1, round(s.steps * scale)), fresh_adapters=False) for s in cfg.stages)
    run = replace(cfg, base_quant=mode, out=out, teacher=cfg.teacher or str(Path(cfg.out) / "teacher"),
                  stages=stages, checkpoint_every=10_000)
    summary = train_mlfs(run, progress=False)
    rss = peak_rss_mb()
    base_bytes = frozen_base_bytes(config, mode)
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    palette = evaluate_palette(Path(out) / SUPERNET_DIR, data, SUBNETS, cfg.max_eval_examples, progress=False)
    return {"base_quant": summary["base_quant"], "steps": summary["steps"], "mlfs_wall_s": summary["mlfs_wall_s"],
            "s_per_step": summary["mlfs_wall_s"] / summary["steps"], "peak_rss_mb": rss,
            "frozen_projection_bytes": base_bytes,
            "rows": [{k: r[k] for k in ("name", "param_fraction", "accuracy")} for r in palette["rows"]]}


def frozen_base_bytes(config: str, mode: str) -> int:
    """Bytes of the frozen projection weights (what the QLoRA-style base shrinks) of the teacher."""
    from torch import nn

    from mlfs_edge.data import load_classification
    from mlfs_edge.models import load_classifier
    from mlfs_edge.supernet.lora import add_lora
    from mlfs_edge.supernet.quantized import SlicedQuantLinear, quantize_frozen_base
    from mlfs_edge.train.mlfs import MLFSConfig

    cfg = MLFSConfig.from_toml(config)
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    model, _ = load_classifier(Path(cfg.teacher or Path(cfg.out) / "teacher"), data.num_labels, data.label_names)
    model = add_lora(model, cfg.lora)
    quantize_frozen_base(model, mode)
    total = 0
    for m in model.modules():
        base = getattr(m, "base_layer", None)
        if isinstance(base, SlicedQuantLinear):
            total += base.quantized_bytes()
        elif isinstance(base, nn.Linear):
            total += base.weight.numel() * base.weight.element_size()
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mlfs_minilm_rt.toml")
    p.add_argument("--modes", default="none,int8,nf4", help="comma-separated base quantizations")
    p.add_argument("--steps-scale", type=float, default=0.25, help="fraction of each stage's steps")
    p.add_argument("--json", default=str(RESULTS / "mlfs_bnb_base.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        result = worker(args.config, args.worker, args.steps_scale, f"runs/bnb_base/{args.worker}")
        print("RESULT " + json.dumps(result))
        return

    from mlfs_edge.report import markdown_table

    results = []
    for mode in args.modes.split(","):
        print(f"[bnb base] {mode}: training a cut-down MLFS run in a subprocess")
        proc = subprocess.run([sys.executable, __file__, "--config", args.config, "--worker", mode,
                               "--steps-scale", str(args.steps_scale)], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    fp32 = results[0]
    rows = [{"frozen base": r["base_quant"], "s/step": f"{r['s_per_step']:.3f}",
             "vs fp32": f"{r['s_per_step'] / fp32['s_per_step']:.2f}×",
             "projection weights": f"{r['frozen_projection_bytes'] / 1e6:.1f} MB",
             "peak RSS": f"{r['peak_rss_mb']:.0f} MB",
             **{f"acc {row['name']}": f"{100 * row['accuracy']:.2f}%" for row in r["rows"]}} for r in results]
    print(markdown_table(rows))
    record = {"command": shlex.join(["python", "benchmarks/mlfs_bnb_base.py", *sys.argv[1:]]),
              "config": args.config, "steps_scale": args.steps_scale, "results": results}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
