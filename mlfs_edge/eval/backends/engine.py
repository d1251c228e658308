"""The native mlfs engine: the whole source model packed once per dtype into one ``.mlfs`` file
(the project's one int8 scheme), any sub-network run from it by prefix slicing — so its size is the
one file's, whatever the sub-network. Encoders run through ``run``; decoders (fp32 / fp16 / int8 /
q4) generate through ``Engine.stream``, any sub-network of the one file."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.eval.backends import DecoderSource, Generator, Runner, Subject, Timing
from mlfs_edge.runtime.format import is_current

NAME = "mlfs"
DTYPES = ("fp32", "fp16", "int8")
BUILD_IN_WORKER = False
DTYPES_APART = True
DECODER_DTYPES = ("fp32", "fp16", "int8", "q4")
SLICES = True


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
        if not is_current(path):  # missing, or cached by an older format version
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


# --- decoders ------------------------------------------------------------------------------------------

def decoder_unavailable_reason() -> str | None:
    return unavailable_reason()


def _source_tag(folder: Path) -> str:
    """Names the packed files of one source: its folder name and a hash of its path and weights' times
    (a retrained supernet at the same path is packed anew)."""
    folder = folder.resolve()
    stamp = [str(folder)] + [f"{p.name}:{p.stat().st_mtime_ns}" for p in sorted(folder.glob("*.safetensors"))]
    return f"{folder.name}-{hashlib.sha1('|'.join(stamp).encode()).hexdigest()[:8]}"


def build_decoder(source: DecoderSource, dtypes: tuple[str, ...], out_dir: Path) -> dict[str, dict[str, Any]]:
    """The source folder packed once per dtype (the whole supernet: every sub-network runs from it),
    under out_dir/mlfs/; a finished file is reused."""
    from mlfs_edge.runtime import pack

    out = {}
    for dtype in dtypes:
        if dtype not in DECODER_DTYPES:
            raise ValueError(f"the engine generates with {', '.join(DECODER_DTYPES)}, not {dtype!r}")
        path = Path(out_dir) / "mlfs" / f"{_source_tag(source.folder)}-{dtype}.mlfs"
        if not is_current(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            pack(source.folder, path, dtype=dtype)
        out[dtype] = {"path": str(path)}
    return out


def load_decoder(artefact: dict[str, Any], dtype: str, threads: int = 1) -> Generator:
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.runtime import Engine

    engine = Engine.load(artefact["path"])
    if engine.kind != "decoder":
        raise ValueError(f"{artefact['path']} is an encoder file, not a decoder")

    def generate(prompt_ids: Sequence[int], new_tokens: int, threads: int, subnet: Any = None) -> Timing:
        cfg = SubnetConfig.from_dict(subnet) if isinstance(subnet, dict) else subnet
        t0 = time.perf_counter()
        stream = engine.stream(np.asarray(prompt_ids, np.int64), subnet=cfg, max_new_tokens=new_tokens,
                               stop_tokens=[], threads=threads)
        next(stream)
        t1 = time.perf_counter()
        n = 1 + sum(1 for _ in stream)
        return Timing(t1 - t0, time.perf_counter() - t1, n)

    return Generator(generate, engine.file_size)
