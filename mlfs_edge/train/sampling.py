"""What step s of a stage draws: its sub-networks (the sandwich rule), their LoRA ranks, its batch of
examples and its learning rate. Each is a function of (seed, stage, step) only, which is what keeps
`--resume` bit-for-bit."""

from __future__ import annotations

import functools
import math
import random
from typing import TYPE_CHECKING

import torch

from mlfs_edge.config import SearchSpace, SubnetConfig

if TYPE_CHECKING:
    from mlfs_edge.train.mlfs_config import StageSettings


def sandwich(space: SearchSpace, rng: random.Random, vary_depth: bool, k: int,
             favoured: tuple[SubnetConfig, ...] = (), share: float = 0.0,
             by_params: bool = False) -> list[SubnetConfig]:
    """Largest, smallest, then k random sub-networks (the sandwich rule). With `favoured` (the
    sub-networks meant as speculative drafts, or the palette) each random slot is one of them with
    probability `share`, so they get more of the distillation toward the largest; at full depth only
    in a widths-only stage. The other slots are `space.sample` (each dimension uniform over its
    values) or, `by_params`, `sample_by_params`. With neither option `rng` is used exactly as before
    (old runs resume bit for bit)."""
    n_layers = space.arch.num_layers
    eligible = [d for d in favoured if vary_depth or len(d.layers) == n_layers]

    def slot() -> SubnetConfig:
        if eligible and share > 0 and rng.random() < share:
            return rng.choice(eligible)
        return sample_by_params(space, rng, vary_depth) if by_params else space.sample(rng, vary_depth)

    return [space.largest(), space.smallest(vary_depth), *(slot() for _ in range(k))]


def sample_by_params(space: SearchSpace, rng: random.Random, vary_depth: bool) -> SubnetConfig:
    """A uniform sub-network drawn evenly in layer parameters: a count uniform between the smallest
    and the largest candidate, then the candidate nearest to it (one of them at random when several
    shapes have that count). Drawing each dimension uniformly instead piles up in the middle of the
    count and under-samples the sizes few combinations reach."""
    candidates = _by_params(space, vary_depth)
    target = rng.uniform(candidates[0][0], candidates[-1][0])
    nearest = min(abs(n - target) for n, _ in candidates)
    return rng.choice([c for n, c in candidates if abs(n - target) == nearest])


@functools.lru_cache(maxsize=8)
def _by_params(space: SearchSpace, vary_depth: bool) -> list[tuple[int, SubnetConfig]]:
    full_depth = space.depths[-1]
    cfgs = [c for c in space.uniform_configs() if vary_depth or c.depth == full_depth]
    return sorted(((c.layer_params(space.arch), c) for c in cfgs), key=lambda nc: nc[0])


def sandwich_ranks(ranks: tuple[int, ...], rng: random.Random, k: int) -> list[int] | None:
    """Elastic LoRA rank, in the sandwich's order: the largest rank for the largest sub-network, the
    smallest for the smallest, random ones for the k others; None when the rank is fixed (then `rng`
    is not touched, so a fixed-rank run draws exactly the sub-networks it always did)."""
    if len(ranks) == 1:
        return None
    return [ranks[-1], ranks[0], *(rng.choice(ranks) for _ in range(k))]


def batch_indices(step: int, batch_size: int, lengths: list[int], seed: int,
                  group_by_length: bool = True) -> list[int]:
    """The examples of global step `step`: the step-th batch of a seeded sequence of epochs.

    With `group_by_length` the batches are those of the teacher fine-tune (`finetune.epoch_batches`:
    similar lengths together, batch order random), so a step pads less; a function of (seed, step)
    only, which keeps `--resume` bit-for-bit."""
    per_epoch = math.ceil(len(lengths) / batch_size)
    epoch, i = divmod(step, per_epoch)
    return _epoch_batches(tuple(lengths), batch_size, seed * 1_000_003 + epoch, group_by_length)[i]


@functools.lru_cache(maxsize=2)
def _epoch_batches(lengths: tuple[int, ...], batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    from mlfs_edge.train.finetune import epoch_batches

    return epoch_batches(list(lengths), batch_size, torch.Generator().manual_seed(seed), group_by_length)


def lr_at(step: int, stage: StageSettings) -> float:
    warmup = int(stage.steps * stage.warmup_ratio)
    if step < warmup:
        return stage.lr * (step + 1) / warmup
    return stage.lr * max(0.0, (stage.steps - step) / max(1, stage.steps - warmup))
