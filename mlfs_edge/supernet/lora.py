"""Sliceable LoRA: peft adapters on every attention and MLP projection, shared by all sub-networks.

The adapters are ordinary peft LoRA layers; `ElasticSupernet` slices them with their base layers
(A's input columns with the base layer's input slice, B's output rows with its output slice), so a
sub-network trains and uses exactly the prefix of each adapter. Only A and B are trainable.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mlfs_edge.supernet.arch import arch_of, count_params

TARGETS = {
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8  # the MLFS paper's rank for all GLUE results
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be ≥ 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must lie in [0, 1), got {self.dropout}")


def add_lora(model: nn.Module, settings: LoraSettings = LoraSettings(), adapter: str = "default") -> nn.Module:
    """Wrap `model` in a peft model with LoRA on all attention and MLP projections; base frozen.

    Returns the peft model. B starts at zero (peft's default), so the function is unchanged.
    """
    from peft import LoraConfig, get_peft_model

    family = arch_of(model).family
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=TARGETS[family], bias="none")
    return get_peft_model(model, config, adapter_name=adapter)


def trainable_report(model: nn.Module) -> dict[str, float]:
    trainable, total = count_params(model, trainable_only=True), count_params(model)
    return {"trainable": trainable, "total": total, "fraction": trainable / total}
