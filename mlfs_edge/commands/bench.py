"""mlfs-edge bench: benchmarks that compare the project's runtimes with the usual ones, side by side."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

ORDER = 80


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency benchmarks (engine vs PyTorch, ONNX Runtime, ExecuTorch)",
                       description="Run a benchmark and print a table (optionally JSON). All backends run in one "
                                   "process, timed round-robin, so their ratios are comparable even on a busy "
                                   "machine.")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    e = what.add_parser("engine", help="MiniLM-L6 batch 1: mlfs fp32/fp16/int8 vs pytorch, onnxruntime, executorch",
                        description="Pack the bundled all-MiniLM-L6-v2 (real weights) as fp32/fp16/int8 and time "
                                    "the native engine beside PyTorch eager (fp32, fp16, its dynamic int8), ONNX "
                                    "Runtime (fp32, its dynamic int8) and ExecuTorch XNNPACK (fp32, fp16, int8), "
                                    "for the full network and a ~50%% sub-network (half the heads and MLP "
                                    "channels), all returning the sentence embedding. The runtimes are built and "
                                    "loaded by the same adapters as `mlfs-edge compare`. Also measures the "
                                    "sub-network switch time, 2 vs 1 threads and the int8 engine's peak RSS. "
                                    "Takes ~10 min on 2 cores (six ExecuTorch exports).",
                        epilog="Example: mlfs-edge bench engine --seq 128 --threads 1 --json out.json --runs 30")
    e.add_argument("--seq", type=int, default=128, help="tokens per input (default: %(default)s)")
    e.add_argument("--threads", type=int, default=1, help="threads for every backend (default: %(default)s)")
    e.add_argument("--runs", type=int, default=30, help="timed runs per backend after warm-up (default: %(default)s)")
    e.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    e.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlfs_edge.assets import minilm_path
    from mlfs_edge.eval.bench_engine import run_benchmark

    if args.seq < 1 or args.threads < 1:
        raise ValueError("--seq and --threads must be positive")
    model = Path(args.model) if args.model else minilm_path()
    run_benchmark(model, seq=args.seq, threads=args.threads, runs=args.runs,
                  json_path=Path(args.json) if args.json else None,
                  command=shlex.join(["mlfs-edge", *getattr(args, "argv", ["bench", "engine"])]))
    return 0
