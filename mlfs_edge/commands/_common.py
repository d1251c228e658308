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
    from mlfs_edge.train.mlfs import SUPERNET_DIR

    path = Path(path)
    if not (path / "config.json").is_file() and (path / SUPERNET_DIR / "config.json").is_file():
        return path / SUPERNET_DIR
    return path


def check_labels(model_dir: str | Path, label_names: list[str], data_name: str) -> None:
    """The data's labels against the model's (its config's id2label): another number of classes, or the
    same names in another order, would be scored against the wrong classes — an error. Other names
    (a model saved as neg/pos, data labelled negative/positive) are matched by position, and said so."""
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = config.get("id2label") or {}
    model_labels = [id2label.get(str(i), id2label.get(i)) for i in range(len(id2label))]
    data_labels = list(label_names)
    if not model_labels or model_labels == data_labels:
        return
    if len(model_labels) != len(data_labels) or (set(model_labels) == set(data_labels)):
        raise ValueError(f"{data_name} has the labels {data_labels} but the model {model_dir} was trained on "
                         f"{model_labels}: evaluate it on data with the same labels, in the same order")
    if not all(str(m).startswith("LABEL_") for m in model_labels):  # HF's placeholder names say nothing
        print(f"note: the model's labels {model_labels} are matched by position to {data_name}'s {data_labels}")
