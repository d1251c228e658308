"""Where the sliceable pieces of a Hugging Face transformer live, per family.

Every other supernet module (importance reordering, the elastic wrapper, extraction) goes through
`backbone_layers` and `layer_parts`, so a new family is supported by teaching these two functions
its module names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from mlfs_edge.config import ArchSpec


@dataclass(frozen=True)
class LayerParts:
    """The projections of one transformer layer that sub-networks slice.

    Attention: q/k/v are sliced on their output rows, o on its input columns. MLP: every module of
    `mlp_in` (BERT: intermediate; Llama: gate and up) on output rows, `mlp_out` on input columns.
    The modules may be plain `nn.Linear` or peft LoRA layers wrapping one (see `base_linear`).
    """

    q: nn.Module
    k: nn.Module
    v: nn.Module
    o: nn.Module
    mlp_in: tuple[nn.Module, ...]
    mlp_out: nn.Module


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def arch_of(model: nn.Module) -> ArchSpec:
    return ArchSpec.from_hf_config(unwrap(model).config)


def layer_container(model: nn.Module) -> tuple[nn.Module, str]:
    """(module, attribute) holding the ModuleList of transformer layers."""
    hf = unwrap(model)
    family = ArchSpec.from_hf_config(hf.config).family
    base = hf.base_model
    if family == "bert":
        return base.encoder, "layer"
    if family == "llama":
        return base, "layers"
    raise ValueError(f"the supernet supports the BERT and Llama families, not {family!r} (GPT-2 is not wired yet)")


_FULL_LAYERS = "_mlfs_full_layers"  # the original ModuleList, kept aside while a shallower sub-network runs


def backbone_layers(model: nn.Module) -> nn.ModuleList:
    """All transformer layers of the model, also while a shallower sub-network is active."""
    owner, attr = layer_container(model)
    full = owner.__dict__.get(_FULL_LAYERS)
    return full if full is not None else getattr(owner, attr)


def set_depth(model: nn.Module, layers: tuple[int, ...]) -> None:
    """Make the model run only `layers` (indices into the full stack), sharing the layer modules."""
    owner, attr = layer_container(model)
    full = backbone_layers(model)
    owner.__dict__[_FULL_LAYERS] = full
    kept = full if tuple(layers) == tuple(range(len(full))) else nn.ModuleList([full[i] for i in layers])
    setattr(owner, attr, kept)


@contextmanager
def full_depth(model: nn.Module) -> Iterator[None]:
    """Temporarily attach every layer (e.g. to read the whole state dict)."""
    owner, attr = layer_container(model)
    current = getattr(owner, attr)
    setattr(owner, attr, backbone_layers(model))
    try:
        yield
    finally:
        setattr(owner, attr, current)


def layer_parts(layer: nn.Module, family: str) -> LayerParts:
    if family == "bert":
        att = layer.attention
        return LayerParts(att.self.query, att.self.key, att.self.value, att.output.dense,
                          (layer.intermediate.dense,), layer.output.dense)
    if family == "llama":
        att, mlp = layer.self_attn, layer.mlp
        return LayerParts(att.q_proj, att.k_proj, att.v_proj, att.o_proj, (mlp.gate_proj, mlp.up_proj), mlp.down_proj)
    raise ValueError(f"unsupported family {family!r}")


def base_linear(module: nn.Module) -> nn.Linear:
    """The frozen nn.Linear of a projection, looking through a peft LoRA layer."""
    inner = getattr(module, "base_layer", module)
    if not isinstance(inner, nn.Linear):
        raise TypeError(f"expected an nn.Linear projection, found {type(inner).__name__}")
    return inner


def lora_pairs(module: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """The (A, B) linears of every LoRA adapter on a projection (none for a plain nn.Linear)."""
    lora_a = getattr(module, "lora_A", None)
    if lora_a is None:
        return []
    return [(lora_a[name], module.lora_B[name]) for name in lora_a]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def head_channels(heads: list[int] | torch.Tensor, head_dim: int) -> torch.Tensor:
    """Channel indices of the given heads, in order (head i owns channels i*d .. i*d+d-1)."""
    heads = torch.as_tensor(heads, dtype=torch.long)
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
