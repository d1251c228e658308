"""Cost of one MLFS run vs fine-tuning every sub-network separately (the issue's cost comparison).

The alternative to one supernet run is one training run per deployed model: slice each palette
sub-network out of the (importance-ordered) teacher as a pruned copy and fine-tune it on its own
with LoRA + knowledge distillation from the teacher (LLM-Neo: the same adapters and the same KD loss
MLFS uses, the strongest of the project's LoRA baselines). Each copy gets `--epochs` of the training
split (length-grouped batches as everywhere else). Reports each copy's wall time and test accuracy
beside the MLFS run's (from `mlfs-edge train/eval` of the same config), the sum, and the ratios to
the teacher fine-tune. All runs happen here, one after another, on the same machine.

    .venv/bin/python benchmarks/mlfs_vs_separate.py --config configs/mlfs_minilm_rt.toml

Needs the config's finished MLFS run (its teacher and palette.json). Writes
benchmarks/results/mlfs_vs_separate.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mlfs_minilm_rt.toml", help="MLFS training config (TOML)")
    p.add_argument("--epochs", type=float, default=1.0, help="training epochs per separate fine-tune")
    p.add_argument("--json", default=str(RESULTS / "mlfs_vs_separate.json"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from mlfs_edge.config import ArchSpec, SubnetConfig
    from mlfs_edge.data import load_classification
    from mlfs_edge.models import load_classifier
    from mlfs_edge.prune.retrain import ClassifierTask, RetrainConfig, retrain
    from mlfs_edge.report import markdown_table
    from mlfs_edge.supernet import reorder_by_importance
    from mlfs_edge.supernet.extract import extract
    from mlfs_edge.train.mlfs import SUMMARY, MLFSConfig, calibration_batches

    cfg = MLFSConfig.from_toml(args.config)
    out = Path(cfg.out)
    if not (out / "palette.json").is_file():
        raise SystemExit(f"run `mlfs-edge train --config {args.config}` and `mlfs-edge eval --config {args.config}` "
                         "first: this compares against that run")
    summary = json.loads((out / SUMMARY).read_text())
    palette = json.loads((out / "palette.json").read_text())
    mlfs_acc = {r["name"]: r["accuracy"] for r in palette["rows"]}
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    train, test = data.train.subset(cfg.max_train_examples), data.test.subset(cfg.max_eval_examples)
    teacher_dir = Path(cfg.teacher) if cfg.teacher else out / "teacher"
    teacher, tokenizer = load_classifier(teacher_dir, data.num_labels, data.label_names)
    teacher.eval()
    reorder_by_importance(teacher, cfg.importance, calibration_batches(tokenizer, data.train.texts, cfg))  # as MLFS
    arch = ArchSpec.from_hf_config(teacher.config)
    task = ClassifierTask(tokenizer, cfg.max_length)
    steps = math.ceil(args.epochs * len(train) / cfg.batch_size)
    rcfg = RetrainConfig(steps=steps, batch_size=cfg.batch_size, lora_lr=cfg.stages[0].lr, lora_r=cfg.lora.rank,
                         lora_alpha=int(cfg.lora.alpha), temperature=cfg.loss.temperature, seed=cfg.seed)
    full = SubnetConfig.full(arch)
    subnets = [c for c in (SubnetConfig.parse(s, arch) for s in cfg.palette) if c != full]
    rows = []
    for sub in sorted(subnets, key=lambda c: c.layer_params(arch)):
        torch.manual_seed(cfg.seed)
        student = extract(teacher, sub).train()
        t0 = time.perf_counter()
        res = retrain(student, task, train, "lora-kd", rcfg, teacher=teacher)
        wall = time.perf_counter() - t0
        acc = task.evaluate(res.model, test)["accuracy"]
        rows.append({"subnet": sub.name, "param_fraction": sub.param_fraction(arch), "steps": steps,
                     "wall_s": wall, "accuracy_separate": acc, "accuracy_mlfs": mlfs_acc.get(sub.name)})
        print(f"{sub.name}: {steps} LoRA-KD steps in {wall:.0f} s, accuracy {100 * acc:.2f}% "
              f"(MLFS: {100 * mlfs_acc.get(sub.name, float('nan')):.2f}%)")
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
    record = {"command": shlex.join(["python", "benchmarks/mlfs_vs_separate.py", *sys.argv[1:]]),
              "config": args.config, "epochs_per_subnet": args.epochs, "method": "lora-kd on the pruned copy",
              "teacher_finetune_wall_s": teacher_s, "mlfs_wall_s": mlfs_s, "separate_total_wall_s": separate,
              "separate_vs_teacher": separate / teacher_s, "mlfs_vs_teacher": mlfs_s / teacher_s,
              "mlfs_vs_separate": mlfs_s / separate, "rows": rows}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
