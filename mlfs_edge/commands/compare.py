"""mlfs-edge compare: int8 vs fp16 vs fp32 across sub-networks and backends."""

from __future__ import annotations

import argparse

from mlfs_edge.commands._common import DEFAULT_RUN_DIR

ORDER = 80
SUPERNET = DEFAULT_RUN_DIR / "mlfs_minilm_rt" / "supernet"  # `mlfs-edge train --config configs/mlfs_minilm_rt.toml`
TEACHER = DEFAULT_RUN_DIR / "demo" / "teacher"  # `mlfs-edge demo`


def register(sub: argparse._SubParsersAction) -> None:
    from mlfs_edge.eval.compare import BACKENDS, DTYPES

    p = sub.add_parser("compare", help="int8 vs fp16 vs fp32 per sub-network and backend: accuracy, size, latency",
                       description="For each sub-network × dtype × backend (PyTorch, ExecuTorch .pte, ONNX Runtime "
                                   "as the outside reference, the mlfs engine when built) measure test accuracy, "
                                   "agreement with the fp32 model's predictions, size on disk, median latency "
                                   "(batch 1, seq 128, per thread count) and peak memory. Each measurement runs in "
                                   "its own subprocess; peak memory is that process's peak RSS. Prints a markdown "
                                   "table, writes JSON rows and a latency-vs-accuracy Pareto plot. Exports are "
                                   "cached under --work-dir, so a re-run only measures.",
                       epilog="example: mlfs-edge compare --quick --json runs/compare.json --plot runs/compare.png")
    p.add_argument("--model", default=None,
                   help="fine-tuned classifier or trained supernet folder (default: the MLFS supernet "
                        f"{SUPERNET} when it has been trained, else the demo teacher {TEACHER})")
    p.add_argument("--subnets", nargs="+", default=None, metavar="SPEC",
                   help="sub-networks ('full', 'depth=4,heads=6,mlp=768', JSON or a file); default: 3 of the "
                        "search space (largest, middle, smallest)")
    p.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated from " + ", ".join(DTYPES))
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated from " + ", ".join(BACKENDS))
    p.add_argument("--threads", default="1,2", help="thread counts for latency (default: %(default)s)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per latency (default: %(default)s)")
    p.add_argument("--max-test", type=int, default=None, help="use only the first N test sentences")
    p.add_argument("--quick", action="store_true", help="one sub-network, 500 test sentences, 5 runs (< 3 min)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", default=None, metavar="PATH", help="write the Pareto plot (PNG)")
    p.add_argument("--work-dir", default=str(DEFAULT_RUN_DIR / "compare"),
                   help="where exports are built and cached (default: %(default)s)")
    p.set_defaults(func=run)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def run(args: argparse.Namespace) -> int:
    import platform
    import time

    from mlfs_edge.eval.compare import CompareSettings, run_compare, table, write_outputs

    try:
        threads = tuple(int(t) for t in _csv(args.threads))
    except ValueError:
        raise ValueError(f"--threads takes integers like 1,2; got {args.threads!r}") from None
    settings = CompareSettings(dtypes=_csv(args.dtypes), backends=_csv(args.backends), threads=threads,
                               latency_runs=args.runs, max_test=args.max_test).validate()
    model = args.model or str(SUPERNET if (SUPERNET / "config.json").is_file() else TEACHER)
    print(f"[compare] model: {model}")
    t0 = time.perf_counter()
    rows = run_compare(model, args.subnets, args.work_dir, settings, quick=args.quick)
    wall = time.perf_counter() - t0
    print(table(rows))
    print(f"\n{len(rows)} rows in {wall:.0f} s. Latency: median of {settings.latency_runs if not args.quick else 5} "
          "runs, batch 1, 128 tokens; machine load from other processes adds noise, compare ratios within a run.")
    write_outputs(rows, args.json, args.plot, {"model": model, "quick": args.quick, "wall_s": wall,
                                               "machine": platform.processor() or platform.machine()})
    return 0
