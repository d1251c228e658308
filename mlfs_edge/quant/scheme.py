"""The one int8 scheme shared by PyTorch, the C++ engine's packed file and the exported models.

Weights: symmetric, per output channel (row of a ``[out, in]`` Linear weight), int8 in [-127, 127],
``scale = max|w_row| / 127`` (a zero row gets scale 1 so it dequantises to exact zeros).
Activations: dynamic, symmetric, per token (row of ``[tokens, in]``), same formula at run time.
The range is [-127, 127] (not -128) so that negation is exact and the engine may use u8 = q + 128
(VNNI) without overflow.

Prefix slicing stays exact: a sub-network's slice ``W[:n, :k]`` reuses the rows' scales, so
quantising the full supernet once serves every sub-network.
"""

from __future__ import annotations

import torch

QMAX = 127


def quantize_per_row(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row of a 2-D tensor: returns (q int8 [rows, cols], scale float32 [rows])."""
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {tuple(x.shape)}")
    x = x.detach().float()
    amax = x.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.clamp(torch.round(x / scale[:, None]), -QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize_per_row(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


def int8_linear_reference(x: torch.Tensor, q_w: torch.Tensor, w_scale: torch.Tensor,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """What an int8 Linear computes under this scheme: the reference the engine is tested against.

    x [..., k] float → per-token int8 → exact int32 dot products with q_w [n, k] → rescale (+ bias).
    """
    shape = x.shape
    q_x, x_scale = quantize_per_row(x.reshape(-1, shape[-1]))
    acc = q_x.to(torch.int64) @ q_w.to(torch.int64).T  # exact integer accumulation
    y = acc.double() * x_scale.double()[:, None] * w_scale.double()[None, :]
    if bias is not None:
        y = y + bias.double()
    return y.float().reshape(*shape[:-1], q_w.shape[0])


# --- 4-bit group-wise (the llama.cpp Q4_1 family; the engine's "q4" packed weights) --------------
Q4_GROUP = 32


def quantize_q4_groups(w: torch.Tensor, group: int = Q4_GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4-bit per (output row, group of `group` consecutive inputs) with a scale and a minimum, as
    llama.cpp's Q4_1: d = (max - min) / 15, q = clamp(round((w - min) / d), 0, 15), w ≈ d * q + min
    (a constant group gets d = 1). d and min are rounded to float16 first (as Q4_1 stores them; the
    engine reads them as fp16, 5 bits per weight instead of 6) and q is computed with the rounded
    values, so d * q + min is exactly what the engine multiplies. Returns (q uint8 [out, in] in
    [0, 15], d float32 [in / group, out], min float32 [in / group, out]), d and min fp16-exact.

    Why a minimum and not Q4_0's symmetric grid: the asymmetric grid has one more level on the side
    the group leans to, and weights that come from a Q4_1 file (the bundled SmolLM2) lie on it, so
    re-quantising them loses nothing (the symmetric grid cost +37 % perplexity there).
    The scales are laid out per group row so that a prefix slice W[:n, :k] (k a multiple of the
    group) reuses them: the packed file stores them as they come.
    """
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    if in_f % group:
        raise ValueError(f"4-bit weights need an input width that is a multiple of {group}, got {in_f}")
    g = w.detach().float().reshape(out_f, in_f // group, group)
    lo, hi = g.amin(dim=2), g.amax(dim=2)
    d = torch.where(hi > lo, (hi - lo) / 15.0, torch.ones_like(lo)).to(torch.float16).float()
    lo = lo.to(torch.float16).float()
    d = torch.where(d > 0, d, torch.ones_like(d))  # a range below fp16's smallest step: q = 0, w = min
    q = torch.clamp(torch.round((g - lo[..., None]) / d[..., None]), 0, 15).to(torch.uint8)
    return q.reshape(out_f, in_f), d.T.contiguous(), lo.T.contiguous()


def dequantize_q4_groups(q: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, group: int = Q4_GROUP) -> torch.Tensor:
    out_f, in_f = q.shape
    g = q.float().reshape(out_f, in_f // group, group)
    return (g * d.T[..., None] + lo.T[..., None]).reshape(out_f, in_f)
