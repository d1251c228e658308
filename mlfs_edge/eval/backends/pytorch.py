"""PyTorch eager: the sub-network's Hugging Face folder, run as fp32, as fp16 (``model.half()``) or
with PyTorch's own dynamic int8 (``torch.ao`` ``quantize_dynamic``: linears with per-channel int8
weights and int8 activations ranged at run time on fbgemm/x86 kernels, embedding tables as per-row
weight-only 8-bit) — what a PyTorch user picks on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.eval.backends import Runner, Subject

NAME = "pytorch"
DTYPES = ("fp32", "fp16", "int8")
BUILD_IN_WORKER = False
DTYPES_APART = True


def build(subject: Subject, dtypes: tuple[str, ...], out_dir: Path) -> dict[str, dict[str, Any]]:
    path = subject.hf_folder(out_dir)
    return {d: {"path": str(path), "output": subject.output} for d in dtypes}


def load(artefact: dict[str, Any], dtype: str, threads: int = 1) -> Runner:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    import mlfs_edge.supernet  # noqa: F401  (registers the narrow-head BERT with the Auto classes)
    from mlfs_edge.export import EncoderForExport
    from mlfs_edge.quant import model_size_bytes

    output = artefact.get("output", "logits")
    auto = AutoModelForSequenceClassification if output == "logits" else AutoModel
    model = auto.from_pretrained(artefact["path"], attn_implementation="eager").eval()
    if dtype == "fp16":
        model = model.half()
    elif dtype == "int8":
        from torch.ao.quantization import (
            float_qparams_weight_only_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        spec = {torch.nn.Linear: per_channel_dynamic_qconfig, torch.nn.Embedding: float_qparams_weight_only_qconfig}
        model = quantize_dynamic(model, spec, dtype=torch.qint8)
    elif dtype != "fp32":
        raise ValueError(f"PyTorch runs fp32, fp16 or int8, not {dtype!r}")
    # The same wrapper that is exported to ExecuTorch and ONNX: one definition of "the output".
    wrapper = EncoderForExport(model, output).eval()
    torch.set_num_threads(threads)

    def predict(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    return Runner(predict, torch.set_num_threads, model_size_bytes(model))
