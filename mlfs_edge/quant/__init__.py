"""Quantization: ``quantize(model, Int8Config())`` (the shared int8 scheme), ``Fp16Config()``,
``BnbInt8Config()`` / ``BnbNf4Config()`` (bitsandbytes); ``model_size_bytes`` reports the result."""

from mlfs_edge.quant.api import model_size_bytes, quantize
from mlfs_edge.quant.config import BnbInt8Config, BnbNf4Config, Fp16Config, Int8Config, QuantConfig, config_for

__all__ = ["BnbInt8Config", "BnbNf4Config", "Fp16Config", "Int8Config", "QuantConfig", "config_for",
           "model_size_bytes", "quantize"]
