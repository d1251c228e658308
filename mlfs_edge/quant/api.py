"""``quantize(model, config)``: the one verb; the config says what (see ``mlfs_edge.quant.config``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from mlfs_edge.families import check_stage
from mlfs_edge.quant import bnb
from mlfs_edge.quant.config import BnbInt8Config, BnbNf4Config, Fp16Config, Int8Config, QuantConfig
from mlfs_edge.quant.int8 import Int8Embedding, Int8Linear


def quantize(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Quantize `model` in place as `config` says and return it (in eval mode).

    int8 and the bitsandbytes variants replace every ``nn.Linear`` (and for int8 the embedding
    tables) except those named in ``config.skip``; fp16 casts the whole model to half.
    """
    check_stage(getattr(model, "config", None), "quantize", known_only=True)
    model.eval()
    if isinstance(config, Fp16Config):
        return model.half()
    if isinstance(config, Int8Config):
        if config.linears:
            _replace(model, nn.Linear, Int8Linear.from_float, config.skip)
        if config.embeddings:
            _replace(model, nn.Embedding, Int8Embedding.from_float, config.skip)
    elif isinstance(config, BnbInt8Config):
        _replace(model, nn.Linear, lambda m: bnb.int8_linear(m, config), config.skip)
    elif isinstance(config, BnbNf4Config):
        _replace(model, nn.Linear, lambda m: bnb.nf4_linear(m, config), config.skip)
    else:
        raise TypeError(f"quantize() takes an Int8Config, Fp16Config, BnbInt8Config or BnbNf4Config, "
                        f"got {type(config).__name__}")
    return model


def _as_linear(conv: Conv1D) -> nn.Linear:
    """GPT-2's Conv1D (weight [in, out]) as the nn.Linear computing the same (weight [out, in])."""
    nx, nf = conv.weight.shape
    lin = nn.Linear(nx, nf, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.T)
        lin.bias.copy_(conv.bias)
    return lin


def _replace(model: nn.Module, kind: type[nn.Module], make: Callable[[nn.Module], nn.Module],
             skip: tuple[str, ...]) -> None:
    # A Linear quantization covers GPT-2's Conv1D projections too, through their Linear twin.
    kinds = (kind, Conv1D) if kind is nn.Linear else (kind,)
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) in kinds and not any(name == s or name.startswith(s + ".") for s in skip)]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        linear = _as_linear(module) if type(module) is Conv1D else module
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, make(linear))
    _retie(model)


def _retie(model: nn.Module) -> None:
    """Drop HF weight tying left pointing at a replaced module (an int8 table has no `.weight`)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "tie_word_embeddings"):
        config.tie_word_embeddings = False


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's state (parameters, buffers and quantisation state such as scales),
    counting storage shared by tied weights once: what a save of the weights costs on disk. PyTorch's
    own quantized linears keep (int8 weight, bias) in a tuple; those count too, with their scales."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def count(value: object) -> None:
        nonlocal total
        if isinstance(value, tuple | list):
            for v in value:
                count(v)
            return
        if not isinstance(value, torch.Tensor):
            return
        if value.is_quantized:
            total += value.numel() * value.element_size()
            if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                total += value.q_per_channel_scales().numel() * 8 + value.q_per_channel_zero_points().numel() * 8
            return
        key = (value.untyped_storage().data_ptr(), value.storage_offset())
        if key in seen and value.untyped_storage().data_ptr() != 0:
            return
        seen.add(key)
        total += value.numel() * value.element_size()

    for value in model.state_dict().values():
        count(value)
    return total
