"""Task metrics for classifiers (accuracy) computed in batches without gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlfs_edge.data import Split


@dataclass(frozen=True)
class ClassificationResult:
    accuracy: float
    predictions: list[int]
    n: int


def compute_device() -> torch.device:
    """Where training and evaluation run: the GPU when torch sees one (as Accelerate chooses), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    """Where the steps ran, for the record: "cpu" or e.g. "cuda (NVIDIA H200)" (wall times differ by far)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def on_device_of(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` moved to where `model`'s weights are (a GPU when the caller put the model there)."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in tensors.items()}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, tokenizer, texts: list[str], batch_size: int = 64,  # noqa: ANN001
                   max_length: int = 128, progress: str | None = None) -> torch.Tensor:
    """Class logits for `texts`, batched; sorted by length so padding stays small. `progress`: the
    label of a progress bar over the batches (None: no bar)."""
    from tqdm.auto import tqdm

    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(0)
    chunks: list[tuple[list[int], torch.Tensor]] = []
    for start in tqdm(range(0, len(order), batch_size), desc=progress, unit="batch", disable=progress is None):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        logits = model(**on_device_of(model, {k: enc[k] for k in ("input_ids", "attention_mask")})).logits
        chunks.append((idx, logits.float().cpu()))
    if not chunks:
        return out
    num_labels = chunks[0][1].shape[-1]
    out = torch.empty(len(texts), num_labels)
    for idx, logits in chunks:
        out[torch.tensor(idx)] = logits
    return out


def evaluate_classifier(model: torch.nn.Module, tokenizer, split: Split, batch_size: int = 64,  # noqa: ANN001
                        max_length: int = 128) -> ClassificationResult:
    logits = predict_logits(model, tokenizer, split.texts, batch_size, max_length)
    preds = logits.argmax(-1).tolist()
    correct = sum(int(p == y) for p, y in zip(preds, split.labels, strict=True))
    return ClassificationResult(correct / max(1, len(split)), preds, len(split))
