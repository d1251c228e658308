"""What to quantize: one small config object per scheme (the torchao pattern: a config says *what*,
``quantize(model, config)`` does it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Int8Config:
    """The project's int8 scheme (``mlfs_edge.quant.scheme``): symmetric per-output-channel int8
    weights, dynamic per-token int8 activations, exact int32 accumulation.

    ``embeddings``: also store the embedding tables as weight-only int8 (per row, same scheme); they
    are half of MiniLM's parameters, so without this an int8 model stays above half the fp32 size.
    ``linears``: replace ``nn.Linear`` layers by ``Int8Linear`` (the ExecuTorch export turns this
    off and lets the XNNPACK quantizer take the linears, with the same weight scales).
    ``skip``: qualified module names (or name prefixes) kept in float, e.g. ``("classifier",)``.
    """

    embeddings: bool = True
    linears: bool = True
    skip: tuple[str, ...] = ()

    name = "int8"


@dataclass(frozen=True)
class Fp16Config:
    """Weights, buffers and compute in IEEE half precision (PyTorch runs half on CPU; it pays on
    CPUs with native fp16 arithmetic such as ARMv8.2+, and halves the size everywhere)."""

    name = "fp16"


@dataclass(frozen=True)
class BnbInt8Config:
    """bitsandbytes LLM.int8 (``Linear8bitLt``): int8 weights, activation columns above
    ``threshold`` computed in float (outlier decomposition; 0 disables it)."""

    threshold: float = 6.0
    skip: tuple[str, ...] = ()

    name = "bnb-int8"


@dataclass(frozen=True)
class BnbNf4Config:
    """bitsandbytes 4-bit NormalFloat (``Linear4bit``, quant_type nf4) weights with blockwise absmax
    scales, dequantised to ``compute_dtype`` for the matmul."""

    compute_dtype: str = "float32"  # "float32" | "bfloat16" | "float16"
    double_quant: bool = True  # quantise the absmax scales too (QLoRA's "double quantization")
    skip: tuple[str, ...] = ()

    name = "bnb-nf4"


QuantConfig = Int8Config | Fp16Config | BnbInt8Config | BnbNf4Config


def config_for(name: str) -> QuantConfig:
    """The default config of a scheme named on the command line (int8, fp16, bnb-int8, bnb-nf4)."""
    configs = {c.name: c for c in (Int8Config, Fp16Config, BnbInt8Config, BnbNf4Config)}
    if name not in configs:
        raise ValueError(f"unknown quantization {name!r}; choose one of {', '.join(configs)}")
    return configs[name]()
