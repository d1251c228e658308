"""Decoder engine vs PyTorch: the measurements the parity test and benchmarks/decoder_parity.py
share (an evaluation module: it reads the engine, the engine never reads it).

`logit_agreement` compares next-token logits position by position; `engine_perplexity` is
`mlfs_edge.lm.perplexity`'s recipe (non-overlapping blocks, every token but a block's first
predicted) computed from the engine's logits, so the two numbers are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mlfs_edge.config import SubnetConfig
from mlfs_edge.lm import PerplexityResult, token_blocks
from mlfs_edge.runtime.engine import Engine


@dataclass(frozen=True)
class Agreement:
    positions: int
    top1_agreement: float  # share of positions whose argmax token is the same
    max_rel_diff: float  # max |engine - torch| / max |torch| over all positions and the vocabulary


def torch_logits(model: torch.nn.Module, ids: Sequence[int], subnet: SubnetConfig | None = None) -> np.ndarray:
    """PyTorch fp32 logits [n, vocab] of `subnet` (the elastic wrapper slices the same prefixes)."""
    from mlfs_edge.supernet.elastic import ElasticSupernet

    sup = ElasticSupernet(model)
    with torch.no_grad(), sup.activated(subnet or sup.full):
        return model(torch.tensor([list(ids)])).logits[0].float().numpy()


def logit_agreement(reference: np.ndarray, got: np.ndarray) -> Agreement:
    top1 = float((reference.argmax(-1) == got.argmax(-1)).mean())
    rel = float(np.abs(got - reference).max() / np.abs(reference).max())
    return Agreement(int(reference.shape[0]), top1, rel)


def _nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    logz = (m[:, 0] + np.log(np.exp(x - m).sum(-1)))
    return float((logz - x[np.arange(len(targets)), targets]).sum())


def engine_perplexity(engine: Engine, ids: Sequence[int], block_size: int = 256, subnet: SubnetConfig | None = None,
                      threads: int = 1) -> PerplexityResult:
    nll, count = 0.0, 0
    for block in token_blocks(list(ids), block_size):
        arr = np.asarray(block, np.int64)
        logits = engine.logits(arr, subnet=subnet, threads=threads)
        nll += _nll_sum(logits[:-1], arr[1:])
        count += len(block) - 1
    return PerplexityResult(math.exp(nll / count), nll / count, count)
