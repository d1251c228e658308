"""ExecuTorch with the XNNPACK delegate: the sub-network lowered to a ``.pte`` (``mlfs_edge.export``:
dynamic sequence length, fp32 / fp16 / int8 PT2E) and run through the Python runtime bindings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.eval.backends import Runner, Subject

NAME = "executorch"
DTYPES = ("fp32", "fp16", "int8")
BUILD_IN_WORKER = True
DTYPES_APART = True


def build(subject: Subject, dtypes: tuple[str, ...], out_dir: Path) -> dict[str, dict[str, Any]]:
    """One .pte per dtype; a finished export whose manifest names the same sub-network, output and
    length bound is reused (a re-run only measures)."""
    from mlfs_edge.export import ExportConfig, Manifest, export_pte

    folder = Path(out_dir) / subject.name / "pte"
    out = {}
    for dtype in dtypes:
        manifest = folder / f"{subject.name}-{subject.output}-{dtype}.json"
        try:
            old = Manifest.read(manifest)
            reuse = (old.subnet == subject.subnet.to_dict() and old.dtype == dtype and old.output == subject.output
                     and old.max_length == subject.max_length)
        except (OSError, ValueError):
            reuse = False
        if not reuse:
            manifest = export_pte(subject.model, subject.tokenizer, folder, manifest.stem,
                                  ExportConfig(dtype=dtype, output=subject.output, max_length=subject.max_length,
                                               calibration_texts=tuple(subject.calibration)),
                                  subnet=subject.subnet.to_dict())
        out[dtype] = {"path": str(manifest)}
    return out


_pool_threads: int | None = None  # the thread count this process's ExecuTorch threadpool was sized to


def load(artefact: dict[str, Any], dtype: str, threads: int = 1) -> Runner:
    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    from mlfs_edge.export import PteModel

    # ExecuTorch 1.5's threadpool may only be sized before the first program is loaded in a process:
    # its XNNPACK delegate keeps the pool it was loaded with, and a resize afterwards corrupts the heap
    # (seen here: hangs, segfaults and malloc aborts in fp16 programs). So a process runs ExecuTorch
    # at one thread count, set before its first load.
    global _pool_threads
    if _pool_threads is None:
        _unsafe_reset_threadpool(threads)
        _pool_threads = threads
    elif threads != _pool_threads:
        raise ValueError(f"this process runs ExecuTorch at {_pool_threads} thread(s); load programs for {threads} "
                         "thread(s) in another process (ExecuTorch 1.5 cannot resize its threadpool safely)")
    pte = PteModel(artefact["path"], load_tokenizer=False)

    def predict(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return pte.forward(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    def fixed_threads(n: int) -> None:
        if n != threads:
            raise ValueError(f"an ExecuTorch program runs at the {threads} thread(s) it was loaded with, not {n}: "
                             "measure other thread counts in another process")

    return Runner(predict, fixed_threads, pte.size_bytes)
