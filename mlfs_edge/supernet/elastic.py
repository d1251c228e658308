"""The elastic super-transformer: one Hugging Face model that computes any prefix sub-network.

`ElasticSupernet(model).set_active(cfg)` makes `model` compute exactly the sub-network `cfg`:

- depth: the layer ModuleList is swapped for one holding only the kept layers (the modules
  themselves are shared; the full list is kept aside and restored by ``set_active(full)``);
- heads: q/k/v keep their first h·d output rows (whole key/value groups for GQA) — in a fused
  projection the first rows of each segment —, the output projection its first h·d input columns.
  Most HF attention forwards infer the head count from the projection width
  (``view(..., -1, head_dim)``); where one reads it from an attribute (GPT-2 ``split_size``, Phi-3's
  config) `arch.set_head_attrs` sets it per layer;
- MLP: the input projections keep their first f output rows, the down projection its first f
  input columns.

Slicing is done by `SlicedLinear`, an ``nn.Linear`` whose forward reads ``weight[:out, :in]`` —
views, never copies. peft LoRA adapters on a projection are sliced with it: A's input columns follow
the base layer's input slice and B's output rows its output slice, so the adapter of a sub-network
is exactly the prefix of the supernet's adapter (and merging then slicing == slicing then merging).
`set_rank(r)` slices the adapters' rank the same way (A's first r rows, B's first r columns).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from mlfs_edge.config import SubnetConfig
from mlfs_edge.families import check_stage
from mlfs_edge.supernet.arch import (
    Rows,
    arch_of,
    backbone_layers,
    base_linear,
    layer_parts,
    lora_pairs,
    segment_rows,
    segment_widths,
    set_depth,
    set_head_attrs,
    take_rows,
    unwrap,
)


class _Sliced:
    """Mixin: the projection computes with its kept output rows (`active_out`: row ranges) and its
    leading `active_in` input columns only."""

    active_in: int | None = None
    active_out: Rows = None

    def _sliced(self, out_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, b = self.weight, self.bias  # type: ignore[attr-defined]
        if self.active_out is not None:
            w = take_rows(w, self.active_out, out_dim)
            b = take_rows(b, self.active_out, 0) if b is not None else None
        if self.active_in is not None:
            w = w.narrow(1 - out_dim, 0, self.active_in)
        return w, b


class SlicedLinear(_Sliced, nn.Linear):
    """nn.Linear computing with its kept rows and leading `active_in` columns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._sliced(0)
        return F.linear(x, w, b)


class SlicedConv1D(_Sliced, Conv1D):
    """GPT-2's Conv1D (weight [in, out]) sliced the same way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._sliced(1)
        out = torch.addmm(b, x.reshape(-1, x.shape[-1]), w) if b is not None else x.reshape(-1, x.shape[-1]) @ w
        return out.view(*x.shape[:-1], w.shape[1])


def _sliceable(lin: nn.Module) -> _Sliced:
    if type(lin) is nn.Linear:
        lin.__class__ = SlicedLinear  # same parameters and state_dict, slicing forward
    elif type(lin) is Conv1D:
        lin.__class__ = SlicedConv1D
    elif not isinstance(lin, _Sliced) and not hasattr(lin, "qweight"):  # SlicedQuantLinear slices itself
        raise TypeError(f"cannot slice a {type(lin).__name__}: the elastic supernet needs nn.Linear projections "
                        "(for a quantized frozen base use supernet.quantized.quantize_frozen_base)")
    return lin  # type: ignore[return-value]


def _set_slice(module: nn.Module, out_rows: Rows = None, in_cols: int | None = None) -> None:
    """Slice a projection and its LoRA adapters: A follows the input slice, B the output slice."""
    base = _sliceable(base_linear(module))
    base.active_out, base.active_in = out_rows, in_cols
    for lora_a, lora_b in lora_pairs(module):
        _sliceable(lora_a).active_in = in_cols
        _sliceable(lora_b).active_out = out_rows


def _slice_head_bias(module: nn.Module, args: tuple) -> tuple | None:
    """MPNet: the relative position bias [B, H, T, T] is computed once for all layers; a layer with
    fewer heads adds only its first heads' columns."""
    h = getattr(module, "num_attention_heads", None)
    if len(args) > 2 and isinstance(args[2], torch.Tensor) and h is not None and args[2].shape[1] != h:
        return (*args[:2], args[2][:, :h], *args[3:])
    return None


class ElasticSupernet:
    """Makes a Hugging Face model (optionally peft-wrapped) compute a chosen sub-network.

    Holds no weights of its own: it only re-points module attributes, so wrapping costs nothing and
    the model can be trained, saved or wrapped by accelerate as usual.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.arch = arch_of(model)
        self.family = check_stage(unwrap(model).config, "supernet")
        self._layers = list(backbone_layers(model))
        self._parts = [layer_parts(layer, self.family) for layer in self._layers]
        if self.family.modules.head_bias:
            for p in self._parts:
                if not getattr(p.attn, "_mlfs_bias_hook", False):
                    p.attn.register_forward_pre_hook(_slice_head_bias)
                    p.attn._mlfs_bias_hook = True
        self.active = SubnetConfig.full(self.arch)

    @property
    def full(self) -> SubnetConfig:
        return SubnetConfig.full(self.arch)

    def set_active(self, cfg: SubnetConfig) -> None:
        cfg.validate(self.arch)
        a = self.arch
        widths = dict(zip(cfg.layers, zip(cfg.heads, cfg.mlp, strict=True), strict=True))
        sizes = segment_widths(a)
        for i, p in enumerate(self._parts):
            heads, mlp = widths.get(i, (a.num_heads, a.intermediate))  # layers left out: reset to full
            full_heads, full_mlp = heads == a.num_heads, mlp == a.intermediate
            keep = segment_widths(a, heads, mlp)
            for module, segments in p.outs:
                full = all(full_heads if kind != "mlp" else full_mlp for kind in segments)
                _set_slice(module, out_rows=None if full else segment_rows(segments, sizes, keep))
            _set_slice(p.o, in_cols=None if full_heads else keep["q"])
            _set_slice(p.mlp_out, in_cols=None if full_mlp else mlp)
            set_head_attrs(p.attn, heads, heads // a.group_size, a.head_dim)
        set_depth(self.model, cfg.layers)
        self.active = cfg

    def set_rank(self, rank: int | None) -> None:
        """Use only the first `rank` rank-one components of every LoRA adapter (None: all of them)."""
        for module in self.model.modules():
            for lora_a, lora_b in lora_pairs(module):
                if rank is not None and not 1 <= rank <= lora_a.weight.shape[0]:
                    raise ValueError(f"LoRA rank {rank} out of range: the adapters have rank {lora_a.weight.shape[0]}")
                _sliceable(lora_a).active_out = None if rank is None else [(0, rank)]
                _sliceable(lora_b).active_in = rank

    @contextmanager
    def activated(self, cfg: SubnetConfig) -> Iterator[None]:
        """Run a block with `cfg` active, restoring the previous sub-network afterwards."""
        previous = self.active
        self.set_active(cfg)
        try:
            yield
        finally:
            self.set_active(previous)
