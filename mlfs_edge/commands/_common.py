"""Arguments and look-ups shared by several commands."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlfs_edge.data import ClassificationDataset

DEFAULT_RUN_DIR = Path(os.environ.get("MLFS_EDGE_RUNS", "runs"))
DEFAULT_DATA = "rotten_tomatoes"


def add_data_args(p: argparse.ArgumentParser, default: str | None, from_run: bool = False) -> None:
    """--data / --text-column / --label-column. With `from_run` the defaults are None: the command then
    takes them from the training run it is given (see `data_for`), and from `default` otherwise."""
    if from_run:
        suffix = f" (default: the run's own data; {default} for a model that is not a run)"
    else:
        suffix = f" (default: {default})" if default else ""
    p.add_argument("--data", default=None if from_run else default, metavar="NAME|PATH",
                   help="bundled dataset (rotten_tomatoes, trec, sms_spam) or a .csv/.jsonl/.parquet file "
                        f"with a text and a label column{suffix}")
    p.add_argument("--text-column", default=None if from_run else "text",
                   help="text column of a --data file (default: " + ("the run's, else " if from_run else "") + "text)")
    p.add_argument("--label-column", default=None if from_run else "label",
                   help="label column of a --data file (default: " + ("the run's, else " if from_run else "") +
                        "label)")


@dataclass(frozen=True)
class DataChoice:
    data: str
    text_column: str
    label_column: str
    why: str  # where the choice came from, printed so the user sees which data is used

    def load(self) -> ClassificationDataset:
        from mlfs_edge.data import load_classification

        return load_classification(self.data, self.text_column, self.label_column)


def data_for(model_path: str | Path | None, args: argparse.Namespace, default: str = DEFAULT_DATA) -> DataChoice:
    """The data a command evaluates or calibrates on: --data if given, else what the training run
    that `model_path` belongs to recorded, else `default`."""
    from mlfs_edge.train.run_folder import find_run_folder, open_run

    folder = find_run_folder(model_path) if model_path is not None else None
    recorded = open_run(folder).config if folder is not None else None
    if args.data is not None:
        return DataChoice(args.data, args.text_column or "text", args.label_column or "label", "--data")
    if recorded is not None:
        return DataChoice(recorded.data, args.text_column or recorded.text_column,
                          args.label_column or recorded.label_column, f"recorded by the run {folder}")
    return DataChoice(default, args.text_column or "text", args.label_column or "label", "the default")


def model_folder(path: str | Path) -> Path:
    """A model folder from what the user gave: a training run folder means its supernet."""
    from mlfs_edge.train.run_folder import SUPERNET_DIR

    path = Path(path)
    if not (path / "config.json").is_file() and (path / SUPERNET_DIR / "config.json").is_file():
        return path / SUPERNET_DIR
    return path
