"""PyTorch yardstick for the engine: the exact output of a prefix-sliced sub-network, in eager torch.

No extraction code is needed: in a copy of the HF model, the O-projection input columns of dropped
heads and the MLP channels beyond the first f (intermediate rows + bias, output-projection columns)
are zeroed — a dropped head or channel then contributes exactly nothing — and only the kept layers
are run. This handles per-layer (non-uniform) widths, which HF configs cannot express.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from mlfs_edge.config import ArchSpec, SubnetConfig


def _encoder(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, model.base_model_prefix) if hasattr(model, "classifier") else model


@torch.no_grad()
def sliced_reference(model: torch.nn.Module, cfg: SubnetConfig) -> torch.nn.Module:
    """A copy of `model` (BertModel or BertForSequenceClassification) that computes sub-network `cfg`."""
    ref = copy.deepcopy(model).eval()
    bert = _encoder(ref)
    arch = ArchSpec.from_hf_config(bert.config)
    cfg.validate(arch)
    for index, heads, mlp in zip(cfg.layers, cfg.heads, cfg.mlp, strict=True):
        layer = bert.encoder.layer[index]
        layer.attention.output.dense.weight[:, heads * arch.head_dim:] = 0
        layer.intermediate.dense.weight[mlp:] = 0
        layer.intermediate.dense.bias[mlp:] = 0
        layer.output.dense.weight[:, mlp:] = 0
    bert.encoder.layer = torch.nn.ModuleList([bert.encoder.layer[i] for i in cfg.layers])
    return ref


@torch.no_grad()
def reference_output(model: torch.nn.Module, input_ids: np.ndarray, attention_mask: np.ndarray,
                     pooling: str = "mean") -> np.ndarray:
    """What the engine returns for `model`: classifier logits, else the pooled embedding
    (masked mean of the last hidden state, or the pooler output for pooling='cls')."""
    ids = torch.from_numpy(np.asarray(input_ids, np.int64))
    mask = torch.from_numpy(np.asarray(attention_mask, np.int64))
    out = model(input_ids=ids, attention_mask=mask)
    if hasattr(model, "classifier"):
        return out.logits.float().numpy()
    if pooling == "cls":
        return out.pooler_output.float().numpy()
    hidden = out.last_hidden_state.float()
    m = mask[..., None].float()
    return ((hidden * m).sum(1) / m.sum(1)).numpy()
