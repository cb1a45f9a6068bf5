"""The lesson's training recipe (``LessonRecipe``, stored in ``clipiqa/presets/lesson.json`` with the held-out
lists) and the hash of everything that determines the weights."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from ..configs import from_dict, invalid
from ..data.demo import PHOTOS
from ..data.distortions import DISTORTIONS
from ..data.procedural import KINDS, PHRASES
from ..prompts import PromptConfig, scene_prompts
from .captions import (ANTONYMS, CLASS_CAPTIONS, CLEAN_WORDS, P_GOOD, PHOTO_PHRASES, PHOTO_SCENES, SEVERITY,
                       TYPE_WORDS)

FORMAT = "clipiqa-lesson-1"
CAPTION_MODES = ("full", "no_quality", "shuffled")


@dataclass(frozen=True)
class LessonRecipe:
    """How the lesson model is trained (validated at construction; stored in the preset JSON).

    pretrain_types: distortion types seen in training; heldout_types: kept for held-out experiments.
    train_photos / heldout_photos, train_kinds / heldout_kinds: contents seen / kept out (procedural kinds).
    captions: "full" (the recipe); "no_quality" and "shuffled" are deliberately broken variants (captions
    without quality words / shuffled across the batch) that the tests use to show learning can fail.
    scene_weight: weight of the scene captions' loss. Every image also has a second caption naming its content's
    scene with the scene branch's own prompts ("a photo of a human", the nine released scenes), matched against
    the nine scene captions (the image-to-text half of CLIP's loss, with the scene captions as the candidates);
    0 = no scene captions (the broken "scene-less" variant: its scene teacher stays near uniform).
    scene_smoothing: label smoothing of that loss. Without it the scene loss keeps pulling every image onto its
    scene's caption (measured: the teacher became confident, but the quality captions' loss stayed at chance and
    zero-shot SRCC fell to 0.02); with it the pull stops at a bounded confidence.
    scene_from: the step from which scene captions join (quality first, then scenes).
    logit_scale: the temperature the toy is stored with (0 = the one training left, about 14, open_clip's init
    1/0.07 barely moves in 1000 steps); real CLIP checkpoints are stored at 100. It changes no ranking (zero-shot
    SRCC, the share of the scene logits' variance content explains): only how sharp the heads' probabilities are,
    so it sets how confident the scene teacher QGR distils is, as real CLIP's temperature does for it.
    """

    pretrain_types: tuple[str, ...]
    heldout_types: tuple[str, ...]
    train_photos: tuple[str, ...]
    heldout_photos: tuple[str, ...]
    train_kinds: tuple[str, ...]
    heldout_kinds: tuple[str, ...]
    seed: int = 0
    steps: int = 400
    groups: int = 16
    variants: int = 4
    lr: float = 2e-3
    warmup: int = 40
    clean_fraction: float = 0.25
    antonym_fraction: float = 0.3
    content_fraction: float = 0.0
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    photo_fraction: float = 0.5
    procedural_instances: int = 12
    render_size: int = 256
    captions: str = "full"
    scene_weight: float = 0.0
    scene_smoothing: float = 0.0
    scene_from: int = 0
    logit_scale: float = 0.0
    threads: int = 1
    store_dtype: str = "float16"

    def __post_init__(self) -> None:
        for name in ("pretrain_types", "heldout_types", "train_photos", "heldout_photos", "train_kinds",
                     "heldout_kinds", "level_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check_names("pretrain_types", DISTORTIONS, need=True)
        self._check_names("heldout_types", DISTORTIONS)
        self._check_names("train_photos", PHOTOS, need=True)
        self._check_names("heldout_photos", PHOTOS)
        self._check_names("train_kinds", KINDS, need=True)
        self._check_names("heldout_kinds", KINDS)
        for a, b in (("pretrain_types", "heldout_types"), ("train_photos", "heldout_photos"),
                     ("train_kinds", "heldout_kinds")):
            both = set(getattr(self, a)) & set(getattr(self, b))
            if both:
                invalid("LessonRecipe", b, getattr(self, b), f"remove {sorted(both)}: they are also in {a}")
        missing_words = [t for t in self.pretrain_types if t not in TYPE_WORDS]
        if missing_words:
            invalid("LessonRecipe", "pretrain_types", self.pretrain_types,
                    f"captions have no quality words for {missing_words}; add them to TYPE_WORDS or use "
                    f"types from {sorted(TYPE_WORDS)}")
        for name in ("steps", "groups", "variants", "procedural_instances", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                invalid("LessonRecipe", name, value, "use a positive integer")
        if not isinstance(self.warmup, int) or not 0 <= self.warmup <= self.steps:
            invalid("LessonRecipe", "warmup", self.warmup, f"use an integer from 0 to steps ({self.steps})")
        if not self.lr > 0:
            invalid("LessonRecipe", "lr", self.lr, "use a positive learning rate (e.g. 2e-3)")
        if not (isinstance(self.scene_weight, (int, float)) and 0 <= self.scene_weight < float("inf")):
            invalid("LessonRecipe", "scene_weight", self.scene_weight,
                    "use a finite weight >= 0 (0 = no scene captions)")
        if not isinstance(self.scene_from, int) or not 0 <= self.scene_from < self.steps:
            invalid("LessonRecipe", "scene_from", self.scene_from, f"use an integer step from 0 to {self.steps - 1}")
        if not (isinstance(self.logit_scale, (int, float)) and (self.logit_scale == 0 or 1 <= self.logit_scale <= 100)):
            invalid("LessonRecipe", "logit_scale", self.logit_scale,
                    "use 0 (keep the trained temperature) or a scale from 1 to 100 (CLIP's own maximum)")
        for name in ("clean_fraction", "photo_fraction", "antonym_fraction", "content_fraction", "scene_smoothing"):
            if not 0 <= getattr(self, name) <= 1:
                invalid("LessonRecipe", name, getattr(self, name), "use a fraction in [0, 1]")
        if len(self.level_weights) != 5 or min(self.level_weights) < 0 or sum(self.level_weights) <= 0:
            invalid("LessonRecipe", "level_weights", self.level_weights,
                    "give 5 non-negative weights (levels 1..5), not all zero")
        if not isinstance(self.render_size, int) or self.render_size < 32:
            invalid("LessonRecipe", "render_size", self.render_size, "use an integer of at least 32 pixels")
        if self.captions not in CAPTION_MODES:
            invalid("LessonRecipe", "captions", self.captions, f"use one of {CAPTION_MODES}")
        if self.store_dtype not in ("float16", "float32"):
            invalid("LessonRecipe", "store_dtype", self.store_dtype, "use 'float16' or 'float32'")

    def _check_names(self, name: str, valid: Any, need: bool = False) -> None:
        value = getattr(self, name)
        unknown = [v for v in value if v not in valid]
        if unknown or (need and not value):
            invalid("LessonRecipe", name, value, f"use a non-empty subset of: {', '.join(valid)}" if need
                    else f"unknown {unknown}; valid: {', '.join(valid)}")

    @property
    def batch_size(self) -> int:
        return self.groups * self.variants

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data) -> "LessonRecipe":
        return from_dict(cls, data)


def config_hash(model_cfg: dict[str, Any], recipe: LessonRecipe) -> str:
    """Everything that determines the weights: model config, recipe, distortion parameters, caption tables."""
    # fields at their neutral value (no scene captions) stay out, so weights made before they existed stay current
    neutral = {"scene_weight": 0.0, "scene_smoothing": 0.0, "scene_from": 0, "logit_scale": 0.0}
    blob = {
        "format": FORMAT, "model_cfg": model_cfg,
        "recipe": {k: v for k, v in recipe.to_dict().items() if not (k in neutral and v == neutral[k])},
        "distortions": {t: repr(DISTORTIONS[t].levels) for t in recipe.pretrain_types},
        "captions": [SEVERITY, CLEAN_WORDS, {t: TYPE_WORDS[t] for t in recipe.pretrain_types}, P_GOOD,
                     ANTONYMS, CLASS_CAPTIONS, PHOTO_PHRASES, PHOTO_SCENES, PHRASES]
        + ([scene_prompts(PromptConfig())] if recipe.scene_weight else []),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:16]
