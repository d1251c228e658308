"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_RUN_DIR = Path(os.environ.get("MLFS_EDGE_RUNS", "runs"))


def add_data_args(p: argparse.ArgumentParser, default: str | None) -> None:
    suffix = " (default: %(default)s)" if default else ""
    p.add_argument("--data", default=default, metavar="NAME|PATH",
                   help="bundled dataset (rotten_tomatoes, trec, sms_spam) or a .csv/.jsonl/.parquet file "
                        f"with a text and a label column{suffix}")
    p.add_argument("--text-column", default="text", help="text column of a --data file (default: text)")
    p.add_argument("--label-column", default="label", help="label column of a --data file (default: label)")
