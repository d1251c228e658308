"""Training checkpoints are data (safetensors + a JSON index), never a pickle: exact round trip,
atomic writes, and every foreign or tampered file refused with one line that says what to do."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlfs_edge.train.checkpoint import (
    CHECKPOINT,
    LEGACY_CHECKPOINT,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


class WritesMarker:
    """A pickle payload: unpickling it runs `open(marker, 'w').write(...)`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"stage": 0, "payload": WritesMarker(marker)})


def test_the_payload_is_live(tmp_path):
    """The refusal tests below mean something only if this payload really runs code when unpickled."""
    marker = tmp_path / "ran"
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=evil_pickle(marker), check=True)
    assert marker.read_text() == "code ran"


def test_round_trip_is_exact(tmp_path):
    g = torch.Generator().manual_seed(0)
    opt_state = {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(3, 4, generator=g)},
                           5: {"step": torch.tensor(7.0), "exp_avg": torch.randn(2, generator=g)}},
                 "param_groups": [{"lr": 1e-3 / 3, "betas": (0.9, 0.999), "eps": 1e-8, "foreach": None,
                                   "params": [0, 5]}]}
    base = torch.randn(4, 4, generator=g)
    state = {"stage": 1, "step": 2, "wall_s": 0.1 + 0.2, "history": [{"total": math.pi, "ranks": [4, 1]}],
             "order": {"method": "weight", "heads": [[1, 0]]}, "nan": float("nan"),
             "adapters": {"a.lora_A.weight": base[:, :2], "b.weight": base.to(torch.bfloat16)},  # a view, bf16
             "merged": [{"x": torch.arange(3)}], "optimizer": opt_state, "__odd": {"__tensor__": "literal"}}
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert back.pop("format") == "mlfs-checkpoint-2"
    assert math.isnan(back.pop("nan")) and math.isnan(state.pop("nan"))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuple stays a tuple
    assert set(back["optimizer"]["state"]) == {0, 5}  # int keys stay ints
    assert back["wall_s"] == 0.1 + 0.2 and back["history"][0]["total"] == math.pi
    assert back["__odd"] == {"__tensor__": "literal"}

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        if isinstance(a, dict):
            return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list | tuple):
            return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
        return type(a) is type(b) and a == b

    assert same(state, back)
    assert not [p for p in tmp_path.iterdir() if p.name != CHECKPOINT]  # no temp file left behind


def test_unstorable_values_are_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match="cannot store object at /x"):
        save_checkpoint(tmp_path / CHECKPOINT, {"x": object()})
    assert not (tmp_path / CHECKPOINT).exists()


@pytest.mark.parametrize("content", ["pickle", "empty", "truncated", "plain safetensors", "wrong format"])
def test_foreign_files_are_refused_with_one_line(tmp_path, content):
    from safetensors.torch import save_file

    path = tmp_path / CHECKPOINT
    marker = tmp_path / "ran"
    if content == "pickle":
        path.write_bytes(evil_pickle(marker))
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        save_checkpoint(path, {"w": torch.ones(1000)})
        path.write_bytes(path.read_bytes()[:-100])
    elif content == "plain safetensors":
        save_file({"w": torch.ones(2)}, str(path))
    else:
        save_file({"w": torch.ones(2)}, str(path), metadata={"mlfs": '{"format": "something-else"}'})
    with pytest.raises(ValueError, match="is not an mlfs-edge checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "Delete it" in str(info.value)
    assert not marker.exists()


def test_a_legacy_pickled_checkpoint_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / LEGACY_CHECKPOINT).write_bytes(evil_pickle(marker))
    with pytest.raises(ValueError, match="does not load pickles"):
        find_checkpoint(tmp_path)
    assert not marker.exists()
    save_checkpoint(tmp_path / CHECKPOINT, {"stage": 0})  # a current checkpoint takes precedence
    assert find_checkpoint(tmp_path) == tmp_path / CHECKPOINT
    assert find_checkpoint(tmp_path / "nothing") is None
