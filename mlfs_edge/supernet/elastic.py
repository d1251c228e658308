"""The elastic super-transformer: one Hugging Face model that computes any prefix sub-network.

`ElasticSupernet(model).set_active(cfg)` makes `model` compute exactly the sub-network `cfg`:

- depth: the layer ModuleList is swapped for one holding only the kept layers (the modules
  themselves are shared; the full list is kept aside and restored by ``set_active(full)``);
- heads: q/k/v keep their first h·d output rows (whole key/value groups for GQA), the output
  projection its first h·d input columns. HF BERT and Llama attention infer the head count from
  the projection width (``view(..., -1, head_dim)``), so their forward needs no patch;
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

from mlfs_edge.config import SubnetConfig
from mlfs_edge.supernet.arch import arch_of, backbone_layers, base_linear, layer_parts, lora_pairs, set_depth


class SlicedLinear(nn.Linear):
    """nn.Linear computing with the leading `active_out` × `active_in` block of its weight."""

    active_in: int | None = None
    active_out: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if self.active_out is not None:
            w = w[:self.active_out]
            b = b[:self.active_out] if b is not None else None
        if self.active_in is not None:
            w = w[:, :self.active_in]
        return F.linear(x, w, b)


def _sliceable(lin: nn.Linear) -> SlicedLinear:
    if type(lin) is nn.Linear:
        lin.__class__ = SlicedLinear  # same parameters and state_dict, slicing forward
    elif not isinstance(lin, SlicedLinear) and not hasattr(lin, "qweight"):  # SlicedQuantLinear slices itself
        raise TypeError(f"cannot slice a {type(lin).__name__}: the elastic supernet needs nn.Linear projections "
                        "(for a quantized frozen base use supernet.quantized.quantize_frozen_base)")
    return lin  # type: ignore[return-value]


def _set_slice(module: nn.Module, out_rows: int | None = None, in_cols: int | None = None) -> None:
    """Slice a projection and its LoRA adapters: A follows the input slice, B the output slice."""
    base = _sliceable(base_linear(module))
    base.active_out, base.active_in = out_rows, in_cols
    for lora_a, lora_b in lora_pairs(module):
        _sliceable(lora_a).active_in = in_cols
        _sliceable(lora_b).active_out = out_rows


class ElasticSupernet:
    """Makes a Hugging Face model (optionally peft-wrapped) compute a chosen sub-network.

    Holds no weights of its own: it only re-points module attributes, so wrapping costs nothing and
    the model can be trained, saved or wrapped by accelerate as usual.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.arch = arch_of(model)
        self._layers = list(backbone_layers(model))
        self.active = SubnetConfig.full(self.arch)

    @property
    def full(self) -> SubnetConfig:
        return SubnetConfig.full(self.arch)

    def set_active(self, cfg: SubnetConfig) -> None:
        cfg.validate(self.arch)
        a = self.arch
        widths = dict(zip(cfg.layers, zip(cfg.heads, cfg.mlp, strict=True), strict=True))
        for i, layer in enumerate(self._layers):
            heads, mlp = widths.get(i, (a.num_heads, a.intermediate))  # layers left out: reset to full
            full_heads, full_mlp = heads == a.num_heads, mlp == a.intermediate
            q_out = None if full_heads else heads * a.head_dim
            kv_out = None if full_heads else heads // a.group_size * a.head_dim
            f = None if full_mlp else mlp
            p = layer_parts(layer, a.family)
            _set_slice(p.q, out_rows=q_out)
            _set_slice(p.k, out_rows=kv_out)
            _set_slice(p.v, out_rows=kv_out)
            _set_slice(p.o, in_cols=q_out)
            for m in p.mlp_in:
                _set_slice(m, out_rows=f)
            _set_slice(p.mlp_out, in_cols=f)
        set_depth(self.model, cfg.layers)
        self.active = cfg

    def set_rank(self, rank: int | None) -> None:
        """Use only the first `rank` rank-one components of every LoRA adapter (None: all of them)."""
        for module in self.model.modules():
            for lora_a, lora_b in lora_pairs(module):
                if rank is not None and not 1 <= rank <= lora_a.weight.shape[0]:
                    raise ValueError(f"LoRA rank {rank} out of range: the adapters have rank {lora_a.weight.shape[0]}")
                _sliceable(lora_a).active_out = rank
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
