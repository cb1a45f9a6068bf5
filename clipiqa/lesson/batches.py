"""What one training step sees: contents (crops of the demo photos and procedural images) in clean and
distorted variants with their captions, a pure function of (recipe, step)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from ..data.demo import _load_photo, stable_seed
from ..data.distortions import apply_distortion
from ..data.procedural import PHRASES, procedural_image
from .captions import PHOTO_PHRASES, PHOTO_SCENES, content_caption, quality_caption
from .recipe import LessonRecipe


@dataclass(frozen=True)
class Content:
    """One content: a name, what captions call it, its scene, and its image(s) (uint8 H x W x 3)."""

    name: str
    phrase: str
    scene: str
    image: np.ndarray


def photo_contents(names: Sequence[str]) -> list[Content]:
    """The demo photos at full resolution (those that load here)."""
    out = []
    for name in names:
        img = _load_photo(name)
        if img is not None:
            out.append(Content(name, PHOTO_PHRASES[name], PHOTO_SCENES[name], img))
    return out


def procedural_contents(kinds: Sequence[str], instances: int, size: int, seed: int) -> list[Content]:
    """``instances`` images of every procedural kind, each from its own stable seed."""
    return [Content(f"{kind}#{i}", PHRASES[kind], "others",
                    procedural_image(kind, stable_seed(seed, "procedural", kind, i), size))
            for kind in kinds for i in range(instances)]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of side between ``size`` and the short side, resized to ``size`` (never upsampled
    unless the image is smaller than ``size``), randomly mirrored."""
    h, w = img.shape[:2]
    short = min(h, w)
    side = int(rng.integers(min(size, short), short + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[top:top + side, left:left + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.uint8)


def sample_batch(contents_photo: Sequence[Content], contents_proc: Sequence[Content], recipe: LessonRecipe,
                 step: int) -> tuple[list[np.ndarray], list[str], list[int], list[str]]:
    """Images (uint8, ``render_size``), captions, levels and scenes (the content's scene, as the scene branch
    spells it: ``still_life``) of one training step: a pure function of (recipe, step). ``recipe.groups``
    crops, each in ``recipe.variants`` versions (clean or distorted)."""
    rng = np.random.default_rng(stable_seed(recipe.seed, "lesson-step", step))
    images, captions, levels, scenes = [], [], [], []
    size = recipe.render_size
    for _ in range(recipe.groups):
        pool = contents_photo if (rng.random() < recipe.photo_fraction or not contents_proc) else contents_proc
        content = pool[int(rng.integers(len(pool)))]
        crop = random_crop(content.image, size, rng)
        for _ in range(recipe.variants):
            if rng.random() < recipe.clean_fraction:
                distortion, level, img = None, 0, crop
            else:
                distortion = recipe.pretrain_types[int(rng.integers(len(recipe.pretrain_types)))]
                level = int(rng.choice(5, p=np.asarray(recipe.level_weights) / sum(recipe.level_weights))) + 1
                img = apply_distortion(crop, distortion, level, rng=int(rng.integers(2 ** 63 - 1)))
            if recipe.captions == "no_quality":
                captions.append(content_caption(rng, content.phrase, content.scene))
            else:
                captions.append(quality_caption(rng, content.phrase, content.scene, distortion, level,
                                                recipe.antonym_fraction, recipe.content_fraction))
            images.append(img)
            levels.append(level)
            scenes.append(content.scene.replace(" ", "_"))
    if recipe.captions == "shuffled":
        order = rng.permutation(len(captions))
        captions = [captions[i] for i in order]
    return images, captions, levels, scenes
