"""One training step from cached activations, shared by few-shot adaptation and meta pre-training: the per-view
cache of the frozen prefix (``EncodedSet``), the forward from it, the quality and semantic losses combined by QGR,
and the optimizer step, each checked for non-finite values."""
from __future__ import annotations

import torch

from ..history import DivergedError, History
from ..losses import quality_loss, scene_drift, semantic_loss
from ..qgr import NonFiniteGradientError, qgr_step
from .config import AdaptConfig


class EncodedSet:
    """Per image and view: the activations entering visual block ``start`` (or the images when start == 0)
    and the frozen teacher's scene logits. Built once; a step only runs the trainable part."""

    def __init__(self, model, images: list, transform, n_views: int, start: int, batch_size: int,
                 cache: bool = True, teacher: bool = True):
        self.start = start if cache else 0
        self.n_views = n_views
        inputs, teachers = [], []
        with torch.no_grad():
            for v in range(n_views):
                views = torch.stack([transform(im) for im in images])
                hidden, logits = [], []
                for chunk in views.split(batch_size):
                    chunk = chunk.to(model.device)
                    if teacher:  # evaluation sets need no teacher
                        with model.adapters_off():
                            logits.append(model.scene_logits(chunk).float())
                    hidden.append(model.visual_prefix(chunk, self.start) if self.start else chunk)
                inputs.append(torch.cat(hidden))
                teachers.append(torch.cat(logits) if logits else None)
        self.inputs = torch.stack(inputs, dim=1)  # [N, V, ...]
        self.teacher = torch.stack(teachers, dim=1) if teacher else None  # [N, V, K]

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, index: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index, view = index.to(self.inputs.device), view.to(self.inputs.device)
        return self.inputs[index, view], self.teacher[index, view]


def forward_cached(model, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quality and scene logits from cached activations entering block ``start`` (images when start == 0)."""
    features = model.encode_image_from(x, start) if start else model.encode_image(x)
    return model.heads(features)


def compute_gradients(model, encoded: EncodedSet, index, view, q, params, config: AdaptConfig,
                      step_number: int | None = None) -> dict:
    """Forward from the cache, both losses, QGR-combined gradients accumulated into ``p.grad``.

    With QGR off, the semantic gradient (a second backward pass) is computed only when ``config.qgr_stats`` asks
    for the diagnostics; otherwise ``cosine`` is NaN. Raises DivergedError (with an empty History; the
    caller restores parameters) on a non-finite quality loss or gradient, or on a non-finite semantic loss or
    gradient when QGR uses it (with QGR off the semantic loss is unused and never aborts the step); no parameter is
    changed here. Returns the step's record (losses, gradient cosine, fraction projected, fraction where the descent
    guard capped the projection, scene drift).
    """
    x, teacher = encoded.batch(index, view)
    device_type = model.device.type
    amp = (device_type == "cuda") if config.amp is None else config.amp
    where = f" at step {step_number}" if step_number is not None else ""
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp and device_type == "cuda"):
        q_logits, s_logits = forward_cached(model, x, encoded.start)
    q_logits, s_logits = q_logits.float(), s_logits.float()
    loss_q = quality_loss(q_logits, q[index.to(q.device)])
    loss_s = semantic_loss(s_logits, teacher)
    # The semantic loss only matters when QGR combines it: plain fine-tuning never aborts on it (its diagnostics,
    # if asked for, are then NaN for the step).
    semantic_used = config.qgr.active
    semantic_finite = bool(torch.isfinite(loss_s))
    if not torch.isfinite(loss_q) or (semantic_used and not semantic_finite):
        raise DivergedError(
            f"non-finite loss{where} (quality {loss_q.item()}, semantic {loss_s.item()}). Lower the learning rate "
            f"(now {config.lr}) or check the labels.", History())
    try:
        stats = qgr_step(params, loss_q, loss_s if semantic_used or semantic_finite else None, config.qgr,
                         compute_stats=config.qgr_stats)
    except NonFiniteGradientError as e:
        raise DivergedError(f"non-finite gradient{where}: {e}. Lower the learning rate (now {config.lr})"
                            " or QGR lam.", History()) from e
    if not all_finite([p.grad for p in params if p.grad is not None]):
        for p in params:
            p.grad = None
        raise DivergedError(f"non-finite gradient{where}. Lower the learning rate (now {config.lr}) or "
                            "QGR lam.", History())
    guarded = stats.n_guarded / stats.n_tensors if stats.n_tensors else float("nan")
    return {"loss": loss_q.item(), "loss_semantic": loss_s.item(), "cosine": stats.cosine,
            "frac_projected": stats.frac_projected, "frac_guarded": guarded,
            "drift": scene_drift(s_logits.detach(), teacher).item()}


def train_step(model, encoded: EncodedSet, index, view, q, optimizer, params, config: AdaptConfig,
               step_number: int | None = None) -> dict:
    """One optimizer step on the batch ``encoded[index, view]`` with labels ``q[index]``.

    Raises DivergedError on a non-finite loss or gradient (nothing changed) or when the step leaves a
    non-finite parameter (the caller restores the last good parameters)."""
    optimizer.zero_grad(set_to_none=True)
    record = compute_gradients(model, encoded, index, view, q, params, config, step_number)
    optimizer.step()
    if not all_finite(params):
        where = f"after step {step_number}" if step_number is not None else "after a step"
        raise DivergedError(f"non-finite parameters {where} (the gradients were finite). Lower the "
                            f"learning rate (now {config.lr}).", History())
    record["lr"] = optimizer.param_groups[0]["lr"]
    return record


def all_finite(tensors) -> bool:
    """True when no tensor holds inf or NaN (one host sync for all of them)."""
    tensors = list(tensors)
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

