"""Scene drift: how far a model's scene distribution moved from zero-shot CLIP (docs/design.md, 'Explainability');
re-exported by :mod:`clipiqa.explain.diagnostics`."""
from __future__ import annotations

from typing import Callable, Mapping

import pandas as pd
import torch
from torch import Tensor, nn

from ..losses import scene_drift
from ..prompts import SCENE_LABELS, SCENES
from .attribution import frozen_eval, is_random_init, model_device, unwrap, frozen_clip
from .inputs import References, as_named, to_model_input
from .notes import with_notes


def scene_drift_table(models: Mapping[str, nn.Module], images: Tensor | References, teacher: nn.Module | None = None,
                      batch_size: int = 32, transform: Callable | None = None) -> pd.DataFrame:
    """Per model and image: ``KL(teacher || model)`` of the scene distribution and the top scenes.

    ``images``: preprocessed ``[N, 3, H, W]``, or raw images (arrays / PIL, a list or a name -> image dict)
    that each model preprocesses itself. ``teacher``: zero-shot CLIP; by default the first model with its
    adapters off; an ``IQAModel`` given here is also used with its adapters off (the teacher is the frozen
    CLIP by definition). Columns: ``model, image, scene_drift, top_scene, top_scene_label, top_prob,
    teacher_top_scene, same_top_scene, random_init, note``; :func:`summarize_scene_drift` gives the means.
    """
    if not models:
        raise ValueError("give at least one model")
    teacher = frozen_clip(teacher if teacher is not None else next(iter(models.values())))
    names = _image_names(images)
    t_logits = _scene_logits(teacher, images, batch_size, transform)
    scenes = _scenes_of(teacher)
    random_init = any(is_random_init(m) for m in models.values()) or is_random_init(teacher)
    rows = []
    for label, model in models.items():
        s_logits = _scene_logits(model, images, batch_size, transform)
        probs = s_logits.softmax(-1)
        for i, name in enumerate(names):
            top, t_top = int(probs[i].argmax()), int(t_logits[i].argmax())
            rows.append({"model": label, "image": name,
                         "scene_drift": float(scene_drift(s_logits[i:i + 1], t_logits[i:i + 1])),
                         "top_scene": scenes[top], "top_scene_label": _scene_label(scenes[top]),
                         "top_prob": float(probs[i, top]), "teacher_top_scene": scenes[t_top],
                         "same_top_scene": top == t_top})
    table = with_notes(pd.DataFrame(rows), random_init, next(iter(models.values())))
    table.attrs["random_init"] = random_init
    return table


def summarize_scene_drift(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: mean and median scene drift, share of images whose top scene stayed the teacher's."""
    out = table.groupby("model", sort=False).agg(
        scene_drift_mean=("scene_drift", "mean"), scene_drift_median=("scene_drift", "median"),
        top_scene_agreement=("same_top_scene", "mean"), n_images=("image", "size")).reset_index()
    random_init = bool(table["random_init"].any()) if "random_init" in table else False
    out = with_notes(out, random_init)
    if "note" in table and len(table):
        out["note"] = table["note"].iloc[0]
    return out


def _image_names(images: Tensor | References) -> list[str]:
    if isinstance(images, Tensor):
        return [f"image{i}" for i in range(images.shape[0])]
    return list(as_named(images).keys())


@torch.no_grad()
def _scene_logits(model: nn.Module, images: Tensor | References, batch_size: int,
                  transform: Callable | None) -> Tensor:
    if not isinstance(images, Tensor):
        images = torch.stack([to_model_input(model, im, transform)[0] for im in as_named(images).values()])
    out = []
    with unwrap(model) as core, frozen_eval(core):
        device = model_device(core)
        for start in range(0, images.shape[0], batch_size):
            out.append(core.scene_logits(images[start:start + batch_size].to(device, torch.float32)).float().cpu())
    return torch.cat(out)


def _scenes_of(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "scenes", SCENES))


def _scene_label(scene: str) -> str:
    return SCENE_LABELS.get(scene, scene.replace("_", " "))


__all__ = ["scene_drift_table", "summarize_scene_drift"]
