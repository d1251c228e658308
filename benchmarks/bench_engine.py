"""Engine benchmark (see mlfs_edge.eval.bench_engine): prints a table and writes JSON.

    .venv/bin/python benchmarks/bench_engine.py --seq 128 --threads 1 --runs 30 \
        --json benchmarks/results/engine.json

Same as `mlfs-edge bench engine`; numbers from a shared machine are only meaningful as ratios
between the rows of one run.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mlfs_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "engine", *sys.argv[1:]]))
