"""QLoRA-style frozen base: the projections' base weights stored by bitsandbytes (int8 or nf4).

`quantize_frozen_base(model, "nf4")` replaces the base layer under every LoRA projection with a
`SlicedQuantLinear`: the weight lives quantized (bitsandbytes ``Int8Params`` with per-row scales,
or ``Params4bit`` NF4 blocks) and is dequantized for each matmul, as QLoRA computes, then sliced
like `SlicedLinear` — so sub-networks, sliceable LoRA and extraction keep working. Where the
bitsandbytes backend is missing for the device, `quantize_frozen_base` says so and keeps the fp32
base (returns False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlfs_edge.supernet.arch import Rows, take_rows

MODES = ("none", "int8", "nf4")


class SlicedQuantLinear(nn.Module):
    """A frozen linear layer with a bitsandbytes-quantized weight, sliced like `SlicedLinear`."""

    active_in: int | None = None
    active_out: Rows = None

    def __init__(self, linear: nn.Linear, mode: str) -> None:
        import bitsandbytes as bnb

        super().__init__()
        self.mode, self.in_features, self.out_features = mode, linear.in_features, linear.out_features
        w = linear.weight.detach().float().clone()
        if mode == "int8":
            self.qweight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False).to(w.device)
        elif mode == "nf4":
            self.qweight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")._quantize(w.device)
        else:
            raise ValueError(f"unknown quantization {mode!r}; use int8 or nf4")
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantized(self, rows: Rows = None) -> torch.Tensor:
        if self.mode == "int8":  # per-row absmax: slice the rows before dequantizing
            cb, scb = self.qweight.data, self.qweight.SCB
            if rows is not None:
                cb, scb = take_rows(cb, rows), take_rows(scb, rows)
            return cb.float() * (scb.float() / 127.0)[:, None]
        from bitsandbytes.functional import dequantize_4bit

        w = dequantize_4bit(self.qweight.data, self.qweight.quant_state).float()
        return w if rows is None else take_rows(w, rows)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized full weight (for merging and extraction)."""
        return self.dequantized()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized(self.active_out)
        if self.active_in is not None:
            w = w[:, :self.active_in]
        b = self.bias if self.bias is None or self.active_out is None else take_rows(self.bias, self.active_out)
        return F.linear(x, w.to(x.dtype), b)

    def quantized_bytes(self) -> int:
        extra = self.qweight.SCB.numel() * 4 if self.mode == "int8" else 0
        return self.qweight.data.numel() * self.qweight.data.element_size() + extra


def quantize_frozen_base(model: nn.Module, mode: str) -> bool:
    """Quantize the base weight of every LoRA projection of `model` in place; False (with a message)
    when bitsandbytes cannot run on this device, leaving the fp32 base."""
    if mode not in MODES:
        raise ValueError(f"unknown base quantization {mode!r}; use one of {', '.join(MODES)}")
    if mode == "none":
        return False
    targets = [m for m in model.modules() if hasattr(m, "lora_A") and isinstance(getattr(m, "base_layer", None),
                                                                               nn.Linear)]
    if not targets:
        raise ValueError("quantize_frozen_base needs a model with LoRA adapters (add_lora first)")
    try:
        probe = SlicedQuantLinear(targets[0].base_layer, mode)
        probe(torch.zeros(1, probe.in_features, device=probe.qweight.device))
    except Exception as e:  # any backend failure means: keep the full-precision base
        print(f"bitsandbytes {mode} is not available here ({type(e).__name__}: {e}); "
              "falling back to the full-precision frozen base")
        return False
    for module in targets:
        module.base_layer = SlicedQuantLinear(module.base_layer, mode)
    return True
