"""A training run's folder carries its own truth: the resolved config it was trained with.

`mlfs-edge train` writes ``<out>/run_config.json`` before the first step (so an interrupted run
knows it too). Every later command (eval, slice, pack, run, compare, export) is handed the run
folder — or the supernet folder inside it — and takes the data, columns and palette from there, so
a run trained on the user's CSV is evaluated on that CSV, never silently on a bundled dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mlfs_edge.atomic import write_atomically
from mlfs_edge.train.mlfs_config import MLFSConfig

RUN_CONFIG = "run_config.json"
SUPERNET_DIR = "supernet"  # the trained supernet (a Hugging Face folder)
SUMMARY = "mlfs_train.json"  # the finished run's summary (written last)
FORMAT = "mlfs-run-1"


def resolved(cfg: MLFSConfig) -> MLFSConfig:
    """`cfg` with the task inferred and a data file's path made absolute (bundled names stay names),
    so the record still points at the data when a command runs from another folder."""
    data = Path(cfg.data).expanduser()
    return replace(cfg, task=cfg.resolved_task(), data=str(data.resolve()) if data.is_file() else cfg.data)


def record_run(cfg: MLFSConfig, command: str = "") -> Path:
    """Write <out>/run_config.json (atomically) and return its path. `command`: what made the run."""
    path = Path(cfg.out) / RUN_CONFIG
    text = json.dumps({"format": FORMAT, "command": command, "config": resolved(cfg).to_dict()}, indent=2) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
    return path


@dataclass(frozen=True)
class Run:
    """A run folder and the config it recorded."""

    folder: Path
    config: MLFSConfig
    source: str  # where the config came from (run_config.json, or mlfs_train.json of an older run)
    command: str = ""  # the command that trained it, when recorded

    @property
    def supernet(self) -> Path:
        return self.folder / SUPERNET_DIR

    @property
    def task(self) -> str:
        return self.config.resolved_task()

    def summary(self) -> dict[str, Any]:
        """The finished run's summary (mlfs_train.json); a clear error while training has not ended."""
        path = self.folder / SUMMARY
        if not path.is_file():
            raise ValueError(f"{self.folder} has no finished supernet yet ({SUMMARY} is missing): finish or resume "
                             f"the training with `mlfs-edge train --resume {self.folder}`")
        return json.loads(path.read_text())

    def packed_files(self) -> list[Path]:
        """The .mlfs files `mlfs-edge pack RUN` wrote into the folder."""
        return sorted(self.folder.glob("*.mlfs"))


def find_run_folder(path: str | Path) -> Path | None:
    """The run folder of `path` (a run folder, or the supernet / teacher folder inside one), or None."""
    path = Path(path)
    for folder in (path, path.parent):
        if (folder / RUN_CONFIG).is_file() or (folder / SUMMARY).is_file():
            return folder
    return None


def open_run(path: str | Path) -> Run:
    """The run in `path` (a run folder or its supernet folder), with the config it recorded."""
    folder = find_run_folder(path)
    if folder is None:
        raise ValueError(f"{path} is not a training run folder (no {RUN_CONFIG} or {SUMMARY}): give the --out "
                         "folder of `mlfs-edge train` (or the supernet folder inside it)")
    record_path = folder / RUN_CONFIG
    if record_path.is_file():
        raw, source = _read_json(record_path), str(record_path)
        if raw.get("format") != FORMAT or not isinstance(raw.get("config"), dict):
            raise ValueError(f"{record_path} is not a run record ({FORMAT}); re-run `mlfs-edge train`")
    else:  # a run trained before run_config.json existed: its summary holds the config
        raw, source = _read_json(folder / SUMMARY), str(folder / SUMMARY)
        if not isinstance(raw.get("config"), dict):
            raise ValueError(f"{source} records no config; re-run `mlfs-edge train`")
    config = MLFSConfig.from_dict(raw["config"])
    # The folder may have moved since training: it, not the recorded path, is the run.
    return Run(folder, replace(config, out=str(folder)), source, str(raw.get("command") or ""))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def teacher_folder(cfg: MLFSConfig) -> Path:
    """The stage-0 teacher a classification run distils from: `teacher`, or <out>/teacher when empty."""
    return Path(cfg.teacher) if cfg.teacher else Path(cfg.out) / "teacher"


def config_differences(a: MLFSConfig, b: MLFSConfig) -> list[str]:
    """Field names where two configs differ (data paths and the task compared as resolved; the teacher
    as the folder it names, so `teacher = ""` in runs/x equals `teacher = "runs/x/teacher"`)."""
    ra, rb = resolved(a), resolved(b)
    same_teacher = a.teacher == b.teacher or teacher_folder(a).resolve() == teacher_folder(b).resolve()
    return [f.name for f in fields(MLFSConfig) if f.name != "out" and getattr(ra, f.name) != getattr(rb, f.name)
            and not (f.name == "teacher" and same_teacher)]


def resolve_run(run: str | Path | None, config: str | Path | None = None, quick: bool = False,
                out: str | None = None) -> Run:
    """The run a command works on: the folder given (`run`), or the `--out` of a `--config`.

    With both, the config must be the one the run recorded; a difference is an error that names
    both and the fields that differ, never a silent evaluation of another run or other data.
    """
    if run is None and config is None:
        raise ValueError("give a run folder (the --out of `mlfs-edge train`, e.g. runs/mine) or --config")
    if run is None:
        cfg = MLFSConfig.from_toml(config, quick=quick, out=out)  # type: ignore[arg-type]
        folder = Path(cfg.out)
        if find_run_folder(folder) != folder:
            raise ValueError(f"no trained run in {folder}: run `mlfs-edge train --config {config}"
                             f"{' --quick' if quick else ''}` first")
        found = open_run(folder)
        _check_same(cfg, found, str(config))
        return found
    found = open_run(run)
    if config is not None:
        _check_same(MLFSConfig.from_toml(config, quick=quick, out=str(found.folder)), found, str(config))
    return found


def _check_same(cfg: MLFSConfig, run: Run, config_name: str) -> None:
    diff = config_differences(cfg, run.config)
    if diff:
        detail = "; ".join(f"{k}: {getattr(resolved(cfg), k)!r} in {config_name} vs "
                           f"{getattr(resolved(run.config), k)!r} in the run" for k in diff[:4])
        raise ValueError(f"{config_name} is not the config {run.folder} was trained with ({run.source}): {detail}. "
                         f"Drop --config to use the run's own, or train a run with this config")


def seed_config(cfg: MLFSConfig, seed: int, shared_teacher: bool = True) -> MLFSConfig:
    """The run of `cfg` with another seed, for a multi-seed study (`--seeds`).

    The config's own seed is `cfg` itself (its folder: an existing run is reused); any other seed
    trains in <out>/seed<N>. With `shared_teacher` (the default) every seed distils from the same
    stage-0 teacher — the config's `teacher`, or the one fine-tuned in <out>/teacher — so the spread
    across seeds is MLFS's own; without it each seed fine-tunes its own teacher, seeded with that
    seed, and the spread includes the teacher's. A causal LM has no stage 0: only the seed changes.
    """
    if seed < 0:
        raise ValueError(f"seeds are non-negative integers, got {seed}")
    if seed == cfg.seed:
        return cfg
    out = str(Path(cfg.out) / f"seed{seed}")
    if cfg.resolved_task() == "causal_lm":
        return replace(cfg, seed=seed, out=out)
    if shared_teacher:
        return replace(cfg, seed=seed, out=out, teacher=cfg.teacher or str(Path(cfg.out) / "teacher"))
    if cfg.teacher:
        raise ValueError(f"the config names a fine-tuned teacher ({cfg.teacher}): a teacher per seed needs "
                         "teacher = \"\" (stage 0 in each seed's folder), or share that one")
    return replace(cfg, seed=seed, out=out, teacher_finetune={**cfg.teacher_finetune, "seed": seed})
