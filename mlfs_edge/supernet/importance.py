"""Importance reordering: after it, every sub-network is a prefix of the supernet.

Heads (for grouped-query attention: whole key/value groups, and the query heads inside each group)
and MLP channels are sorted by importance, most important first, and the permutation is applied
once to the frozen weights. Permuting heads and channels consistently on both sides of a layer
leaves the full network's function unchanged; it only decides which heads/channels a *prefix*
keeps.

Two importance measures:
- ``"weight"``: L2 norm of all weights (and biases) that belong to the head or channel;
- ``"activation"``: mean |activation| on a calibration batch (Minitron, arXiv 2407.14679): for an
  MLP channel the mean absolute input of the down projection, for a head the L2 norm of its block
  of the attention output before the output projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlfs_edge.config import ArchSpec
from mlfs_edge.families import check_stage
from mlfs_edge.supernet.arch import (
    arch_of,
    backbone_layers,
    base_linear,
    family_of,
    head_channels,
    layer_parts,
    lora_pairs,
    segment_rows,
    segment_widths,
    unwrap,
    weight_oi,
)

METHODS = ("weight", "activation")


@dataclass(frozen=True)
class ImportanceOrder:
    """Per layer: the original index of each new head position and of each new MLP channel."""

    method: str
    heads: tuple[tuple[int, ...], ...]
    mlp: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "heads": [list(h) for h in self.heads], "mlp": [list(m) for m in self.mlp]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImportanceOrder:
        try:
            return cls(str(d["method"]), tuple(tuple(map(int, h)) for h in d["heads"]),
                       tuple(tuple(map(int, m)) for m in d["mlp"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an importance order record: {e}") from None

    def is_identity(self) -> bool:
        return all(h == tuple(range(len(h))) for h in self.heads) and all(m == tuple(range(len(m))) for m in self.mlp)


def _sq_rows(w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    s = w.float().pow(2).sum(1)
    return s if b is None else s + b.float().pow(2)


def weight_scores(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer: (query-head scores [H], key/value-group scores [KV], MLP channel scores [F])."""
    arch, fam = arch_of(model), family_of(model)
    d, sizes = arch.head_dim, segment_widths(arch)
    out = []
    for layer in backbone_layers(model):
        p = layer_parts(layer, fam)
        sq = {kind: torch.zeros(n) for kind, n in sizes.items()}
        for module, segments in p.outs:  # a fused projection adds each segment to its own kind
            lin = base_linear(module)
            rows = _sq_rows(weight_oi(lin), lin.bias)
            for kind, (a, b) in zip(segments, segment_rows(segments, sizes), strict=True):
                sq[kind] = sq[kind] + rows[a:b]
        head = (sq["q"] + weight_oi(base_linear(p.o)).float().pow(2).sum(0)).view(arch.num_heads, d).sum(1)
        group = sq["kv"].view(arch.num_kv_heads, d).sum(1)
        chan = sq["mlp"] + weight_oi(base_linear(p.mlp_out)).float().pow(2).sum(0)
        out.append((head.sqrt(), group.sqrt(), chan.sqrt()))
    return out


@torch.no_grad()
def activation_scores(model: nn.Module, batches: list[Mapping[str, torch.Tensor]]
                      ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer, as `weight_scores`, from mean |activation| over the real tokens of `batches`."""
    if not batches:
        raise ValueError("activation importance needs at least one calibration batch")
    arch = arch_of(model)
    layers = backbone_layers(model)
    sums = [[torch.zeros(arch.num_heads * arch.head_dim), torch.zeros(arch.intermediate)] for _ in layers]
    tokens = [0.0]
    mask_holder: list[torch.Tensor | None] = [None]

    def hook(i: int, slot: int):
        def fn(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].float().abs()
            m = mask_holder[0]
            x = x * m[..., None] if m is not None else x
            sums[i][slot] += x.reshape(-1, x.shape[-1]).sum(0)
        return fn

    handles = []
    for i, layer in enumerate(layers):
        p = layer_parts(layer, family_of(model))
        handles.append(base_linear(p.o).register_forward_pre_hook(hook(i, 0)))
        handles.append(base_linear(p.mlp_out).register_forward_pre_hook(hook(i, 1)))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            mask = batch.get("attention_mask")
            mask_holder[0] = mask.float() if mask is not None else None
            tokens[0] += float(mask.sum()) if mask is not None else batch["input_ids"].numel()
            model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for heads_sum, mlp_sum in sums:
        head = (heads_sum / tokens[0]).view(arch.num_heads, arch.head_dim).norm(dim=1)
        group = head.view(arch.num_kv_heads, arch.group_size).sum(1)
        out.append((head, group, mlp_sum / tokens[0]))
    return out


def _head_order(head: torch.Tensor, group: torch.Tensor, arch: ArchSpec) -> list[int]:
    """Query-head order: whole key/value groups by group score (query heads' scores + the group's
    own key/value score), then the query heads inside each group by their own score."""
    g = arch.group_size
    total = group + head.view(arch.num_kv_heads, g).sum(1)
    order: list[int] = []
    for grp in torch.argsort(total, descending=True, stable=True).tolist():
        inner = torch.argsort(head[grp * g:(grp + 1) * g], descending=True, stable=True).tolist()
        order.extend(grp * g + i for i in inner)
    return order


def compute_order(model: nn.Module, method: str = "weight",
                  calibration: list[Mapping[str, torch.Tensor]] | None = None) -> ImportanceOrder:
    if method not in METHODS:
        raise ValueError(f"unknown importance method {method!r}; use one of {', '.join(METHODS)}")
    if method == "activation" and not calibration:
        raise ValueError("importance method 'activation' needs calibration batches (tokenized inputs)")
    arch = arch_of(model)
    check_stage(unwrap(model).config, "reorder")
    scores = weight_scores(model) if method == "weight" else activation_scores(model, calibration or [])
    if family_of(model).modules.head_bias:  # heads share a bias across layers: one head order for all
        shared = tuple(torch.stack([s[i] for s in scores]).sum(0) for i in (0, 1))
        scores = [(*shared, c) for _, _, c in scores]
    heads = tuple(tuple(_head_order(h, g, arch)) for h, g, _ in scores)
    mlp = tuple(tuple(torch.argsort(c, descending=True, stable=True).tolist()) for _, _, c in scores)
    return ImportanceOrder(method, heads, mlp)


def _permute_rows(lin: nn.Module, idx: torch.Tensor) -> None:
    w = weight_oi(lin)
    w.copy_(w[idx])
    if lin.bias is not None:
        lin.bias.copy_(lin.bias[idx])


def _permute_cols(lin: nn.Module, idx: torch.Tensor) -> None:
    w = weight_oi(lin)
    w.copy_(w[:, idx])


@torch.no_grad()
def apply_order(model: nn.Module, order: ImportanceOrder) -> None:
    """Permute the weights of `model` in place (LoRA A/B along with their base layers)."""
    arch, fam = arch_of(model), check_stage(unwrap(model).config, "reorder")
    sizes = segment_widths(arch)
    layers = backbone_layers(model)
    if len(order.heads) != len(layers) or len(order.mlp) != len(layers):
        raise ValueError(f"importance order covers {len(order.heads)} layers, the model has {len(layers)}")
    g = arch.group_size
    for layer, heads, mlp in zip(layers, order.heads, order.mlp, strict=True):
        if sorted(heads) != list(range(arch.num_heads)) or sorted(mlp) != list(range(arch.intermediate)):
            raise ValueError("importance order is not a permutation of this model's heads / MLP channels")
        groups = [heads[i] // g for i in range(0, arch.num_heads, g)]
        if any(heads[i] // g != groups[i // g] for i in range(arch.num_heads)):
            raise ValueError("importance order splits a key/value group of grouped-query attention")
        idx = {"q": head_channels(list(heads), arch.head_dim), "kv": head_channels(groups, arch.head_dim),
               "mlp": torch.as_tensor(mlp, dtype=torch.long)}
        p = layer_parts(layer, fam)
        for module, segments in p.outs:  # each segment of a fused projection is permuted in place
            rows = torch.cat([a + idx[kind] for kind, (a, _) in zip(segments, segment_rows(segments, sizes),
                                                                     strict=True)])
            _permute_rows(base_linear(module), rows)
            for _, lora_b in lora_pairs(module):
                _permute_rows(lora_b, rows)
        for module, cols in ((p.o, idx["q"]), (p.mlp_out, idx["mlp"])):
            _permute_cols(base_linear(module), cols)
            for lora_a, _ in lora_pairs(module):
                _permute_cols(lora_a, cols)
    if fam.modules.head_bias:
        if any(h != order.heads[0] for h in order.heads):
            raise ValueError(f"{fam.name} layers share one relative attention bias: the head order must be "
                             "the same in every layer")
        bias = unwrap(model).base_model.get_submodule(fam.modules.head_bias)
        bias.weight.copy_(bias.weight[:, list(order.heads[0])])


def reorder_by_importance(model: nn.Module, method: str = "weight",
                          calibration: list[Mapping[str, torch.Tensor]] | None = None) -> ImportanceOrder:
    """Compute the importance order of `model`, apply it to the weights in place and return it."""
    order = compute_order(model, method, calibration)
    apply_order(model, order)
    return order
