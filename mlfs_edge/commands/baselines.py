"""mlfs-edge baselines: L2-norm MLP pruning × re-training method → accuracy / perplexity, cost."""

from __future__ import annotations

import argparse

ORDER = 46


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.1,0.3,0.5, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baselines", help="compression baselines: L2 MLP pruning + CE / KL self-distillation / LoRA re-training",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Prune the fine-tuned model's MLPs by L2 norm at each --ratios, re-train every pruned copy with each
--methods (same data, order, steps and schedule), and tabulate accuracy (and perplexity), trainable
parameters and wall time:

  none      pruned, no re-training (ratio 0: the unpruned teacher itself)
  l2pft     full-parameter fine-tuning, cross-entropy on the labels
  l2psd     full-parameter self-distillation: KL to the unpruned model's logits only, no labels (T² scaled)
  lora-sft  LoRA adapters only, cross-entropy on the labels
  lora-kd   LoRA adapters only, KL to the unpruned model (LLM-Neo style)
  mlfs      MLFS sub-networks read from --mlfs-results (MiniLM only), compared at equal parameter count

--model minilm: all-MiniLM-L6-v2 sequence classifier on Rotten Tomatoes (teacher: a full fine-tune).
--model smollm2: SmolLM2-135M-Instruct on TREC posed as label-word scoring (accuracy = argmax of the
label words' log-likelihoods after a prompt) plus perplexity on held-out news text; the teacher is
SmolLM2 fine-tuned on TREC first. Teachers are trained once into runs/baselines/ and reused.""",
        epilog="Example: mlfs-edge baselines --model minilm --ratios 0.1,0.3,0.5 "
               "--json benchmarks/results/baselines_minilm.json --plot benchmarks/results/baselines_minilm.png")
    p.add_argument("--model", choices=("minilm", "smollm2"), default="minilm", help="default: %(default)s")
    p.add_argument("--ratios", type=_floats, default=(0.1, 0.3, 0.5),
                   help="MLP pruning ratios, comma-separated (default: 0.1,0.3,0.5)")
    p.add_argument("--methods", type=_names, default=("none", "l2pft", "l2psd", "lora-sft", "lora-kd", "mlfs"),
                   help="comma-separated subset of none,l2pft,l2psd,lora-sft,lora-kd,mlfs (default: all)")
    p.add_argument("--json", metavar="PATH", help="write the rows (and the command) as JSON, atomically")
    p.add_argument("--plot", metavar="PATH", help="write a PNG: accuracy / perplexity against layer parameters")
    p.add_argument("--quick", action="store_true", help="a smoke test: a few steps on a few examples")
    p.add_argument("--steps", type=int, help="re-training steps per method (default: per model, see --quick)")
    p.add_argument("--batch-size", type=int, help="re-training batch size")
    p.add_argument("--max-train", type=int, help="re-train on the first N training examples")
    p.add_argument("--max-eval", type=int, help="evaluate on the first N test examples")
    p.add_argument("--temperature", type=float, help="distillation temperature (default: 2)")
    p.add_argument("--teacher", metavar="DIR", help="the fine-tuned unpruned model (default: trained once into "
                                                    "runs/baselines/<model>-teacher)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; on a busy shared "
                                               "machine 1 thread is often faster)")
    p.add_argument("--mlfs-results", default="benchmarks/results/mlfs_minilm_rt.json",
                   help="the MLFS palette result to compare with (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import os
    import shlex
    import sys
    import tempfile
    from pathlib import Path

    import torch

    from mlfs_edge.prune.baselines import default_config, plot_baselines, run_baselines
    from mlfs_edge.report import markdown_table

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)

    cfg = default_config(args.model, args.quick, max_train=args.max_train, max_eval=args.max_eval,
                         teacher_dir=args.teacher, mlfs_results=args.mlfs_results,
                         ratios=args.ratios, methods=args.methods)
    retrain_overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                           ("temperature", args.temperature)) if v is not None}
    cfg = dataclasses.replace(cfg, retrain=dataclasses.replace(cfg.retrain, **retrain_overrides))
    command = shlex.join(["mlfs-edge", *sys.argv[1:]]) if sys.argv[1:2] == ["baselines"] else "mlfs-edge baselines"

    def write_json(rows: list, notes: list, complete: bool) -> None:
        if not args.json:
            return
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": command, "complete": complete, "model": cfg.model, "notes": notes,
                  "config": dataclasses.asdict(cfg), "rows": rows}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)

    partial: list = []

    def on_row(row: dict) -> None:  # a long run keeps what it has measured so far
        partial.append(row)
        quality = ", ".join(f"{k} {row[k]:.4g}" for k in ("accuracy", "perplexity") if k in row)
        print(f"  {row['method']:<8} ratio {row['ratio']:<6} {quality}  ({row['wall_s']:.0f} s)", flush=True)
        write_json(partial, [], False)

    print(f"baselines for {cfg.model}: ratios {', '.join(map(str, cfg.ratios))}; methods {', '.join(cfg.methods)}; "
          f"{cfg.retrain.steps} re-training steps of batch {cfg.retrain.batch_size}")
    rows, notes = run_baselines(cfg, progress=True, on_row=on_row)
    columns = ["method", "ratio", "subnet", "accuracy", "perplexity", "trainable_params", "params",
               "layer_params", "wall_s"]
    columns = [c for c in columns if any(c in r for r in rows)]
    print()
    print(markdown_table(rows, columns))
    for note in notes:
        print(f"note: {note}")
    write_json(rows, notes, True)
    if args.plot:
        plot_baselines(rows, args.plot, f"L2-norm MLP pruning + re-training: {cfg.model}")
    written = [p for p in (args.json, args.plot) if p]
    if written:
        print(f"written: {', '.join(written)}")
    return 0
