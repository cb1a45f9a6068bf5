"""Measuring the lesson model: held-out contents at every distortion level (as arrays or written as a
demo-style labelled set), the frozen model's zero-shot antonym margin on them, its scene teacher on the demo set
(entropy, and how much of the scene logits content and distortion level explain), and ``lesson_report``: every
number the README and the notebooks quote about the toy, computed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..data.demo import PHOTOS, demo_references, stable_seed
from ..data.distortions import apply_distortion
from ..data.procedural import procedural_image
from ..inference import evaluating, predict_pil
from ..metrics import chance_band, srcc
from ..notebook import DEMO_TYPES
from ..presets import get_preset
from .captions import PHOTO_SCENES
from .recipe import LessonRecipe

ENTROPY_BAR = 0.5
"""Most mean normalised entropy of the teacher's scene distribution on the demo set for it to inform QGR."""
CONTENT_ETA2_BAR = 0.7
"""Least share of the scene logits' variance that the content must explain on the demo set."""
LEVEL_ETA2_BAR = 0.2
"""Most share the distortion level may explain (the teacher must not mistake quality for scene)."""
WEAK_SRCC = 0.4
"""A held-out type is 'weak' for zero-shot below this SRCC on held-out contents (and visible at 64 px)."""
WEAK_HELD_OUT_TYPES: tuple[str, ...] = ("motion_blur", "jpeg", "pixelate")
"""Held-out types, visible at 64 px, where the toy's zero-shot is weak on held-out contents (measured with
``lesson_report``; a test checks): the types on which few labels have something to teach."""
VISIBLE = 0.02
"""A type is visible at the model's size when its level-5 images differ from the clean ones by at least this
mean absolute pixel difference (fraction of 255)."""


def lesson_image_size() -> int:
    """The lesson model's input side in pixels (from its preset)."""
    return int(get_preset("lesson").model_cfg["vision_cfg"]["image_size"])


def held_out_images(photos: Sequence[str] = (), kinds: Sequence[str] = (), types: Sequence[str] = (),
                    levels: Sequence[int] = (1, 2, 3, 4, 5), size: int | None = None, seed: int = 0,
                    instances: int = 2) -> list[dict[str, Any]]:
    """Rows ``{content, distortion, level, image}``: every content clean (level 0) and at every (type, level);
    photos centre-cropped like the demo set, procedural kinds ``instances`` times from evaluation seeds.

    ``size`` defaults to the lesson model's input size: images are distorted at the resolution the model sees,
    as in training (distorting at 256 px and letting the model's resize shrink them erases most noise and blur)."""
    size = lesson_image_size() if size is None else int(size)
    refs = dict(demo_references(size, photos)) if photos else {}
    for kind in kinds:
        for i in range(instances):
            refs[f"{kind}#eval{i}"] = procedural_image(kind, stable_seed(seed, "eval", kind, i), size)
    rows = []
    for content, ref in refs.items():
        rows.append({"content": content, "distortion": "reference", "level": 0, "image": ref})
        for t in types:
            for lv in levels:
                img = apply_distortion(ref, t, lv, rng=stable_seed(seed, content, t))
                rows.append({"content": content, "distortion": t, "level": int(lv), "image": img})
    return rows


def write_lesson_set(folder: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """``held_out_images(**kwargs)`` written as PNGs into ``folder``: a demo-style table (``path``, ``q`` = 1 -
    level / 5 (higher = better), ``mos`` = level, ``content_id``, ``distortion``, ``level``) that
    ``clipiqa.adapt`` and ``clipiqa.protocol.run_protocol`` take. Synthetic severities, never human scores."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in held_out_images(**kwargs):
        name = f"{r['content'].replace('#', '_')}__{r['distortion']}__{r['level']}.png"
        path = folder / name
        if not path.is_file():
            Image.fromarray(r["image"]).save(path)
        rows.append({"path": str(path), "q": 1.0 - r["level"] / 5.0, "mos": float(r["level"]),
                     "content_id": r["content"], "distortion": r["distortion"], "level": int(r["level"])})
    table = pd.DataFrame(rows).drop_duplicates("path").reset_index(drop=True)
    return table


def model_image_size(model) -> int:
    """The input side of an IQAModel (from its preprocess config)."""
    size = model.source.preprocess_cfg["size"]
    return int(size if isinstance(size, int) else size[0])


def zero_shot_margins(model, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Frozen model, antonym prompts: logit margin ``z_high - z_low`` per image (higher = better), through the
    one inference path (``clipiqa.inference.predict_pil``, fp32 on the CPU)."""
    with model.adapters_off():
        return predict_pil(model, list(images), batch_size=batch_size).margin.numpy()


def zero_shot_table(model, **kwargs):
    """``held_out_images(**kwargs)`` as a DataFrame with the zero-shot ``margin`` (no images); ``size``
    defaults to ``model``'s input size."""
    if kwargs.get("size") is None:
        kwargs["size"] = model_image_size(model)
    rows = held_out_images(**kwargs)
    margins = zero_shot_margins(model, [r["image"] for r in rows])
    return pd.DataFrame([{k: v for k, v in r.items() if k != "image"} | {"margin": float(m)}
                         for r, m in zip(rows, margins)])


# ------------------------------------------------------------------------------------------------- scenes
def teacher_scene_logits(model, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """``[N, K]`` scene logits of the frozen model (adapters off: the teacher QGR distils), through the model's
    own ``preprocess`` and ``scene_logits``, the path adaptation uses for its teacher."""
    x = torch.stack([model.preprocess(Image.fromarray(np.asarray(im))) for im in images])
    out = []
    with model.adapters_off(), evaluating(model):
        for chunk in x.split(batch_size):
            out.append(model.scene_logits(chunk.to(model.device)).float().cpu())
    return torch.cat(out).numpy()


def normalised_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of each row's softmax distribution over ``log K``: 0 = one scene, 1 = uniform."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    h = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
    return h / np.log(z.shape[1])


def eta_squared(logits: np.ndarray, groups: Sequence[Any]) -> float:
    """Share of the scene logits' variance between ``groups`` (one-way ANOVA's eta squared, pooled over the K
    columns). Each row is centred first: softmax ignores a shift common to all scenes, so only the differences
    between scenes count as variance."""
    z = np.asarray(logits, np.float64)
    z = z - z.mean(axis=1, keepdims=True)
    z = z - z.mean(axis=0, keepdims=True)
    total = float((z ** 2).sum())
    if total == 0:
        return float("nan")
    g = pd.Series(list(groups)).astype(str).to_numpy()
    between = 0.0
    for key in np.unique(g):
        part = z[g == key]
        between += len(part) * float((part.mean(axis=0) ** 2).sum())
    return between / total


def _scene_of(content: str) -> str | None:
    """The captions' scene of a demo photo as the scene branch spells it (raw name: ``still_life``)."""
    scene = PHOTO_SCENES.get(content)
    return None if scene is None else scene.replace(" ", "_")


def scene_report(model, photos: Sequence[str] | None = None, types: Sequence[str] = tuple(DEMO_TYPES),
                 size: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The frozen model's scene teacher on the demo set (every photo, clean and at levels 1-5 of ``types``, as the
    notebooks build it, ``size`` = the model's input): mean normalised entropy, eta squared of content and of
    level, the share of images on the most frequent top scene, and the top scene's agreement with the captions'
    scene per photo (``accuracy``; photos held out of training included)."""
    size = model_image_size(model) if size is None else int(size)
    rows = held_out_images(photos=list(PHOTOS) if photos is None else photos, types=types, size=size, seed=seed)
    logits = teacher_scene_logits(model, [r["image"] for r in rows])
    scenes = list(model.scenes)
    top = [scenes[i] for i in logits.argmax(axis=1)]
    contents = [r["content"] for r in rows]
    truth = [_scene_of(c) for c in contents]
    per_content = {}
    for c in dict.fromkeys(contents):
        tops = pd.Series([t for t, cc in zip(top, contents) if cc == c])
        per_content[c] = {"scene": _scene_of(c), "top": tops.mode().iloc[0],
                          "top_share": float((tops == tops.mode().iloc[0]).mean())}
    return {
        "n": len(rows), "n_contents": len(per_content), "types": list(types),
        "entropy": float(normalised_entropy(logits).mean()),
        "content_eta2": eta_squared(logits, contents),
        "level_eta2": eta_squared(logits, [r["level"] for r in rows]),
        "top_share": float(pd.Series(top).value_counts(normalize=True).iloc[0]),
        "accuracy": float(np.mean([t == s for t, s in zip(top, truth)])),
        "per_content": per_content,
    }


# ------------------------------------------------------------------------------------------------ quality
def zero_shot_by_type(model, photos: Sequence[str], kinds: Sequence[str], types: Sequence[str],
                      instances: int = 4, seed: int = 0) -> pd.DataFrame:
    """Per type: zero-shot SRCC of the antonym margin against -level (the type's rows and the clean ones), n,
    chance band, and ``visible`` (mean |level 5 - clean| / 255 at the model's size)."""
    size = model_image_size(model)
    rows = held_out_images(photos=photos, kinds=kinds, types=types, size=size, seed=seed, instances=instances)
    margins = zero_shot_margins(model, [r["image"] for r in rows])
    refs = {r["content"]: r["image"] for r in rows if r["level"] == 0}
    clean = np.array([r["level"] == 0 for r in rows])
    levels = np.array([r["level"] for r in rows])
    kind = np.array([r["distortion"] for r in rows])
    out = []
    for t in types:
        keep = clean | (kind == t)
        worst = [np.abs(r["image"].astype(np.float32) - refs[r["content"]]).mean() / 255.0
                 for r in rows if r["distortion"] == t and r["level"] == 5]
        out.append({"type": t, "srcc": srcc(margins[keep], -levels[keep]), "n": int(keep.sum()),
                    "band": chance_band(int(keep.sum())), "visible": float(np.mean(worst)) if worst else 0.0})
    return pd.DataFrame(out)


def zero_shot_pooled(model, recipe: LessonRecipe, instances: int = 4, seed: int = 0) -> dict[str, Any]:
    """Pooled zero-shot SRCC on held-out contents (held-out photos, ``instances`` evaluation images of each
    held-out kind) for the pre-training types, levels 0-5, with n, chance band and per-type SRCC."""
    table = zero_shot_table(model, photos=recipe.heldout_photos, kinds=recipe.heldout_kinds,
                            types=recipe.pretrain_types, instances=instances, seed=seed)
    per_type = {t: srcc(part["margin"], -part["level"]) for t in recipe.pretrain_types
                for part in [table[(table["distortion"] == t) | (table["level"] == 0)]]}
    return {"srcc": srcc(table["margin"], -table["level"]), "n": len(table), "band": chance_band(len(table)),
            "per_type": per_type}


def lesson_report(model, recipe: LessonRecipe | None = None, held_out_types: Sequence[str] | None = None
                  ) -> dict[str, Any]:
    """Every number quoted about the toy, measured on ``model`` (default recipe: the lesson preset's):

    - ``scene``: :func:`scene_report` on the demo set, with ``passes`` against the bars above;
    - ``zero_shot``: :func:`zero_shot_pooled` (pre-training types, held-out contents);
    - ``held_out``: :func:`zero_shot_by_type` for ``held_out_types`` (default: the recipe's) on held-out contents;
    - ``weak_types``: the held-out types visible at the model's size where zero-shot SRCC is below ``WEAK_SRCC``:
      where labels have something to teach."""
    recipe = recipe or LessonRecipe.from_dict(get_preset("lesson").lesson)
    scene = scene_report(model)
    scene["passes"] = bool(scene["entropy"] <= ENTROPY_BAR and scene["content_eta2"] >= CONTENT_ETA2_BAR
                           and scene["level_eta2"] <= LEVEL_ETA2_BAR)
    types = recipe.heldout_types if held_out_types is None else held_out_types
    by_type = zero_shot_by_type(model, recipe.heldout_photos, recipe.heldout_kinds, types)
    weak = by_type[(by_type["visible"] >= VISIBLE) & (by_type["srcc"] < WEAK_SRCC)]
    return {"scene": scene, "zero_shot": zero_shot_pooled(model, recipe), "held_out": by_type,
            "weak_types": list(weak["type"])}


def report_lines(report: dict[str, Any]) -> list[str]:
    """``lesson_report``'s numbers as short lines for a notebook or the README, each saying "toy model"."""
    s, z = report["scene"], report["zero_shot"]
    lines = [
        f"toy model, scene teacher on the demo set ({s['n']} images of {s['n_contents']} photos): mean normalised "
        f"entropy {s['entropy']:.2f} (bar <= {ENTROPY_BAR}), content explains {s['content_eta2']:.0%} of the scene "
        f"logits' variance (bar >= {CONTENT_ETA2_BAR:.0%}), distortion level {s['level_eta2']:.0%} "
        f"(bar <= {LEVEL_ETA2_BAR:.0%}); top scene = the captions' scene on {s['accuracy']:.0%} of images",
        f"toy model, zero-shot SRCC on held-out contents for its pre-training types: {z['srcc']:.2f} "
        f"(n = {z['n']}, chance band ±{z['band']:.2f}; "
        + ", ".join(f"{t} {r:.2f}" for t, r in z["per_type"].items()) + ")",
    ]
    held = report["held_out"]
    if len(held):
        weak = held[held["type"].isin(report["weak_types"])]
        lines.append("toy model, zero-shot weak on held-out types that show at 64 px: "
                     + ", ".join(f"{r.type} {r.srcc:.2f}" for r in weak.itertuples())
                     + f" (n = {int(held['n'].iloc[0])} each, band ±{held['band'].iloc[0]:.2f})")
    return lines
