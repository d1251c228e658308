"""Modules that run the shared int8 scheme (``mlfs_edge.quant.scheme``) in PyTorch."""

from __future__ import annotations

import torch
from torch import nn

from mlfs_edge.quant.scheme import quantize_per_row


class Int8Linear(nn.Module):
    """A Linear layer with int8 per-output-channel weights and dynamic per-token int8 activations.

    The forward equals ``scheme.int8_linear_reference`` exactly: the int8 products are accumulated
    in int32 by ``torch._int_mm`` (exact: |acc| ≤ 127² · in_features < 2³¹ for in_features < 133k),
    then rescaled in float64 like the reference.
    """

    def __init__(self, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if qweight.dtype != torch.int8 or qweight.ndim != 2:
            raise ValueError(f"qweight must be a 2-D int8 tensor, got {qweight.dtype} {tuple(qweight.shape)}")
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("weight_scale", weight_scale.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        q, scale = quantize_per_row(linear.weight)
        return cls(q, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        q_x, x_scale = quantize_per_row(x.reshape(-1, self.in_features))
        acc = _int8_matmul(q_x, self.qweight)
        y = acc.double() * x_scale.double()[:, None] * self.weight_scale.double()[None, :]
        if self.bias is not None:
            y = y + self.bias.double()
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _int8_matmul(q_x: torch.Tensor, q_w: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``q_x @ q_w.T``; torch._int_mm needs more than 16 rows, so tiny inputs are padded."""
    rows = q_x.shape[0]
    if rows <= 16:
        q_x = torch.cat([q_x, q_x.new_zeros(17 - rows, q_x.shape[1])])
    return torch._int_mm(q_x, q_w.T)[:rows]


class Int8Embedding(nn.Module):
    """Weight-only int8 embedding table: one symmetric scale per row (token), dequantised on lookup.

    Only the looked-up rows are converted, so a lookup costs what a float one does while the table
    takes a quarter of the bytes.
    """

    def __init__(self, qweight: torch.Tensor, row_scale: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.padding_idx = padding_idx
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("row_scale", row_scale.float().contiguous())

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        q, scale = quantize_per_row(embedding.weight)
        return cls(q, scale, embedding.padding_idx)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids, self.qweight).to(self.row_scale.dtype)
        return rows * nn.functional.embedding(ids, self.row_scale[:, None])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per-row"
