"""mlfs-edge: command-line entry point. Each sub-command's --help says what it does and how."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_RUN_DIR = Path(os.environ.get("MLFS_EDGE_RUNS", "runs"))


def _cmd_info(args: argparse.Namespace) -> int:
    import mlfs_edge
    from mlfs_edge import _core
    from mlfs_edge.assets import asset_report, cache_dir
    from mlfs_edge.eval.report import markdown_table

    feats = _core.cpu_features()
    print(f"mlfs_edge {mlfs_edge.__version__}  (native core for {_core.arch()})")
    print(f"cpu features : {', '.join(k for k, v in feats.items() if v) or 'none'}")
    print(f"missing      : {', '.join(k for k, v in feats.items() if not v) or 'none'}")
    print(f"kernel ISAs  : {', '.join(_core.supported_isas())} (selected: {_core.selected_isa()})")
    print(f"cache dir    : {cache_dir()}")
    print()
    rows = [{"asset": r["name"], "kind": r["kind"], "status": "found" if r["path"] else "MISSING",
             "where / how to install": r["path"] or r["install"]} for r in asset_report()]
    print(markdown_table(rows))
    missing = [r for r in rows if r["status"] == "MISSING"]
    if missing:
        print(f"\n{len(missing)} asset(s) missing: run `make assets` to install them.")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_features": feats, "assets": asset_report()}, indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from mlfs_edge.data import BUILTIN_CLASSIFICATION, BUILTIN_TEXT, load_classification, load_text
    from mlfs_edge.eval.report import markdown_table

    rows = []
    names = [args.data] if args.data else list(BUILTIN_CLASSIFICATION)
    for name in names:
        ds = load_classification(name, args.text_column, args.label_column)
        rows.append({"dataset": ds.name, "task": "classification", "labels": ", ".join(ds.label_names),
                     "train": len(ds.train), "dev": len(ds.dev), "test": len(ds.test)})
    if not args.data:
        for name in BUILTIN_TEXT:
            corpus = load_text(name)
            rows.append({"dataset": name, "task": "language modelling", "labels": "-",
                         "train": len(corpus.train), "dev": len(corpus.dev), "test": len(corpus.test)})
    print(markdown_table(rows))
    print("\nSplits are seeded (mlfs_edge.data.SPLIT_SEED), 80/10/10 of examples for classification, "
          "90/5/5 of documents for text.")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mlfs_edge.assets import minilm_path
    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.report import markdown_table
    from mlfs_edge.train.finetune import FinetuneConfig, finetune_classifier

    out = Path(args.out)
    data = load_classification(args.data, args.text_column, args.label_column)
    cfg = FinetuneConfig(epochs=args.epochs, max_train_examples=args.max_train,
                         max_eval_examples=args.max_eval)
    print(f"[1/1] fine-tuning the teacher: all-MiniLM-L6-v2 + classification head on {data.name} "
          f"({len(data.train.subset(cfg.max_train_examples))} train sentences, {cfg.epochs} epochs)")
    res = finetune_classifier(minilm_path(), data, out / "teacher", cfg)
    print()
    print(markdown_table([{
        "model": "teacher (MiniLM-L6, full fine-tune)", "params": f"{res.params / 1e6:.1f}M",
        "dev acc": f"{100 * res.dev_accuracy:.2f}%", "test acc": f"{100 * res.test_accuracy:.2f}%",
        "train steps": res.steps, "wall": f"{res.wall_s:.0f}s"}]))
    print(f"\nteacher saved to {out / 'teacher'} (test accuracy {100 * res.test_accuracy:.2f}%)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlfs-edge",
        description="Turn one pretrained transformer into a palette of smaller models for edge CPUs: "
                    "MLFS supernet training, slicing, int8/fp16 quantization, ExecuTorch export and a "
                    "native C++ engine.",
        epilog="Start with `mlfs-edge info`, then `mlfs-edge demo`. Every command has --help.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="version, CPU features, bundled models and datasets",
                          description="Show the package version, the CPU features the native core "
                                      "detected, and where each bundled asset was found (or how to install it).")
    info.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    info.set_defaults(func=_cmd_info)

    def add_data_args(sp: argparse.ArgumentParser, default: str | None) -> None:
        sp.add_argument("--data", default=default, metavar="NAME|PATH",
                        help="bundled dataset (rotten_tomatoes, trec, sms_spam) or a .csv/.jsonl/.parquet "
                             f"file with a text and a label column{' (default: %(default)s)' if default else ''}")
        sp.add_argument("--text-column", default="text", help="text column of a --data file (default: text)")
        sp.add_argument("--label-column", default="label", help="label column of a --data file (default: label)")

    data = sub.add_parser("data", help="list datasets and their split sizes",
                          description="List the bundled datasets (or one file given with --data) with "
                                      "their seeded train/dev/test split sizes.")
    add_data_args(data, None)
    data.set_defaults(func=_cmd_data)

    demo = sub.add_parser("demo", help="the end-to-end demo on the bundled model and data",
                          description="Fine-tune the bundled all-MiniLM-L6-v2 on Rotten Tomatoes "
                                      "sentiment (the teacher that every sub-network is compared with), "
                                      "evaluate it and save it under --out.")
    add_data_args(demo, "rotten_tomatoes")
    demo.add_argument("--out", default=str(DEFAULT_RUN_DIR / "demo"), help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=float, default=3.0, help="teacher fine-tuning epochs (default: %(default)s)")
    demo.add_argument("--max-train", type=int, default=None, help="use only the first N training sentences")
    demo.add_argument("--max-eval", type=int, default=None, help="evaluate on only the first N sentences")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Expected user errors: one line that says what to do, no traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mlfs-edge {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
