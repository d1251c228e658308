"""mlfs-edge compare: int8 vs fp16 vs fp32 across sub-networks and backends."""

from __future__ import annotations

import argparse

from mlfs_edge.commands._common import DEFAULT_RUN_DIR, add_data_args

ORDER = 80
# Without --model: the first of these that exists (the demo's MLFS run, the shipped config's run,
# a bare teacher); the command prints which one it took.
DEFAULT_MODELS = (DEFAULT_RUN_DIR / "demo" / "supernet", DEFAULT_RUN_DIR / "mlfs_minilm_rt" / "supernet",
                  DEFAULT_RUN_DIR / "demo" / "teacher")


def register(sub: argparse._SubParsersAction) -> None:
    from mlfs_edge.eval.compare import BACKENDS, DTYPES

    p = sub.add_parser("compare", help="int8 vs fp16 vs fp32 per sub-network and backend: accuracy, size, latency",
                       description="For each sub-network × dtype × backend (PyTorch eager with its own dynamic "
                                   "int8, ExecuTorch .pte, ONNX Runtime with its own dynamic int8, the mlfs engine "
                                   "when built) measure test accuracy, agreement with the fp32 PyTorch model's "
                                   "predictions, size, median latency (batch 1, seq 128, per thread count) and "
                                   "peak memory. Exports are built two at a time (one process per core); each "
                                   "backend is then measured in its own subprocess, artefact after artefact, and "
                                   "peak memory is that process's peak RSS from a reset before each artefact. "
                                   "Prints a markdown table, writes JSON rows and a latency-vs-accuracy Pareto "
                                   "plot. Exports are cached under --work-dir, so a re-run only measures.",
                       epilog="example: mlfs-edge compare --quick --json runs/compare.json --plot runs/compare.png")
    p.add_argument("--model", default=None,
                   help="a training run folder, a trained supernet folder or a fine-tuned classifier (default: the "
                        f"first that exists of {', '.join(map(str, DEFAULT_MODELS))})")
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
    add_data_args(p, "rotten_tomatoes", from_run=True)
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
    from mlfs_edge.commands._common import data_for, model_folder

    if args.model is None:
        found = [m for m in DEFAULT_MODELS if (m / "config.json").is_file()]
        if not found:
            raise ValueError("no model to compare: run `mlfs-edge demo` or `mlfs-edge train` first, or pass --model")
        model = str(found[0])
    else:
        model = str(model_folder(args.model))
    data = data_for(model, args)
    settings = CompareSettings(dtypes=_csv(args.dtypes), backends=_csv(args.backends), threads=threads,
                               latency_runs=args.runs, max_test=args.max_test, data=data.data,
                               text_column=data.text_column, label_column=data.label_column).validate()
    print(f"[compare] model: {model}; test data: {data.data} ({data.why})")
    t0 = time.perf_counter()
    rows = run_compare(model, args.subnets, args.work_dir, settings, quick=args.quick)
    wall = time.perf_counter() - t0
    print(table(rows))
    print(f"\n{len(rows)} rows in {wall:.0f} s. Latency: median of {settings.latency_runs if not args.quick else 5} "
          "runs, batch 1, 128 tokens; machine load from other processes adds noise, compare ratios within a run.")
    write_outputs(rows, args.json, args.plot, {"model": model, "data": data.data, "quick": args.quick, "wall_s": wall,
                                               "machine": platform.processor() or platform.machine()})
    return 0
