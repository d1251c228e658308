"""mlfs-edge demo: the end-to-end job on the bundled model and data."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlfs_edge.commands._common import DEFAULT_RUN_DIR, add_data_args

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the end-to-end demo on the bundled model and data",
                       description="Fine-tune the bundled all-MiniLM-L6-v2 on Rotten Tomatoes sentiment (the "
                                   "teacher that every sub-network is compared with), evaluate it on the test "
                                   "split and save it under --out; then compare a sub-network of it in fp32, fp16 "
                                   "and int8 across PyTorch, ExecuTorch, ONNX Runtime and the native engine "
                                   "(accuracy, size, latency: a table, <out>/compare.json and compare.png).",
                       epilog="--compare quick (default) measures one sub-network on 500 test sentences (~2-3 min); "
                              "--compare full the default palette of 3 sub-networks on the whole test split "
                              "(~10 min); --compare none stops after the teacher.")
    add_data_args(p, "rotten_tomatoes")
    p.add_argument("--out", default=str(DEFAULT_RUN_DIR / "demo"), help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=float, default=2.0, help="teacher fine-tuning epochs (default: %(default)s)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training sentences")
    p.add_argument("--max-eval", type=int, default=None, help="evaluate on only the first N sentences")
    p.add_argument("--compare", choices=("quick", "full", "none"), default="quick",
                   help="int8 vs fp16 vs fp32 comparison after the teacher (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlfs_edge.assets import minilm_path
    from mlfs_edge.data import load_classification
    from mlfs_edge.eval.report import markdown_table
    from mlfs_edge.train.finetune import FinetuneConfig, finetune_classifier

    out = Path(args.out)
    data = load_classification(args.data, args.text_column, args.label_column)
    cfg = FinetuneConfig(epochs=args.epochs, max_train_examples=args.max_train, max_eval_examples=args.max_eval)
    steps = 1 if args.compare == "none" else 2
    print(f"[1/{steps}] fine-tuning the teacher: all-MiniLM-L6-v2 + classification head on {data.name} "
          f"({len(data.train.subset(cfg.max_train_examples))} train sentences, {cfg.epochs:g} epochs)")
    res = finetune_classifier(minilm_path(), data, out / "teacher", cfg)
    print()
    print(markdown_table([{
        "model": "teacher (MiniLM-L6, full fine-tune)", "params": f"{res.params / 1e6:.1f}M",
        "dev acc": f"{100 * res.dev_accuracy:.2f}%", "test acc": f"{100 * res.test_accuracy:.2f}%",
        "train steps": res.steps, "wall": f"{res.wall_s:.0f}s"}]))
    print(f"\nteacher saved to {out / 'teacher'} (test accuracy {100 * res.test_accuracy:.2f}%)")
    if args.compare != "none":
        _compare(out, args.compare == "quick", args.data)
    return 0


def _compare(out: Path, quick: bool, data: str) -> None:
    """Step 2: the int8 / fp16 / fp32 comparison of `mlfs-edge compare` on the fresh teacher."""
    import time

    from mlfs_edge.eval.compare import CompareSettings, run_compare, table, write_outputs

    what = "one sub-network, 500 test sentences" if quick else "3 sub-networks, the whole test split"
    print(f"\n[2/2] int8 vs fp16 vs fp32 of the teacher's sub-networks ({what}; "
          "PyTorch, ExecuTorch, ONNX Runtime, native engine; batch 1, 128 tokens)")
    t0 = time.perf_counter()
    rows = run_compare(out / "teacher", None, out / "compare", CompareSettings(data=data), quick=quick)
    wall = time.perf_counter() - t0
    write_outputs(rows, out / "compare.json", out / "compare.png", {"model": str(out / "teacher"), "quick": quick,
                                                                    "wall_s": wall})
    print(table(rows))
    print(f"\ncomparison: {len(rows)} rows in {wall:.0f} s; written {out / 'compare.json'} and {out / 'compare.png'}. "
          "Latency is a median on a shared machine: compare ratios within this table.")
