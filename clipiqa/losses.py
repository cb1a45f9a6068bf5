"""Training losses for CLIP-based quality prediction (docs/design.md, 'Losses').

All functions are pure: they take logits, return a tensor, and keep no state.

Conventions
-----------
* Quality logits have shape ``[B, 2]``, are already multiplied by CLIP's logit scale, and column 0 is the
  "high quality" class, column 1 the "low quality" class. The predicted quality score is
  ``p_high = softmax(logits)[:, 0]`` in [0, 1], higher = better.
* Scene logits have shape ``[B, K]`` (K = 9 scene prompts in the default model). The *teacher* is frozen
  zero-shot CLIP; the *student* is the model being adapted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .inference import from_logits  # the one place that turns quality logits into a score

__all__ = ["quality_loss", "semantic_loss", "scene_drift", "score_from_logits"]


def _check_pair_logits(logits: Tensor, name: str = "logits") -> None:
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape [B, 2] (column 0 = 'high quality', column 1 = 'low quality'); "
            f"got shape {tuple(logits.shape)}"
        )


def _check_scene_logits(student_logits: Tensor, teacher_logits: Tensor, T: float) -> None:
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must have shape [B, K]; got shape {tuple(student_logits.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape [B, K]; got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if not (math.isfinite(float(T)) and float(T) > 0.0):
        raise ValueError(f"temperature T must be a finite number > 0; got T={T!r}")


def quality_loss(logits: Tensor, q: Tensor) -> Tensor:
    r"""Soft-label binary cross-entropy between the predicted (high, low) distribution and the label.

    .. math::

        (p_{high}, p_{low}) = \mathrm{softmax}(z_b), \qquad
        L = -\frac{1}{B} \sum_b \big[\, q_b \log p_{high,b} + (1 - q_b) \log p_{low,b} \,\big]

    computed with ``log_softmax`` so that large logits (CLIP's scale is 100) never produce ``log(0)``.

    Args:
        logits: ``[B, 2]`` scaled logits, column 0 = "high quality".
        q: ``[B]`` labels in [0, 1], higher = better (any float dtype; cast to the logits' dtype).

    Returns:
        0-d tensor, the mean over the batch. Its minimum over logits is the binary entropy of ``q`` (0 only
        for hard labels 0/1).
    """
    _check_pair_logits(logits)
    q = torch.as_tensor(q, device=logits.device)
    if q.dim() != 1 or q.shape[0] != logits.shape[0]:
        raise ValueError(
            f"q must have shape [B] matching logits [B, 2]; got q {tuple(q.shape)} and logits "
            f"{tuple(logits.shape)}"
        )
    q = q.to(logits.dtype)
    logp = F.log_softmax(logits, dim=1)
    return -(q * logp[:, 0] + (1.0 - q) * logp[:, 1]).mean()


def semantic_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    r"""Cross-entropy of the student's scene distribution against the (detached) teacher's.

    .. math::

        t_b = \mathrm{softmax}(z^{teacher}_b / T), \qquad
        L = -\frac{1}{B} \sum_b \sum_k t_{b,k} \log \mathrm{softmax}(z^{student}_b / T)_k

    The teacher is detached, so :math:`L = \mathrm{KL}(t \,\|\, s) + H(t)` with :math:`H(t)` constant:
    the gradient of this loss equals the gradient of ``KL(teacher || student)`` (see :func:`scene_drift`).
    The temperature divides both logits (standard distillation); ``T = 1`` (the design default) leaves
    them as they are.

    Args:
        student_logits: ``[B, K]`` scene logits of the adapted model.
        teacher_logits: ``[B, K]`` scene logits of frozen zero-shot CLIP (never receives a gradient).
        T: temperature > 0.

    Returns:
        0-d tensor, mean over the batch.
    """
    _check_scene_logits(student_logits, teacher_logits, T)
    teacher = F.softmax(teacher_logits.detach().to(student_logits.dtype) / T, dim=1)
    log_student = F.log_softmax(student_logits / T, dim=1)
    return -(teacher * log_student).sum(dim=1).mean()


def scene_drift(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    r"""Scene drift: ``KL(teacher || student)`` of the scene distributions, mean over the batch.

    .. math::

        D = \frac{1}{B} \sum_b \sum_k t_{b,k} \,\big(\log t_{b,k} - \log s_{b,k}\big), \qquad
        t = \mathrm{softmax}(z^{teacher}/T),\; s = \mathrm{softmax}(z^{student}/T)

    A diagnostic (>= 0, 0 iff the distributions match): how far the adapted model's scene understanding has
    moved away from zero-shot CLIP. Computed from log-probabilities, so classes with ``t = 0`` contribute 0.
    The teacher is detached.
    """
    _check_scene_logits(student_logits, teacher_logits, T)
    log_t = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / T, dim=1)
    log_s = F.log_softmax(student_logits / T, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1).mean()


def score_from_logits(logits: Tensor) -> Tensor:
    r"""Quality score ``p_high = softmax(logits)[:, 0]``, shape ``[B]``, in [0, 1], higher = better."""
    _check_pair_logits(logits)
    return from_logits(logits).score
