"""bitsandbytes variants: LLM.int8 (``Linear8bitLt``) and NF4 (``Linear4bit``) in place of nn.Linear.

bitsandbytes quantises a parameter when it is moved to a device; on CPU that happens on ``.to("cpu")``
of a layer whose weights are still float, which is what ``_quantized_on_cpu`` does.
"""

from __future__ import annotations

import torch
from torch import nn

from mlfs_edge.quant.config import BnbInt8Config, BnbNf4Config


def _bnb():
    try:
        import bitsandbytes
    except ImportError as e:  # the optional extra
        raise ValueError("bitsandbytes is not installed: pip install 'mlfs-edge[bnb]' (or make setup)") from e
    return bitsandbytes


def int8_linear(linear: nn.Linear, cfg: BnbInt8Config) -> nn.Module:
    bnb = _bnb()
    layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                has_fp16_weights=False, threshold=cfg.threshold, device="meta")
    layer.weight = bnb.nn.Int8Params(linear.weight.detach().float().clone(), has_fp16_weights=False,
                                     requires_grad=False)
    return _quantized_on_cpu(layer, linear)


def nf4_linear(linear: nn.Linear, cfg: BnbNf4Config) -> nn.Module:
    bnb = _bnb()
    compute_dtype = getattr(torch, cfg.compute_dtype)
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=cfg.double_quant,
                              quant_type="nf4", device="meta")
    layer.weight = bnb.nn.Params4bit(linear.weight.detach().float().clone(), requires_grad=False,
                                     compress_statistics=cfg.double_quant, quant_type="nf4", module=layer)
    return _quantized_on_cpu(layer, linear)


def _quantized_on_cpu(layer: nn.Module, linear: nn.Linear) -> nn.Module:
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
    layer = layer.to("cpu")
    if layer.weight.dtype not in (torch.int8, torch.uint8):
        raise RuntimeError(f"bitsandbytes did not quantise the weight (dtype {layer.weight.dtype})")
    return layer
