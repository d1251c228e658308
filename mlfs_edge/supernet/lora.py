"""Sliceable LoRA: peft adapters on every attention and MLP projection, shared by all sub-networks.

The adapters are ordinary peft LoRA layers; `ElasticSupernet` slices them with their base layers
(A's input columns with the base layer's input slice, B's output rows with its output slice), so a
sub-network trains and uses exactly the prefix of each adapter. Only A and B are trainable.

Elastic rank (optional, `LoraSettings.elastic_ranks`): the rank is one more prefix dimension. A
sub-network at rank r uses the first r rows of A and the first r columns of B (the scale stays
α/rank, so a rank-r adapter is the rank-r partial sum of the full one), training samples ranks with
the widths, and afterwards any trained rank can be chosen: `reduce_rank` removes the tail
s·B[:, r:]·A[r:] from weights that hold the full-rank merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mlfs_edge.families import check_stage
from mlfs_edge.supernet.arch import count_params, family_of, unwrap


def lora_targets(model: nn.Module) -> list[str]:
    """peft target_modules: every attention and MLP projection of the family's module map (fused ones
    whole: their adapters are sliced per segment with the base rows)."""
    return list(family_of(model).modules.projections())


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8  # the MLFS paper's rank for all GLUE results
    alpha: float = 16.0
    dropout: float = 0.0
    elastic_ranks: tuple[int, ...] = ()  # e.g. (2, 4): ranks sampled besides `rank`; () = fixed rank

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be ≥ 1, got {self.rank}")
        ranks = tuple(sorted(set(self.elastic_ranks)))
        if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= self.rank for r in ranks):
            raise ValueError(f"lora.elastic_ranks must be whole numbers in 1..rank ({self.rank}), "
                             f"got {list(self.elastic_ranks)}")
        object.__setattr__(self, "elastic_ranks", ranks)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must lie in [0, 1), got {self.dropout}")

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks training samples from, smallest first (just `rank` when the rank is fixed)."""
        return tuple(sorted({*self.elastic_ranks, self.rank}))


def add_lora(model: nn.Module, settings: LoraSettings = LoraSettings(), adapter: str = "default") -> nn.Module:
    """Wrap `model` in a peft model with LoRA on all attention and MLP projections; base frozen.

    Returns the peft model. B starts at zero (peft's default), so the function is unchanged.
    """
    from peft import LoraConfig, get_peft_model

    check_stage(unwrap(model).config, "lora")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=lora_targets(model), bias="none")
    return get_peft_model(model, config, adapter_name=adapter)


def trainable_report(model: nn.Module) -> dict[str, float]:
    trainable, total = count_params(model, trainable_only=True), count_params(model)
    return {"trainable": trainable, "total": total, "fraction": trainable / total}


ADAPTERS_FILE = "lora_adapters.safetensors"  # in a supernet folder: its last adapters, unmerged (elastic rank)

# A LoRA adapter of one Linear: A [r, in], B [out, r], scale s; the layer computes W x + s·B(A x).
LoraAdapter = tuple[torch.Tensor, torch.Tensor, float]


def adapters_of(peft_model: nn.Module) -> dict[str, LoraAdapter]:
    """The (A, B, scale) of every LoRA-adapted projection of a peft model, keyed by the projection's
    path in the plain model (peft's ``base_model.model.`` wrapper prefix removed)."""
    out: dict[str, LoraAdapter] = {}
    for name, module in peft_model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, nn.ModuleDict) or not lora_a:
            continue
        if len(lora_a) != 1:
            raise ValueError(f"{name}: {len(lora_a)} LoRA adapters; expected one (merge or delete the others)")
        key = next(iter(lora_a))
        out[name.removeprefix("base_model.model.")] = (
            module.lora_A[key].weight.detach(), module.lora_B[key].weight.detach(), float(module.scaling[key]))
    return out


def save_adapters(adapters: dict[str, LoraAdapter], path: str | Path) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b, scale) in adapters.items():
        tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"] = a.contiguous(), b.contiguous()
        tensors[f"{name}.scale"] = torch.tensor([scale])
    save_file(tensors, str(path))


def load_adapters(path: str | Path) -> dict[str, LoraAdapter]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: cannot read the LoRA adapters ({e}); re-run `mlfs-edge train`") from None
    names = {k.rsplit(".", 1)[0] for k in tensors}
    try:
        return {n: (tensors[f"{n}.lora_A"], tensors[f"{n}.lora_B"], float(tensors[f"{n}.scale"])) for n in names}
    except KeyError as e:
        raise ValueError(f"{path}: incomplete adapter file (missing {e}); re-run `mlfs-edge train`") from None


def slice_rank(adapters: Mapping[str, LoraAdapter], rank: int) -> dict[str, LoraAdapter]:
    """The first `rank` components of every adapter (A[:rank], B[:, :rank], same scale)."""
    for name, (a, _, _) in adapters.items():
        if not 1 <= rank <= a.shape[0]:
            raise ValueError(f"rank {rank} out of range: the adapters have rank {a.shape[0]} ({name})")
    return {name: (a[:rank], b[:, :rank], s) for name, (a, b, s) in adapters.items()}


@torch.no_grad()
def subtract_adapters(model: nn.Module, adapters: Mapping[str, LoraAdapter]) -> None:
    """W -= s·B·A for every adapter, in place: un-merges adapters from the plain HF `model`."""
    modules = dict(model.named_modules())
    for name, (a, b, scale) in adapters.items():
        if name not in modules:
            raise ValueError(f"adapter for {name!r}, which the model does not have: adapters and supernet differ")
        weight = modules[name].weight
        weight -= scale * (b @ a).to(weight.dtype)


def reduce_rank(model: nn.Module, adapters: Mapping[str, LoraAdapter], rank: int) -> None:
    """Turn weights holding W + s·B·A (the full-rank merge) into W + s·B[:, :rank]·A[:rank], in place.

    `model` is the plain HF model the adapters were merged into (same module paths)."""
    slice_rank(adapters, rank)  # checks the rank
    subtract_adapters(model, {name: (a[rank:], b[:, rank:], s) for name, (a, b, s) in adapters.items()})
