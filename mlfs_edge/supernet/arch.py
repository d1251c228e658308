"""Where the sliceable pieces of a Hugging Face transformer live, per family.

Every other supernet module (importance reordering, the elastic wrapper, extraction) goes through
`backbone_layers` and `layer_parts`, which read the family's module map from `mlfs_edge.families`:
a new family is one entry there, not a branch here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from mlfs_edge import families
from mlfs_edge.config import ArchSpec
from mlfs_edge.families import Family


@dataclass(frozen=True)
class LayerParts:
    """The projections of one transformer layer that sub-networks slice.

    `outs`: the projections sliced on their output rows, each with the segments stacked on that axis
    in order — "q" (heads·d rows), "kv" (kv_heads·d rows), "mlp" (intermediate rows); a plain
    projection has one segment, a fused one several (Phi-3 qkv_proj: q, kv, kv; gate_up_proj: mlp,
    mlp). `o` (the attention output, "q" columns) and `mlp_out` ("mlp" columns) are sliced on their
    inputs. `attn` is the module whose forward splits heads (its head attributes follow the slice).
    The projections may be nn.Linear, GPT-2 Conv1D or peft LoRA layers over them (`base_linear`).
    """

    outs: tuple[tuple[nn.Module, tuple[str, ...]], ...]
    o: nn.Module
    mlp_out: nn.Module
    attn: nn.Module


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def arch_of(model: nn.Module) -> ArchSpec:
    return ArchSpec.from_hf_config(unwrap(model).config)


def family_of(model: nn.Module) -> Family:
    return families.family_of(unwrap(model).config)


def layer_container(model: nn.Module) -> tuple[nn.Module, str]:
    """(module, attribute) holding the ModuleList of transformer layers."""
    hf = unwrap(model)
    owner_path, _, attr = family_of(hf).modules.layers.rpartition(".")
    return (hf.base_model.get_submodule(owner_path) if owner_path else hf.base_model), attr


_FULL_LAYERS = "_mlfs_full_layers"  # the original ModuleList, kept aside while a shallower sub-network runs
_FULL_TYPES = "_mlfs_full_layer_types"  # the config's per-layer attention kinds of the full model


def backbone_layers(model: nn.Module) -> nn.ModuleList:
    """All transformer layers of the model, also while a shallower sub-network is active."""
    owner, attr = layer_container(model)
    full = owner.__dict__.get(_FULL_LAYERS)
    return full if full is not None else getattr(owner, attr)


def _attach(model: nn.Module, layers: tuple[int, ...]) -> None:
    owner, attr = layer_container(model)
    full = backbone_layers(model)
    owner.__dict__[_FULL_LAYERS] = full
    kept = full if tuple(layers) == tuple(range(len(full))) else nn.ModuleList([full[i] for i in layers])
    setattr(owner, attr, kept)
    # Gemma 2 (and Qwen2 with sliding layers) pick each layer's mask from config.layer_types by its
    # position in the running list, and its cache by layer_idx: with mixed kinds both follow the kept
    # layers (kind of kept layer i at position i, layer_idx = position); uniform kinds need nothing.
    config = unwrap(model).config
    types = owner.__dict__.setdefault(_FULL_TYPES, list(getattr(config, "layer_types", None) or []))
    if len(set(types)) > 1:
        config.layer_types = [types[i] for i in layers]
        for pos, i in enumerate(layers):
            for module in full[i].modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = pos


def set_depth(model: nn.Module, layers: tuple[int, ...]) -> None:
    """Make the model run only `layers` (indices into the full stack), sharing the layer modules."""
    _attach(model, tuple(layers))
    layer_container(model)[0].__dict__["_mlfs_depth"] = tuple(layers)


@contextmanager
def full_depth(model: nn.Module) -> Iterator[None]:
    """Temporarily attach every layer (e.g. to read the whole state dict or the full config)."""
    owner, _ = layer_container(model)
    current = owner.__dict__.get("_mlfs_depth")
    _attach(model, tuple(range(len(backbone_layers(model)))))
    try:
        yield
    finally:
        if current is not None:
            _attach(model, current)


def layer_parts(layer: nn.Module, family: Family) -> LayerParts:
    m = family.modules
    get = layer.get_submodule
    attn_path = (m.qkv or m.q).rpartition(".")[0]
    if m.qkv:
        outs: list[tuple[nn.Module, tuple[str, ...]]] = [(get(m.qkv), ("q", "kv", "kv"))]
    else:
        outs = [(get(m.q), ("q",)), (get(m.k), ("kv",)), (get(m.v), ("kv",))]
    outs += [(get(p), ("mlp",)) for p in m.mlp_in]
    if m.gate_up:
        outs.append((get(m.gate_up), ("mlp", "mlp")))
    return LayerParts(tuple(outs), get(m.o), get(m.mlp_out), get(attn_path) if attn_path else layer)


def base_linear(module: nn.Module) -> nn.Module:
    """The frozen nn.Linear (or GPT-2 Conv1D) of a projection, looking through a peft LoRA layer (or
    the bitsandbytes-quantized `SlicedQuantLinear` standing in for one)."""
    inner = getattr(module, "base_layer", module)
    if not isinstance(inner, nn.Linear | Conv1D) and not hasattr(inner, "qweight"):
        raise TypeError(f"expected an nn.Linear projection, found {type(inner).__name__}")
    return inner


def weight_oi(lin: nn.Module) -> torch.Tensor:
    """The weight as [out, in]: a view (GPT-2 Conv1D stores [in, out]), so writes go through."""
    return lin.weight.T if isinstance(lin, Conv1D) else lin.weight


def segment_widths(arch: ArchSpec, heads: int | None = None, mlp: int | None = None) -> dict[str, int]:
    """Rows of each segment kind for a sub-network with `heads` query heads and `mlp` MLP channels
    (None: the full model's): "q" heads·d, "kv" the heads' key/value groups·d, "mlp" channels."""
    h = arch.num_heads if heads is None else heads
    return {"q": h * arch.head_dim, "kv": h // arch.group_size * arch.head_dim,
            "mlp": arch.intermediate if mlp is None else mlp}


def segment_rows(segments: tuple[str, ...], sizes: dict[str, int], keep: dict[str, int] | None = None
                 ) -> list[tuple[int, int]]:
    """(start, stop) output rows of each segment of a fused projection: all rows (`keep` None) or
    the first keep[kind] rows of each segment (a prefix in every segment)."""
    out, start = [], 0
    for kind in segments:
        out.append((start, start + (sizes[kind] if keep is None else keep[kind])))
        start += sizes[kind]
    return out


Rows = list[tuple[int, int]] | None  # the (start, stop) output rows kept: one range, or one per fused segment


def take_rows(t: torch.Tensor, rows: list[tuple[int, int]], dim: int = 0) -> torch.Tensor:
    """The kept rows of `t` along `dim`: a view for one leading range, a concatenation for segments."""
    if len(rows) == 1 and rows[0][0] == 0:
        return t.narrow(dim, 0, rows[0][1])
    return torch.cat([t.narrow(dim, a, b - a) for a, b in rows], dim)


def set_head_attrs(attn: nn.Module, heads: int, kv_heads: int, head_dim: int) -> None:
    """Tell an attention module's Hugging Face forward how many heads it now has, where it reads a
    count from module attributes instead of the projection width (GPT-2 split_size, MPNet/BERT
    all_head_size, Phi-3 config.num_attention_heads)."""
    values = {"split_size": heads * head_dim, "all_head_size": heads * head_dim, "num_heads": heads,
              "num_attention_heads": heads, "n_heads": heads, "num_key_value_heads": kv_heads}
    for name, value in values.items():
        if isinstance(getattr(attn, name, None), int):
            setattr(attn, name, value)
    config = getattr(attn, "config", None)
    if config is not None and hasattr(config, "num_key_value_heads"):
        # Phi-3 reads its q/k/v split points from the (shared) config: give the layer its own copy.
        if not getattr(attn, "_mlfs_own_config", False):
            attn.config = copy.copy(config)
            attn._mlfs_own_config = True
        attn.config.num_attention_heads, attn.config.num_key_value_heads = heads, kv_heads


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
