"""The distillation objective of one MLFS step: `SandwichObjective` runs the largest sub-network and
the others in one forward call and sums their scaled losses (`distill.subnet_loss`). Causal LMs are
scored per predicted token (`token_rows`, `lm_labels`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mlfs_edge.config import SubnetConfig
from mlfs_edge.supernet import ElasticSupernet
from mlfs_edge.train.distill import feature_mse, random_projection, subnet_loss

if TYPE_CHECKING:
    from mlfs_edge.train.mlfs_config import LossSettings


def _hidden_for(layers: tuple[int, ...], hidden_states: tuple[torch.Tensor, ...]) -> dict[int, torch.Tensor]:
    """Map original layer index → that layer's output (hidden_states[0] is the embedding output)."""
    return {layer: h for layer, h in zip(layers, hidden_states[1:], strict=True)}


def feature_pairs(student: tuple[int, ...], teacher: tuple[int, ...], mode: str = "same") -> list[tuple[int, int]]:
    """(student layer, teacher layer) whose outputs feature distillation compares, original indices.

    "same": every kept layer with the same layer of the teacher (the paper's). "replaced": a kept
    layer with the last teacher layer before the next kept one — the block of teacher layers it
    stands for when the ones between were dropped — and the last kept layer with the teacher's last,
    so a shallow sub-network is pulled toward the teacher's final representation, not toward an
    early layer's (TinyBERT / DynaBERT layer mapping)."""
    kept = set(teacher)
    if mode == "same":
        return [(i, i) for i in student if i in kept]
    if mode != "replaced":
        raise ValueError(f"unknown feature map {mode!r}: use 'same' or 'replaced'")
    pairs = []
    for j, layer in enumerate(student):
        end = student[j + 1] if j + 1 < len(student) else max(teacher) + 1
        last = max((t for t in teacher if layer <= t < end), default=None)
        if last is not None:
            pairs.append((layer, last))
    return pairs


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              ignore_index: int = -100) -> torch.Tensor:
    """Next-token targets of a causal LM batch, flattened to [B·(T−1)] to match `token_rows`;
    positions whose target is padding get `ignore_index`."""
    labels = input_ids[:, 1:].clone()
    if attention_mask is not None:
        labels[attention_mask[:, 1:] == 0] = ignore_index
    return labels.reshape(-1)


def token_rows(logits: torch.Tensor) -> torch.Tensor:
    """[B, T, V] → [B·(T−1), V]: position t's logits predict token t+1 (the last predicts nothing)."""
    return logits[:, :-1].reshape(-1, logits.shape[-1])


class SandwichObjective(nn.Module):
    """One training step's loss over a list of sub-networks, largest first, in ONE forward call
    (so DDP sees one forward and one backward per step).

    Classification: logits [B, C], labels [B]. Causal LM (`causal_lm=True`): logits [B, T, V] are
    flattened by `token_rows`, labels come from `lm_labels`; KD and CE are then means over tokens."""

    def __init__(self, model: nn.Module, loss: LossSettings, seed: int, causal_lm: bool = False) -> None:
        super().__init__()
        self.model = model
        self.net = ElasticSupernet(model)
        self.settings = loss
        self.causal_lm = causal_lm
        self.register_buffer("projection", random_projection(self.net.arch.hidden, loss.feature_dim, seed),
                             persistent=False)

    def _rows(self, logits: torch.Tensor) -> torch.Tensor:
        return token_rows(logits) if self.causal_lm else logits

    def forward(self, batch: dict[str, torch.Tensor], labels: torch.Tensor, subnets: list[SubnetConfig],
                scales: list[float], ranks: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`ranks` (elastic LoRA rank): the adapter rank of each sub-network; None = full rank."""
        s = self.settings
        losses = []
        ranks = ranks or [None] * len(subnets)  # type: ignore[list-item]
        self.net.set_active(subnets[0])
        self.net.set_rank(ranks[0])
        out = self.model(**batch, output_hidden_states=s.beta > 0)
        logits = self._rows(out.logits)
        largest_loss = nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100)
        losses.append(largest_loss)
        total = largest_loss * scales[0]
        teacher_logits = logits.detach()
        teacher_hidden = _hidden_for(subnets[0].layers, out.hidden_states) if s.beta > 0 else {}
        for cfg, scale, rank in zip(subnets[1:], scales[1:], ranks[1:], strict=True):
            self.net.set_active(cfg)
            self.net.set_rank(rank)
            out = self.model(**batch, output_hidden_states=s.beta > 0)
            feat = None
            if s.beta > 0:
                sub_hidden = _hidden_for(cfg.layers, out.hidden_states)
                pairs = feature_pairs(cfg.layers, subnets[0].layers, s.feature_map)
                feat = feature_mse([sub_hidden[i] for i, _ in pairs], [teacher_hidden[t].detach() for _, t in pairs],
                                   self.projection, batch.get("attention_mask"), normalize=self.causal_lm)
            loss = subnet_loss(self._rows(out.logits), teacher_logits, labels, s.alpha, s.temperature, s.beta, feat)
            losses.append(loss)
            total = total + scale * loss
        self.net.set_active(self.net.full)
        self.net.set_rank(None)
        return total, torch.stack([x.detach() for x in losses])
