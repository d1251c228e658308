"""mlfs-edge eval: accuracy and size of a palette of sub-networks of a trained supernet."""

from __future__ import annotations

import argparse

ORDER = 42


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a palette of sub-networks of a trained supernet (JSON, table, plot)",
        description="For every sub-network of the config's palette: test accuracy (causal_lm: held-out "
                    "perplexity) when sliced from the MLFS supernet and when sliced from the teacher (the "
                    "pretrained LM) without MLFS training, and its parameter count. "
                    "Writes <out>/palette.json, <out>/palette.md and <out>/palette.png.")
    p.add_argument("--config", required=True, help="the training config used by `mlfs-edge train`")
    p.add_argument("--quick", action="store_true", help="evaluate the --quick run")
    p.add_argument("--palette", nargs="+", default=None, help="sub-network specs instead of the config's palette")
    p.add_argument("--json", default=None, help="also write the result JSON here (e.g. benchmarks/results/...)")
    p.add_argument("--out", default=None, help="override the config's output folder")
    p.add_argument("--rank", type=int, default=None,
                   help="LoRA rank to evaluate at, for a supernet trained with [lora] elastic_ranks (default: full)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import sys
    from pathlib import Path

    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.report import markdown_table
    from mlfs_edge.supernet.palette import evaluate_palette, plot_palette
    from mlfs_edge.train.mlfs import SUMMARY, SUPERNET_DIR, MLFSConfig

    cfg = MLFSConfig.from_toml(args.config, quick=args.quick, out=args.out)
    out = Path(cfg.out)
    summary_path = out / SUMMARY
    if not summary_path.is_file():
        raise ValueError(f"no trained supernet in {out}: run `mlfs-edge train --config {args.config}"
                         f"{' --quick' if args.quick else ''}` first")
    summary = json.loads(summary_path.read_text())
    if summary.get("task") == "causal_lm":  # decoders: perplexity instead of accuracy
        from mlfs_edge.supernet.palette_lm import run_lm_eval

        return run_lm_eval(args, cfg, summary)
    data = load_classification(cfg.data, cfg.text_column, cfg.label_column)
    result = evaluate_palette(out / SUPERNET_DIR, data, list(args.palette or cfg.palette), cfg.max_eval_examples,
                              rank=args.rank)
    quick = " --quick" if args.quick else ""
    record = {
        "command": f"mlfs-edge train --config {args.config}{quick} && "
                   f"{shlex.join(['mlfs-edge', *sys.argv[1:]]) if sys.argv[1:2] == ['eval'] else 'mlfs-edge eval'}",
        "teacher_accuracy": result["teacher_accuracy"],
        "rows": result["rows"],
        "mlfs_wall_s": summary["mlfs_wall_s"],
        "full_finetune_wall_s": summary["full_finetune_wall_s"],
        "trainable_fraction": summary["trainable_fraction"],
        "trainable_params": summary.get("trainable_params"),
        "test_examples": result["test_examples"],
        "steps": summary["steps"],
        "lora_rank": result["lora_rank"],
    }
    text = json.dumps(record, indent=2)
    (out / "palette.json").write_text(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    table = markdown_table([{
        "sub-network": r["name"], "layer params": f"{r['params'] / 1e6:.2f}M",
        "fraction": f"{100 * r['param_fraction']:.1f}%", "acc MLFS": f"{100 * r['accuracy']:.2f}%",
        "acc no MLFS": f"{100 * r['accuracy_no_mlfs']:.2f}%",
        "Δ vs teacher": f"{100 * (r['accuracy'] - result['teacher_accuracy']):+.2f}"} for r in result["rows"]])
    (out / "palette.md").write_text(table + "\n")
    plot_palette(result, out / "palette.png", f"MLFS on {data.name}: accuracy vs size")
    print(table)
    print(f"\nteacher accuracy {100 * result['teacher_accuracy']:.2f}% on {result['test_examples']} test sentences; "
          f"MLFS training {summary['mlfs_wall_s']:.0f} s vs teacher fine-tune {summary['full_finetune_wall_s']:.0f} s. "
          f"Written: {out}/palette.json, palette.md, palette.png")
    return 0
