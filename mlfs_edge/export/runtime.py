"""Run an exported ``.pte`` in the ExecuTorch Python runtime, the way an app does: manifest first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mlfs_edge.export.manifest import Manifest


class PteModel:
    """A ``.pte`` loaded through its manifest (sha256 checked) with its tokenizer.

    ``__call__(texts)`` returns one output row per text (batch 1 per call, each at its own length,
    as an app runs it); ``forward(input_ids, attention_mask)`` runs already-tokenized input.
    """

    def __init__(self, manifest_path: str | Path, load_tokenizer: bool = True) -> None:
        from executorch.runtime import Runtime

        self.manifest_path = Path(manifest_path)
        self.manifest = Manifest.read(self.manifest_path)
        program_bytes = self.manifest.verify_pte(self.manifest_path)
        try:
            # Keep the program alive as long as its method: the method points into it.
            self._program = Runtime.get().load_program(program_bytes)
            self._method = self._program.load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError/ValueError for bad flatbuffers
            raise ValueError(f"ExecuTorch cannot load {self.manifest.pte}: {e}; re-export with "
                             "`mlfs-edge export`") from None
        if self._method is None:
            raise ValueError(f"{self.manifest.pte} has no forward method; re-export with `mlfs-edge export`")
        self.tokenizer = None
        if load_tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.manifest_path.parent / self.manifest.tokenizer["dir"])

    @property
    def size_bytes(self) -> int:
        return self.manifest.size_bytes

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[-1]
        if not self.manifest.min_length <= seq <= self.manifest.max_length:
            raise ValueError(f"sequence length {seq} outside the exported range "
                             f"{self.manifest.min_length}..{self.manifest.max_length}")
        return self._method.execute([input_ids.long(), attention_mask.long()])[0]

    def encode(self, text: str, pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.manifest
        enc = self.tokenizer(text, truncation=True, max_length=min(pad_to or m.max_length, m.max_length),
                             padding="max_length" if pad_to else False, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.shape[1] < m.min_length:  # pad very short inputs up to the smallest exported length
            extra = m.min_length - ids.shape[1]
            ids = torch.nn.functional.pad(ids, (0, extra), value=self.tokenizer.pad_token_id or 0)
            mask = torch.nn.functional.pad(mask, (0, extra), value=0)
        return ids, mask

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.cat([self.forward(*self.encode(t)) for t in texts])


def xnnpack_runner(model: torch.nn.Module, input_ids: Any, attention_mask: Any,
                   dtype: str = "fp32") -> Callable[[], Any]:
    """A zero-argument callable that runs `model` lowered to ExecuTorch/XNNPACK on these inputs
    (numpy or torch, [batch 1, seq]), lowered in memory with no file written (benchmarks that measure
    through files use ``mlfs_edge.eval.backends.executorch``). Logits for a classifier, the mean-pooled
    embedding for a bare encoder; int8 is dynamic."""
    from executorch.runtime import Runtime

    from mlfs_edge.export.lower import ExportConfig, lower_to_executorch

    ids, mask = torch.as_tensor(input_ids).long(), torch.as_tensor(attention_mask).long()
    output = "logits" if hasattr(model, "classifier") else "embedding"
    cfg = ExportConfig(dtype=dtype, output=output, max_length=max(2, ids.shape[-1])).validate(model)
    program = Runtime.get().load_program(lower_to_executorch(model, None, cfg))
    method = program.load_method("forward")

    def run() -> Any:
        _ = program  # the method points into the program: keep it alive with the closure
        return method.execute([ids, mask])[0]

    return run
