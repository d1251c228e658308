"""MLFS losses: knowledge distillation from the largest sub-network, feature distillation, and the
gradient scaling of small sub-networks (Kundu et al., arXiv 2404.01353)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher ‖ student) of the temperature-softened distributions, mean over rows, × T²
    (so gradients keep their scale as T changes; T = 1 is the paper's and LLM-Neo's setting)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def feature_mse(student: list[torch.Tensor], teacher: list[torch.Tensor], projection: torch.Tensor,
                mask: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
    """Mean over layer pairs of the MSE between hidden states projected to `projection.shape[1]` dims.

    `student[i]` and `teacher[i]` are the outputs of the same original layer ([B, T, hidden]);
    `mask` ([B, T], 1 = real token) leaves padding out. `normalize` first scales every token's hidden
    vector to unit RMS: a pre-norm decoder's residual stream is not normalized (SmolLM2's reaches
    |x| ≈ 25,000 in a few outlier dimensions), and the raw MSE (≈ 10⁴) would swamp the KD term.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError("feature distillation needs the same, non-zero number of student and teacher layers")
    losses = []
    for s, t in zip(student, teacher, strict=True):
        s, t = s.float(), t.float()
        if normalize:
            s, t = F.rms_norm(s, (s.shape[-1],)), F.rms_norm(t, (t.shape[-1],))
        diff = (s - t) @ projection
        per_token = diff.pow(2).mean(-1)
        if mask is not None:
            m = mask.to(per_token.dtype)
            losses.append((per_token * m).sum() / m.sum().clamp(min=1))
        else:
            losses.append(per_token.mean())
    return torch.stack(losses).mean()


def subnet_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                alpha: float, temperature: float, beta: float = 0.0,
                feature_loss: torch.Tensor | None = None, ignore_index: int = -100) -> torch.Tensor:
    """α·KD + (1−α)·CE + β·feature loss, for one non-maximal sub-network.

    Logits are [N, C] with labels [N] (rows whose label is `ignore_index` are left out, e.g. padding
    of a language model)."""
    keep = labels != ignore_index
    s, t, y = student_logits, teacher_logits, labels
    if not bool(keep.all()):  # only then copy: LM logits are B·T × vocab (≈ 100 MB for 4 × 128 × 49152)
        s, t, y = s[keep], t[keep], y[keep]
    loss = alpha * kd_kl(t, s, temperature) + (1 - alpha) * F.cross_entropy(s.float(), y)
    if beta and feature_loss is not None:
        loss = loss + beta * feature_loss
    return loss


def gradient_scale(largest_params: int, subnet_params: int, gamma: float) -> float:
    """(n₁ / nⱼ)^γ: small sub-networks get larger steps so they converge as fast as the largest."""
    if subnet_params <= 0 or largest_params <= 0:
        raise ValueError("parameter counts must be positive")
    return (largest_params / subnet_params) ** gamma


def random_projection(hidden: int, dim: int, seed: int) -> torch.Tensor:
    """A fixed Gaussian projection hidden → dim, scaled so squared norms are preserved on average
    (Johnson–Lindenstrauss); `dim` ≥ hidden (or 0) means no projection."""
    if dim <= 0 or dim >= hidden:
        return torch.eye(hidden)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(hidden, dim, generator=g) / dim ** 0.5
