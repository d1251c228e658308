"""Time to a target loss: a student sliced from the decoder vs the full decoder, both LoRA-tuned.

The MLFS paper's use of slicing for decoders: a student cut out of the teacher trains much faster
than the full model. Here both learn the same new task from the same batches — TREC question types
as the answer word after a prompt (answer-token cross-entropy; chance is ln 6 ≈ 1.79 nats) — with
LoRA (rank 8) on every projection, AdamW, the same learning rate. The student is a real smaller
model (`supernet.extract` of SmolLM2 reordered by activation importance on 32 news training blocks,
as configs/mlfs_smollm2_news.toml does, no MLFS training; or, with --supernet, the sub-network of a
trained MLFS supernet). The two train interleaved step by step in
ONE process, so machine load hits both alike. Reported per target loss: the first step at which the
mean of the last `--window` losses is at or below it, and the training seconds spent until then.
(The news LM is not used here: the full model starts below any loss a sliced student can reach in a
short run, so its time to a common target would be 0 by construction.)

    .venv/bin/python benchmarks/mlfs_time_to_loss.py --steps 150
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def first_reach(losses: list[float], times: list[float], target: float, window: int) -> dict[str, Any] | None:
    """First step whose trailing mean of `window` losses is ≤ target, with the seconds until then."""
    for i in range(window - 1, len(losses)):
        if statistics.fmean(losses[i - window + 1:i + 1]) <= target:
            return {"step": i + 1, "wall_s": round(sum(times[:i + 1]), 2)}
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2 or a Llama-family HF folder")
    p.add_argument("--student", default="depth=30,heads=6,mlp=768", help="the sliced student (SubnetConfig spec)")
    p.add_argument("--supernet", default=None, help="slice the student from this trained MLFS supernet instead")
    p.add_argument("--steps", type=int, default=150, help="training steps per model (at most)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--targets", type=float, nargs="+", default=[1.5, 1.0, 0.7], help="target losses (nats)")
    p.add_argument("--window", type=int, default=10, help="losses averaged when testing a target")
    p.add_argument("--eval", type=int, default=200, help="TREC test questions for the final accuracy (0: none)")
    p.add_argument("--importance", default="activation", choices=["activation", "weight"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/mlfs_time_to_loss_smollm2.json")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlfs_edge.assets import resolve_model_path
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.data import TREC_LABEL_WORDS, load_classification, load_text
    from mlfs_edge.lm import token_blocks, token_stream
    from mlfs_edge.prune.retrain import LabelWordTask, batch_order
    from mlfs_edge.supernet import extract, reorder_by_importance
    from mlfs_edge.supernet.arch import arch_of
    from mlfs_edge.supernet.lora import LoraSettings, add_lora, trainable_report

    torch.manual_seed(args.seed)
    path = resolve_model_path(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    if args.supernet:  # already reordered (and LoRA-merged) by MLFS training
        source = AutoModelForCausalLM.from_pretrained(args.supernet, dtype=torch.float32, attn_implementation="eager")
    else:
        source = full
        calibration = None
        if args.importance == "activation":  # the shipped decoder config's calibration: 32 news blocks of 128
            ids = token_blocks(token_stream(tok, load_text("news").train, 32 * 128), 128, full_only=True)
            calibration = [{"input_ids": torch.tensor(ids[i:i + 4])} for i in range(0, len(ids), 4)]
        reorder_by_importance(full, args.importance, calibration)  # function unchanged; student = prefix slice
    arch = arch_of(full)
    cfg = SubnetConfig.parse(args.student, arch)
    student = extract(source, cfg)
    del source
    models = {"full": full, "student": student}
    data = load_classification("trec")
    task = LabelWordTask(tok, TREC_LABEL_WORDS, max_length=args.max_length)
    train = data.train
    lengths = [len(t) for t in train.texts]
    batches = batch_order(lengths, args.steps, args.batch, args.seed)
    opts, reports = {}, {}
    for name in models:
        torch.manual_seed(args.seed)  # same LoRA A initialisation recipe for both
        models[name] = add_lora(models[name], LoraSettings(rank=8, alpha=16.0))
        models[name].train()
        reports[name] = trainable_report(models[name])
        opts[name] = torch.optim.AdamW([q for q in models[name].parameters() if q.requires_grad], lr=args.lr,
                                       weight_decay=0.0)
    losses: dict[str, list[float]] = {n: [] for n in models}
    times: dict[str, list[float]] = {n: [] for n in models}
    lowest = min(args.targets)
    t_start = time.perf_counter()
    for step, idx in enumerate(batches):
        texts, labels = [train.texts[i] for i in idx], [train.labels[i] for i in idx]
        for name, model in models.items():
            if first_reach(losses[name], times[name], lowest, args.window):
                continue  # reached every target: stop spending time on it
            t = time.perf_counter()
            loss = task.ce_loss(model, texts, labels)
            loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t)
            losses[name].append(float(loss.detach()))
        if (step + 1) % 10 == 0:
            print(f"step {step + 1}: " + ", ".join(
                f"{n} loss {statistics.fmean(losses[n][-10:]):.3f} ({sum(times[n]):.0f} s)" for n in models),
                flush=True)
        if all(first_reach(losses[n], times[n], lowest, args.window) for n in models):
            break
    rows: dict[str, Any] = {}
    for name, model in models.items():
        model.eval()
        acc = task.evaluate(model, data.test.subset(args.eval))["accuracy"] if args.eval else None
        rows[name] = {
            "param_fraction": 1.0 if name == "full" else round(cfg.param_fraction(arch), 4),
            "layer_params": (SubnetConfig.full(arch) if name == "full" else cfg).layer_params(arch),
            "trainable_params": reports[name]["trainable"],
            "steps_run": len(losses[name]),
            "median_step_s": round(statistics.median(times[name]), 3),
            "train_s": round(sum(times[name]), 1),
            "first_loss": round(statistics.fmean(losses[name][:args.window]), 4),
            "last_loss": round(statistics.fmean(losses[name][-args.window:]), 4),
            "reached": {str(t): first_reach(losses[name], times[name], t, args.window) for t in args.targets},
            "test_accuracy": acc,
            "losses": [round(x, 4) for x in losses[name]],
        }
    ratios = {}
    for t in map(str, args.targets):
        a, b = rows["student"]["reached"][t], rows["full"]["reached"][t]
        ratios[t] = round(a["wall_s"] / b["wall_s"], 3) if a and b else None
    record = {
        "command": "python " + " ".join(["benchmarks/mlfs_time_to_loss.py", *sys.argv[1:]]),
        "note": "TREC answer-word CE, same batches, LoRA r=8 on both; interleaved in one process on the shared "
                "2-core CPU; 'reached' = first step whose trailing mean of `window` losses <= target "
                "(null: not within the steps run); wall seconds are training time only",
        "student": {"spec": args.student, "subnet": cfg.to_dict(), "name": cfg.name,
                    "from": args.supernet or f"pretrained ({args.importance} importance order), no MLFS"},
        "targets": args.targets, "window": args.window, "batch": args.batch, "lr": args.lr,
        "max_length": args.max_length, "eval_examples": args.eval,
        "student_vs_full_wall_to_target": ratios,
        "step_time_ratio": round(rows["student"]["median_step_s"] / rows["full"]["median_step_s"], 3),
        "total_wall_s": round(time.perf_counter() - t_start, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for name, r in rows.items():
        print(f"{name}: {r['param_fraction']:.0%} of layer params, {r['steps_run']} steps, median "
              f"{r['median_step_s']} s/step, loss {r['first_loss']} -> {r['last_loss']}, reached {r['reached']}, "
              f"test accuracy {r['test_accuracy']}")
    print(f"student/full wall time to target: {ratios}; step time ratio {record['step_time_ratio']}; wrote {out}")


if __name__ == "__main__":
    main()
