"""Scene retention of an adapted model: how far did its scene branch move from its frozen self?

The frozen model's scene branch (the fixed scene prompts, adapters off) is the teacher of QGR's semantic loss;
after adaptation the same fixed scene prompts read the adapted image features. The released QGR rule pushes
quality updates *away* from the semantic gradient where the two agree (docs/design.md, 'The released rule'), so
it is expected to move the scene branch more than plain fine-tuning does; whatever is claimed about QGR and
content, these numbers show it. Two per split, on the test images:

- ``scene_kl``: mean KL(teacher || adapted) of the two scene distributions (nats; 0 = unchanged);
- ``scene_agree``: share of test images whose top scene is the teacher's top scene (1 = unchanged).

Pure functions of the logits plus one function that computes both logit sets through the model's own
``scene_logits`` (fp32 head, the model's evaluation transform).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..inference import evaluating

__all__ = ["scene_kl", "scene_agreement", "scene_logits_pair", "scene_retention"]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def scene_kl(teacher: np.ndarray, student: np.ndarray) -> float:
    """Mean over rows of KL(softmax(teacher) || softmax(student)), in nats."""
    lp, lq = _log_softmax(teacher), _log_softmax(student)
    return float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())


def scene_agreement(teacher: np.ndarray, student: np.ndarray) -> float:
    """Share of rows whose arg-max scene is the same."""
    return float(np.mean(np.argmax(teacher, axis=1) == np.argmax(student, axis=1)))


def scene_logits_pair(model, images: Sequence, transform: Callable | None = None, batch_size: int = 32
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(teacher, adapted)`` scene logits ``[N, K]`` of PIL images (or uint8 arrays): adapters off, then on."""
    transform = transform or model.preprocess
    pil = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    out = []
    for off in (True, False):
        rows = []
        with (model.adapters_off() if off else nullcontext()), evaluating(model):
            for start in range(0, len(pil), batch_size):
                x = torch.stack([transform(im.convert("RGB")) for im in pil[start:start + batch_size]])
                rows.append(model.scene_logits(x.to(model.device)).float().cpu())
        out.append(torch.cat(rows).numpy())
    return out[0], out[1]


def scene_retention(model, images: Sequence, transform: Callable | None = None, batch_size: int = 32) -> dict:
    """``{"scene_kl", "scene_agree"}`` of ``model`` (adapted) against its frozen self on ``images``."""
    teacher, adapted = scene_logits_pair(model, images, transform, batch_size)
    return {"scene_kl": scene_kl(teacher, adapted), "scene_agree": scene_agreement(teacher, adapted)}
