"""Re-training losses for a pruned model: cross-entropy on labels (L2PFT) and KL self-distillation
to the unpruned model's logits (L2PSD).

The distillation loss never sees a label: its only inputs are the two models' logits (and which
positions count), so the no-label path cannot use labels by construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over positions.

    Logits are [..., classes]; every leading index is one position (a sentence for a classifier, a
    token for a decoder). `mask` (the logits' shape without the class axis) selects the positions
    that count. The T² factor keeps gradient magnitudes comparable across temperatures (Hinton et
    al., 2015).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_position = (t.exp() * (t - s)).sum(-1)
    if mask is None:
        return per_position.mean() * temperature**2
    weights = mask.to(per_position.dtype)
    return (per_position * weights).sum() / weights.sum().clamp_min(1.0) * temperature**2


def answer_ce_loss(logits: torch.Tensor, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the answer tokens only (supervised fine-tuning of a decoder)."""
    targets = input_ids[:, 1:]
    weights = answer_mask[:, 1:].float()
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    return (ce * weights).sum() / weights.sum().clamp_min(1.0)
