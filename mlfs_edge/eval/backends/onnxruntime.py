"""ONNX Runtime (CPU execution provider): the sub-network exported with the dynamo ONNX exporter
(dynamic sequence length, the same wrapper as every export), fp32 and ONNX Runtime's own dynamic int8
(``quantize_dynamic``, per-channel int8 weights): the outside reference for our int8. No fp16 row:
ONNX Runtime's CPU provider has no fp16 kernels for these ops (it would insert casts back to fp32)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.eval.backends import Runner, Subject

NAME = "onnxruntime"
DTYPES = ("fp32", "int8")
BUILD_IN_WORKER = True
DTYPES_APART = False


def build(subject: Subject, dtypes: tuple[str, ...], out_dir: Path) -> dict[str, dict[str, Any]]:
    from mlfs_edge.atomic import write_atomically

    folder = Path(out_dir) / subject.name / "onnx"
    fp32 = folder / f"{subject.output}-fp32.onnx"
    if not fp32.is_file():
        import torch
        from torch.export import Dim

        from mlfs_edge.export import EncoderForExport

        wrapper = EncoderForExport(subject.model, subject.output).eval()
        seq = Dim("seq", min=2, max=subject.max_length)
        example = (torch.ones(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long))

        def write_fp32(tmp: Path) -> None:
            program = torch.onnx.export(wrapper, example, dynamo=True, input_names=["input_ids", "attention_mask"],
                                        output_names=["output"],
                                        dynamic_shapes={"input_ids": {1: seq}, "attention_mask": {1: seq}},
                                        external_data=False, verbose=False)
            program.save(str(tmp))

        write_atomically(fp32, write_fp32)
    out = {}
    for dtype in dtypes:
        if dtype == "fp32":
            out[dtype] = {"path": str(fp32)}
        elif dtype == "int8":
            int8 = folder / f"{subject.output}-int8.onnx"
            if not int8.is_file():
                from onnxruntime.quantization import QuantType, quantize_dynamic

                write_atomically(int8, lambda tmp: quantize_dynamic(str(fp32), str(tmp), per_channel=True,
                                                                    weight_type=QuantType.QInt8))
            out[dtype] = {"path": str(int8)}
        else:
            raise ValueError(f"ONNX Runtime rows are fp32 or int8, not {dtype!r}")
    return out


def load(artefact: dict[str, Any], dtype: str, threads: int = 1) -> Runner:
    import onnxruntime as ort

    path = artefact["path"]
    sessions: dict[int, Any] = {}
    current = [threads]

    def set_threads(n: int) -> None:
        # intra-op threads are fixed per session: one session per thread count, made on first use
        if n not in sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            sessions[n] = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        current[0] = n

    def predict(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return sessions[current[0]].run(None, {"input_ids": ids, "attention_mask": mask})[0]

    set_threads(threads)
    return Runner(predict, set_threads, os.path.getsize(path))
