"""mlfs-edge run: classify or embed text with the native engine, on a fixed or budget-picked sub-network."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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


def _accuracy_table(path: str | Path | None, arch) -> dict:  # noqa: ANN001
    from mlfs_edge.config import SearchSpace, SubnetConfig

    if path is None:
        space = SearchSpace.default(arch)
        cfgs = {space.config(d, h, f) for d in space.depths for h in space.heads for f in space.mlp}
        return {cfg: cfg.param_fraction(arch) for cfg in cfgs}
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the accuracy table {path}: {e}") from None
    if isinstance(rows, dict) and isinstance(rows.get("rows"), list):  # a palette.json of `mlfs-edge eval`
        rows = rows["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"subnet", "accuracy"} <= set(r) for r in rows):
        raise ValueError(f"{path}: expected a JSON list of {{\"subnet\": ..., \"accuracy\": ...}} objects")
    return {SubnetConfig.from_dict(r["subnet"]).validate(arch): float(r["accuracy"]) for r in rows}


def packed_file(model: str, dtype: str | None) -> Path:
    """The .mlfs file to run: `model` itself, or the one in a run folder (by --dtype, int8 first)."""
    from mlfs_edge.train.run_folder import find_run_folder, open_run

    path = Path(model)
    if not path.is_dir():
        return path
    if find_run_folder(path) != path:
        raise ValueError(f"{path} is a folder but not a training run: give a .mlfs file (from `mlfs-edge pack`)")
    files = open_run(path).packed_files()
    if dtype is not None:
        files = [f for f in files if f.stem.endswith(f"-{dtype}")]
    if not files:
        hint = f" --dtype {dtype}" if dtype else " --dtype int8"
        raise ValueError(f"no packed{' ' + dtype if dtype else ''} file in {path}: run `mlfs-edge pack {path}{hint}`")
    return next((f for f in files if f.stem.endswith("-int8")), files[0])


def _run_palette(model_path: Path) -> Path | None:
    """The palette.json of the evaluated run the packed file belongs to, if any."""
    from mlfs_edge.train.run_folder import find_run_folder

    folder = find_run_folder(model_path)
    palette = folder / "palette.json" if folder is not None else None
    return palette if palette is not None and palette.is_file() else None


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
        accuracy = args.accuracy or _run_palette(model_path)
        table = _accuracy_table(accuracy, engine.arch)
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
