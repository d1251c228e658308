"""Arguments and look-ups shared by several commands."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlfs_edge.config import ArchSpec, SubnetConfig
    from mlfs_edge.data import ClassificationDataset
    from mlfs_edge.runtime import Engine

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


def run_palette(model_path: Path) -> Path | None:
    """The palette.json of the evaluated run the packed file belongs to, if any."""
    from mlfs_edge.train.run_folder import find_run_folder

    folder = find_run_folder(model_path)
    palette = folder / "palette.json" if folder is not None else None
    return palette if palette is not None and palette.is_file() else None


def quality_table(path: str | Path | None, arch: ArchSpec,
                  depths: Sequence[int] | None = None) -> dict[SubnetConfig, float]:
    """{sub-network: score}, higher = better, for a budget pick. From a JSON list of {"subnet", "accuracy"}
    or {"subnet", "perplexity"} rows (or a palette.json of `mlfs-edge eval`, whose rows carry one of them;
    a perplexity p scores -p); without a file, the default search space (at `depths`, default all) ranked
    by size: bigger = better."""
    from mlfs_edge.config import SearchSpace, SubnetConfig

    if path is None:
        space = SearchSpace.default(arch, depths=depths)
        cfgs = {space.config(d, h, f) for d in space.depths for h in space.heads for f in space.mlp}
        return {cfg: cfg.param_fraction(arch) for cfg in cfgs}
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the quality table {path}: {e}") from None
    if isinstance(rows, dict) and isinstance(rows.get("rows"), list):  # a palette.json of `mlfs-edge eval`
        rows = rows["rows"]
    for key, sign in (("accuracy", 1.0), ("perplexity", -1.0)):
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and {"subnet", key} <= set(r) for r in rows):
            return {SubnetConfig.from_dict(r["subnet"]).validate(arch): sign * float(r[key]) for r in rows}
    raise ValueError(f"{path}: expected a JSON list of {{\"subnet\": ..., \"accuracy\": ...}} (or \"perplexity\") "
                     "objects, or a palette.json of `mlfs-edge eval`")


DRAFT_VOCABS = (4096, 8192, 16384)  # head sizes `auto` tries in a frequency-ordered file


def draft_candidates(engine: Engine, model_path: Path, target: SubnetConfig,
                     draft_vocab: int | None = None) -> list[tuple[SubnetConfig, int | None]]:
    """The drafts `--draft auto` measures for `target` (generate and bench alike), as (sub-network,
    head rows or None): the run's palette members smaller than the target (MLFS trained them to imitate
    the full model) and depth prefixes of the target at its own widths (they share its KV cache); in a
    frequency-ordered file each also with a few cheap heads, and the target itself with one."""
    from mlfs_edge.config import SubnetConfig

    arch = engine.arch
    subnets = []
    palette = run_palette(model_path)
    if palette is not None:
        subnets += [c for c in quality_table(palette, arch) if c.layer_params(arch) < target.layer_params(arch)]
    depth = len(target.layers)
    for d in sorted({max(1, round(depth * f)) for f in (1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3)}):
        if d < depth:
            subnets.append(SubnetConfig(target.layers[:d], target.heads[:d], target.mlp[:d]))
    heads: list[int | None] = [None]
    if engine.vocab_ordered:
        heads += [v for v in (draft_vocab, *DRAFT_VOCABS) if v and v < arch.vocab_size]
    heads = list(dict.fromkeys(heads))
    out = [(c, v) for c in dict.fromkeys(subnets) for v in heads]
    return out + [(target, v) for v in heads if v]  # the target itself with a cheap head
