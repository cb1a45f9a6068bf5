"""Measuring the lesson model: held-out contents at every distortion level (as arrays or written as a
demo-style labelled set) and the frozen model's zero-shot antonym margin on them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..data.demo import demo_references, stable_seed
from ..data.distortions import apply_distortion
from ..data.procedural import procedural_image
from ..inference import predict_pil
from ..presets import get_preset


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
