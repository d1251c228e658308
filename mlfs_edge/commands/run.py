"""mlfs-edge run: classify or embed text with the native engine, on a fixed or budget-picked sub-network."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlfs_edge.commands._common import packed_file, quality_table, run_palette

if TYPE_CHECKING:
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.runtime import Engine

ORDER = 70


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="classify or embed text with a packed model on the native engine",
                       description="Tokenize TEXT, run it through a sub-network of a packed .mlfs model and print "
                                   "the label and its probability (classifier) or the embedding's norm "
                                   "(encoder), with the latency. With --embed: the sentence embeddings the "
                                   "packed sentence-transformers pipeline gives (its pooling and normalisation, "
                                   "recorded by `pack`), printed or written to a .npy / .jsonl file. The "
                                   "sub-network is given (--subnet) or picked "
                                   "on this CPU as the most accurate one within a latency budget (--budget-ms; "
                                   "candidate latencies are measured once and cached per CPU model).",
                       epilog="Examples: mlfs-edge run model.mlfs --text 'a gripping film'  |  "
                              "mlfs-edge run model.mlfs --text '...' --subnet depth=4,heads=6,mlp=768  |  "
                              "mlfs-edge run model.mlfs --text '...' --budget-ms 5 --accuracy acc.json  |  "
                              "mlfs-edge run minilm.mlfs --embed --input sentences.txt --output vectors.npy")
    p.add_argument("model", help="packed .mlfs file (from `mlfs-edge pack`), or a training run folder holding one "
                                 "(`mlfs-edge pack RUN` puts it there)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8"], default=None,
                   help="with a run folder holding several packed files: which one (default: int8 when packed)")
    p.add_argument("--text", action="append", default=[],
                   help="text to classify or embed (repeat for a batch)")
    p.add_argument("--input", default=None, metavar="FILE",
                   help="a UTF-8 text file, one text per line (empty lines skipped), after any --text")
    p.add_argument("--embed", action="store_true",
                   help="output sentence embeddings: the file's pooling (from the model folder's "
                        "sentence-transformers config when packed from one), L2-normalised when its pipeline "
                        "normalises; inputs truncated to its max_seq_length")
    p.add_argument("--output", default=None, metavar="PATH",
                   help="with --embed: write the embeddings to PATH, .npy (float32 [texts, dim], in input order) "
                        "or .jsonl (one {\"text\", \"embedding\"} per line); default: print a summary per text")
    p.add_argument("--batch-size", type=int, default=32,
                   help="with --embed: texts per engine call (default: %(default)s)")
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
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate inputs to this many tokens (default: 128; with --embed the recorded max_seq_length)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from transformers import AutoTokenizer

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.data import read_lines
    from mlfs_edge.runtime import Engine

    texts = list(args.text) + (read_lines(args.input) if args.input else [])
    if not texts:
        raise ValueError("give the text to run: --text '...' (repeatable) or --input FILE (one text per line)")
    if args.output and not args.embed:
        raise ValueError("--output writes embeddings: add --embed")
    if args.output and not args.output.endswith((".npy", ".jsonl")):
        raise ValueError(f"--output {args.output}: write a .npy or a .jsonl file")
    model_path = packed_file(args.model, args.dtype)
    engine = Engine.load(model_path)
    if args.embed:
        engine.require_embedder()
    tok_dir = args.tokenizer or engine.tokenizer_dir()
    if tok_dir is None:
        raise FileNotFoundError(f"no tokenizer saved next to {model_path}; pass --tokenizer FOLDER")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    max_length = args.max_length or (None if args.embed else 128)
    probe = texts[:max(args.batch_size, 1)] if args.embed else texts  # the shape a budget pick is timed at
    enc = tokenizer(probe, truncation=True, max_length=engine.token_limit(max_length), padding=True,
                    return_tensors="np")
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
    if args.embed:
        return _embed(engine, tokenizer, texts, cfg, args, max_length)
    t0 = time.perf_counter()
    out = engine.run(ids, mask, subnet=cfg, threads=args.threads)
    ms = (time.perf_counter() - t0) * 1e3
    for text, row in zip(texts, out, strict=True):
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


def _embed(engine: Engine, tokenizer: Any, texts: list[str], cfg: SubnetConfig,
           args: argparse.Namespace, max_length: int | None) -> int:
    """Embed `texts` in batches; print a short summary per text, or write them all to --output."""
    import json

    import numpy as np

    from mlfs_edge.atomic import write_atomically

    t0 = time.perf_counter()
    vectors = engine.embed(texts, tokenizer, subnet=cfg, threads=args.threads, max_length=max_length,
                           batch_size=args.batch_size)
    ms = (time.perf_counter() - t0) * 1e3
    how = f"{engine.pooling} pooling{', normalised' if engine.normalize else ''}"
    if args.output:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temp name
                if args.output.endswith(".npy"):
                    np.save(f, vectors)
                else:
                    for t, v in zip(texts, vectors, strict=True):
                        f.write((json.dumps({"text": t, "embedding": [float(x) for x in v]}) + "\n").encode())

        write_atomically(Path(args.output), write)
        print(f"wrote {len(texts)} embeddings of {vectors.shape[1]} dimensions ({how}) to {args.output}")
    else:
        for text, v in zip(texts, vectors, strict=True):
            head = " ".join(f"{x:+.4f}" for x in v[:4])
            print(f"[{v.shape[0]}] {head} ... {v[-1]:+.4f}  norm {np.linalg.norm(v):.4f}  | {text}")
    print(f"sub-network {cfg.name}, {engine.dtype}, {how}, {args.threads} thread(s): {ms:.1f} ms for "
          f"{len(texts)} text(s) ({len(texts) / ms * 1e3:.1f} per s)")
    return 0
