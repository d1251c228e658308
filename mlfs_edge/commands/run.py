"""mlfs-edge run: classify or embed text with the native engine, on a fixed or budget-picked sub-network."""

from __future__ import annotations

import argparse
import time

from mlfs_edge.commands._common import packed_file, quality_table, run_palette

ORDER = 70


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="classify or embed text with a packed model on the native engine",
                       description="Tokenize TEXT, run it through a sub-network of a packed .mlfs model and print "
                                   "the label and its probability (classifier) or the embedding's norm "
                                   "(encoder), with the latency. The sub-network is given (--subnet) or picked "
                                   "on this CPU as the most accurate one within a latency budget (--budget-ms; "
                                   "candidate latencies are measured once and cached per CPU model).",
                       epilog="Examples: mlfs-edge run model.mlfs --text 'a gripping film'  |  "
                              "mlfs-edge run model.mlfs --text '...' --subnet depth=4,heads=6,mlp=768  |  "
                              "mlfs-edge run model.mlfs --text '...' --budget-ms 5 --accuracy acc.json")
    p.add_argument("model", help="packed .mlfs file (from `mlfs-edge pack`), or a training run folder holding one "
                                 "(`mlfs-edge pack RUN` puts it there)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8"], default=None,
                   help="with a run folder holding several packed files: which one (default: int8 when packed)")
    p.add_argument("--text", required=True, action="append",
                   help="text to classify or embed (repeat for a batch)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--subnet", default="full",
                       help="'full', 'depth=4,heads=6,mlp=768' (d/h/f), inline JSON or a .json/.toml file "
                            "(default: full)")
    which.add_argument("--budget-ms", type=float, default=None,
                       help="pick the most accurate sub-network that runs within this many ms here")
    p.add_argument("--accuracy", default=None, metavar="JSON",
                   help="with --budget-ms: a JSON list of {\"subnet\": {layers, heads, mlp}, \"accuracy\": x} (or "
                        "a palette.json of `mlfs-edge eval`); default: the run's palette.json when the model belongs "
                        "to an evaluated run, else the search space ranked by size (bigger = more accurate)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the one saved next to the model)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=128, help="truncate inputs to this many tokens")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from transformers import AutoTokenizer

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.runtime import Engine

    model_path = packed_file(args.model, args.dtype)
    engine = Engine.load(model_path)
    tok_dir = args.tokenizer or engine.tokenizer_dir()
    if tok_dir is None:
        raise FileNotFoundError(f"no tokenizer saved next to {model_path}; pass --tokenizer FOLDER")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    enc = tokenizer(args.text, truncation=True, max_length=min(args.max_length, engine.max_positions),
                    padding=True, return_tensors="np")
    ids = np.ascontiguousarray(enc["input_ids"], np.int64)
    mask = np.ascontiguousarray(enc["attention_mask"], np.int64)
    if args.budget_ms is not None:
        accuracy = args.accuracy or run_palette(model_path)
        table = quality_table(accuracy, engine.arch)
        ranked = f"accuracies from {accuracy}" if accuracy else "no accuracy table: bigger ranked as more accurate"
        print(f"[run] {model_path}; {ranked}")
        print(f"profiling {len(table)} candidate sub-networks at {ids.shape[0]} x {ids.shape[1]} tokens on this CPU "
              "(cached per CPU model after the first time)")
        cfg = engine.pick(args.budget_ms, table, seq=ids.shape[1], batch=ids.shape[0], threads=args.threads, runs=10)
        print(f"picked {cfg.name} ({cfg.param_fraction(engine.arch):.0%} of the layer parameters) for a "
              f"{args.budget_ms:g} ms budget")
    else:
        cfg = SubnetConfig.parse(args.subnet, engine.arch)
    engine.run(ids, mask, subnet=cfg, threads=args.threads)  # warm-up: pages the weights in
    t0 = time.perf_counter()
    out = engine.run(ids, mask, subnet=cfg, threads=args.threads)
    ms = (time.perf_counter() - t0) * 1e3
    for text, row in zip(args.text, out, strict=True):
        if engine.labels:
            probs = np.exp(row - row.max())
            probs /= probs.sum()
            best = int(probs.argmax())
            print(f"{engine.labels[best]}  {probs[best]:.3f}  | {text}")
        else:
            print(f"embedding[{row.shape[0]}] norm {np.linalg.norm(row):.4f}  | {text}")
    print(f"sub-network {cfg.name}, {engine.dtype}, {args.threads} thread(s): {ms:.2f} ms for {ids.shape[0]} x "
          f"{ids.shape[1]} tokens")
    return 0
