"""Training checkpoints as data, never code: one safetensors file.

A checkpoint is a tree of plain values (dicts, lists, tuples, str, int, float, bool, None) and
tensors: the step counters, history, importance order, LoRA adapters and the optimizer state. The
tensors go into the safetensors body, everything else into a JSON document in its header
(``__metadata__["mlfs"]``), each tensor replaced by a reference to its key. Loading parses JSON and
reads raw tensor bytes: no pickle, so a tampered file cannot run code — it can only fail to parse,
which is a one-line ``ValueError`` that says what to do.

The tree comes back exactly as it was saved (int dict keys — the optimizer's parameter ids — and
tuples — Adam's betas — included; floats round-trip through JSON's shortest repr), which keeps
``--resume`` bit-for-bit. Writes are atomic (temp file + rename, ``mlfs_edge.atomic``).

``CHECKPOINT_KEYS`` are what a checkpoint of `mlfs-edge train` must hold; ``resume_message`` says
in one line where ``--resume`` continues.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mlfs_edge.atomic import write_atomically

if TYPE_CHECKING:
    from mlfs_edge.train.mlfs_config import StageSettings

FORMAT = "mlfs-checkpoint-2"
CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"  # mlfs-edge ≤ 0.1 pickled the state with torch.save: never loaded
_META_KEY = "mlfs"
# What an `mlfs-edge train` checkpoint holds (a file lacking one of these is refused on --resume).
CHECKPOINT_KEYS = frozenset({"config", "order", "stage", "step", "global_step", "wall_s", "history", "merged",
                             "adapters", "optimizer"})


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as JSON-able data; tensors are moved into `tensors` under a key derived from `path`."""
    if isinstance(value, torch.Tensor):
        key = f"{path}#{len(tensors)}"
        # A fresh contiguous CPU copy: safetensors refuses shared or strided storage.
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, int | str):
                raise TypeError(f"checkpoint: dict key {k!r} at {path or '/'} is neither str nor int")
            items.append([k, _encode(v, f"{path}/{k}", tensors)])
        return {"__items__": items}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"checkpoint: cannot store {type(value).__name__} at {path or '/'} "
                    "(only tensors, dicts, lists, tuples, str, int, float, bool and None)")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tensor__"}:
        key = value["__tensor__"]
        if key not in tensors:
            raise ValueError(f"the checkpoint's index names a tensor {key!r} its body does not hold")
        return tensors[key]
    if set(value) == {"__tuple__"}:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if set(value) == {"__items__"}:
        return {k: _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` (safetensors + a JSON index), atomically: a kill leaves the old
    checkpoint or the new one."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode({**state, "format": FORMAT}, "", tensors)
    meta = {_META_KEY: json.dumps(tree, allow_nan=True)}
    write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by `save_checkpoint`; ValueError (one line, saying what to do) for anything
    else — a pickle, a truncated or foreign file. Nothing in the file is executed."""
    from safetensors import safe_open

    path = Path(path)
    refuse = (f"{path} is not an mlfs-edge checkpoint ({{why}}); it was not loaded. Delete it to train "
              "from the start, or point --out at the run folder that wrote it")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) on a bad file
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(refuse.format(why=f"not a safetensors file: {why}")) from None
    if _META_KEY not in meta:
        raise ValueError(refuse.format(why="a safetensors file without the mlfs index"))
    try:
        state = _decode(json.loads(meta[_META_KEY]), tensors)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(refuse.format(why=f"corrupt index: {e}")) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(refuse.format(why=f"format {found!r}, expected {FORMAT!r}"))
    return state


def find_checkpoint(out: Path) -> Path | None:
    """The checkpoint in run folder `out`, or None. A pickled checkpoint of an older version is
    refused (ValueError) rather than unpickled: a pickle can run arbitrary code when loaded."""
    path = Path(out) / CHECKPOINT
    if path.is_file():
        return path
    legacy = Path(out) / LEGACY_CHECKPOINT
    if legacy.is_file():
        raise ValueError(f"{legacy} is a pickled checkpoint (torch.save); --resume does not load pickles, which "
                         f"can run code. Delete it and train from the start (checkpoints are now {CHECKPOINT})")
    return None


def resume_message(path: Path, saved: dict[str, Any] | None, stages: tuple[StageSettings, ...]) -> str:
    """What `--resume` continues from, in one line."""
    if saved is None:
        return f"no checkpoint at {path}: starting from the beginning"
    stage, step, global_step = int(saved["stage"]), int(saved["step"]), int(saved["global_step"])
    if stage >= len(stages):
        return (f"resuming from {path}: all {len(stages)} stages done ({global_step} steps); "
                "writing the supernet")
    s = stages[stage]
    return (f"resuming from {path}: stage {stage + 1} of {len(stages)} ({s.name}) at step {step} of {s.steps} "
            f"({global_step} steps done in all)")
