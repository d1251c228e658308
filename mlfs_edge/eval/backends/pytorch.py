"""PyTorch eager: the sub-network's Hugging Face folder, run as fp32, as fp16 (``model.half()``) or
with PyTorch's own dynamic int8 (``torch.ao`` ``quantize_dynamic``: linears with per-channel int8
weights and int8 activations ranged at run time on fbgemm/x86 kernels, embedding tables as per-row
weight-only 8-bit) — what a PyTorch user picks on a CPU. Decoders: Hugging Face ``generate`` in fp32
with its KV cache, greedy, no stop token."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.eval.backends import DecoderSource, Generator, Runner, Subject, Timing

NAME = "pytorch"
DTYPES = ("fp32", "fp16", "int8")
BUILD_IN_WORKER = False
DTYPES_APART = True
DECODER_DTYPES = ("fp32",)
SLICES = False


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


# --- decoders ------------------------------------------------------------------------------------------

def decoder_unavailable_reason() -> str | None:
    return None  # torch and transformers are project dependencies


def build_decoder(source: DecoderSource, dtypes: tuple[str, ...], out_dir: Path) -> dict[str, dict[str, Any]]:
    bad = [d for d in dtypes if d not in DECODER_DTYPES]
    if bad:
        raise ValueError(f"PyTorch generate rows are fp32, not {', '.join(bad)}")
    return {d: {"path": str(source.folder)} for d in dtypes}


def load_decoder(artefact: dict[str, Any], dtype: str, threads: int = 1) -> Generator:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    if dtype != "fp32":
        raise ValueError(f"PyTorch generate rows are fp32, not {dtype!r}")
    folder = Path(artefact["path"])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    # greedy with the KV cache, no stop token: exactly new_tokens tokens, like every backend
    config = GenerationConfig(do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.numel() * p.element_size() for p in model.parameters())

    class Clock(BaseStreamer):
        """generate calls put() with the prompt, then once per new token: the time of each call."""

        def __init__(self) -> None:
            self.marks: list[float] = []

        def put(self, value: Any) -> None:
            self.marks.append(time.perf_counter())

        def end(self) -> None:
            pass

    def generate(prompt_ids: Sequence[int], new_tokens: int, threads: int, subnet: Any = None) -> Timing:
        if subnet is not None:
            raise ValueError("PyTorch rows run the full model only")
        torch.set_num_threads(threads)
        x = torch.tensor([list(prompt_ids)], dtype=torch.long)
        clock = Clock()
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(x, attention_mask=torch.ones_like(x), generation_config=config,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, streamer=clock)
        first, last = clock.marks[1], clock.marks[-1]
        return Timing(first - t0, last - first, len(clock.marks) - 1)

    torch.set_num_threads(threads)
    return Generator(generate, size)
