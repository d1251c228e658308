"""The native mlfs engine: the whole source model packed once per dtype into one ``.mlfs`` file
(the project's one int8 scheme), any sub-network run from it by prefix slicing — so its size is the
one file's, whatever the sub-network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.eval.backends import Runner, Subject

NAME = "mlfs"
DTYPES = ("fp32", "fp16", "int8")
BUILD_IN_WORKER = False
DTYPES_APART = True


def unavailable_reason() -> str | None:
    """Why the engine cannot run here (None when it can): a build without the native extension."""
    try:
        from mlfs_edge.runtime import Engine, pack  # noqa: F401
    except ImportError as e:
        return f"the native engine (mlfs_edge.runtime.Engine/pack) is not in this build: {e}"
    return None


def build(subject: Subject, dtypes: tuple[str, ...], out_dir: Path) -> dict[str, dict[str, Any]]:
    from mlfs_edge.runtime import pack

    out = {}
    for dtype in dtypes:
        path = Path(out_dir) / "mlfs" / f"supernet-{dtype}.mlfs"
        if not path.is_file():
            pack(subject.source, path, dtype=dtype, tokenizer=subject.tokenizer)
        out[dtype] = {"path": str(path), "subnet": subject.subnet.to_dict()}
    return out


def load(artefact: dict[str, Any], dtype: str, threads: int = 1) -> Runner:
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.runtime import Engine

    engine = Engine.load(artefact["path"])
    subnet = SubnetConfig.from_dict(artefact["subnet"]) if artefact.get("subnet") else None
    current = [threads]

    def predict(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return engine.run(ids, mask, subnet=subnet, threads=current[0])

    return Runner(predict, lambda n: current.__setitem__(0, n), engine.file_size)
