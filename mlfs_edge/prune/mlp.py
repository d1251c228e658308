"""L2-norm structured MLP pruning: the simple baseline that MLFS sub-networks are judged against.

In every transformer block the MLP's intermediate channels are ranked by the L2 norm of all the
weights that belong to them (the channel's row of the up projection(s) — gate and up together for
Llama — its bias, and its column of the down projection) and the lowest ``ratio`` of them is
removed. The ranking is the supernet's weight-importance order (``mlfs_edge.supernet.importance``)
and the cut is its prefix extraction (``mlfs_edge.supernet.extract``): after sorting channels by
norm, keeping the strongest ``(1 − ratio)·f`` channels is exactly keeping a prefix, so the result is
a standalone HF model with real smaller matrices that round-trips through ``save_pretrained`` /
``from_pretrained``. Heads and layers are untouched.
"""

from __future__ import annotations

import copy

import torch
from transformers import PreTrainedModel

from mlfs_edge.config import SubnetConfig
from mlfs_edge.families import check_stage
from mlfs_edge.supernet.arch import arch_of, unwrap
from mlfs_edge.supernet.extract import extract
from mlfs_edge.supernet.importance import ImportanceOrder, apply_order, compute_order


def kept_channels(intermediate: int, ratio: float) -> int:
    """MLP channels each layer keeps after removing `ratio` of `intermediate` (at least one)."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be a fraction in [0, 1), e.g. 0.3 removes 30 % of the "
                         f"MLP channels; got {ratio!r}")
    return max(1, round((1.0 - ratio) * intermediate))


def mlp_channel_order(model: torch.nn.Module) -> list[list[int]]:
    """Per layer: the original MLP channel indices, highest L2 norm first."""
    return [list(m) for m in compute_order(model, "weight").mlp]


@torch.no_grad()
def prune_mlp(model: torch.nn.Module, ratio: float) -> PreTrainedModel:
    """A new, smaller model: `model` with the lowest-L2-norm `ratio` of MLP channels removed per layer.

    `model` itself is left unchanged. BERT-family (also with a classification head) and Llama-family
    models are supported.
    """
    check_stage(unwrap(model).config, "prune")
    arch = arch_of(model)
    keep = kept_channels(arch.intermediate, ratio)
    work = copy.deepcopy(model)
    order = compute_order(work, "weight")
    # Only the MLP channels move; heads keep their places (all of them are kept anyway).
    identity_heads = tuple(tuple(range(arch.num_heads)) for _ in order.heads)
    apply_order(work, ImportanceOrder(order.method, identity_heads, order.mlp))
    return extract(work, SubnetConfig.uniform(arch, mlp=keep))
