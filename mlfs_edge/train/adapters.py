"""The trained LoRA adapters across stages: their values (what a checkpoint keeps), folding them into
the frozen base for a stage with `fresh_adapters`, and replaying those merges when a run resumes."""

from __future__ import annotations

import math

import torch
from torch import nn


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def merge_and_reset_adapters(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Fold the current adapters into the frozen base and start fresh ones (B = 0, A re-drawn).
    Returns the merged adapter values, which a resume re-applies."""
    from mlfs_edge.supernet.arch import base_linear, lora_pairs

    merged = lora_state(model)
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for (lora_a, lora_b), name in zip(lora_pairs(module), getattr(module, "lora_A", {}), strict=False):
            base_linear(module).weight += module.scaling[name] * (lora_b.weight @ lora_a.weight)
            bound = 1 / math.sqrt(lora_a.weight.shape[1])
            lora_a.weight.copy_(torch.rand(lora_a.weight.shape, generator=g) * 2 * bound - bound)
            lora_b.weight.zero_()
    return merged


@torch.no_grad()
def reapply_merged(model: nn.Module, merged: list[dict[str, torch.Tensor]]) -> None:
    params = dict(model.named_parameters())
    for adapters in merged:
        for name, value in adapters.items():
            params[name].copy_(value)
        merge_and_reset_adapters(model, seed=0)
