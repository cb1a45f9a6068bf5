"""Backbone presets: small JSON files in ``clipiqa/presets/`` (model configs as data)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .caveats import CaveatOfWeights
KINDS = ("preset", "tag", "hf-hub", "local")
DEFAULT_MODEL = "vitb16-openai"
"""The model used when none is named (the paper's backbone): ``load_model()``, ``Session``, the notebooks' real
mode, ``run_protocol``, ``clipiqa adapt`` / ``bench`` and the compare panel."""


@dataclass(frozen=True)
class Preset(CaveatOfWeights):
    """A named backbone: which open_clip architecture, and where its weights come from."""

    name: str
    description: str
    arch: str
    tag: str | None = None
    hf_hub: str | None = None
    quick_gelu: bool = False
    random_init: bool = False
    model_cfg: dict[str, Any] | None = field(default=None, compare=False)
    toy: bool = False  # trained by clipiqa on synthetic data (the ``lesson`` preset): real, but a toy
    lesson: dict[str, Any] | None = field(default=None, compare=False)  # clipiqa.lesson.LessonRecipe fields
    frozen_only: bool = False  # CLIP-IQA's zero-shot configuration (rn50-openai): no adapters (clipiqa.clip_iqa_rn50)
    kind: str = "preset"  # "preset" (a JSON file here), "tag" (ARCH:TAG), "hf-hub" (hf-hub:ORG/REPO), "local"
    folder: str | None = None  # kind "local": the open_clip folder

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Preset {self.name!r}: field 'kind' is {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.lesson is not None and (self.model_cfg is None or not self.toy or self.random_init):
            raise ValueError(f"Preset {self.name!r}: a preset trained by clipiqa.lesson ('lesson' is set) needs "
                             "'model_cfg', 'toy': true and 'random_init': false")
        if not self.random_init and self.lesson is None and not self.tag and self.kind in ("preset", "tag"):
            raise ValueError(f"Preset {self.name!r}: field 'tag' is empty; a preset with real weights needs an "
                             "open_clip pretrained tag (e.g. 'openai')")


    @property
    def weights_source(self) -> str:
        if self.random_init:
            return "random init (no weights; scores are meaningless)"
        if self.lesson is not None:
            return ("trained here by clipiqa.lesson (no download): the committed clipiqa/presets/lesson.safetensors, "
                    "else built on first use into $CLIPIQA_CACHE (~/.cache/clipiqa), a few minutes on 2 cores")
        if self.kind == "local":
            return f"the local open_clip folder {self.folder}"
        if self.kind == "hf-hub":
            return f"the hub repository {self.hf_hub} (Hugging Face cache first), or a local folder via weights="
        return f"open_clip tag {self.arch}:{self.tag} (hub: {self.hf_hub}), or a local file/folder via weights="


def _load_all() -> dict[str, Preset]:
    presets = {}
    for entry in resources.files("clipiqa").joinpath("presets").iterdir():
        if entry.name.endswith(".json"):
            preset = Preset(**json.loads(entry.read_text()))
            presets[preset.name] = preset
    return dict(sorted(presets.items()))


PRESETS: dict[str, Preset] = _load_all()


def get_preset(name: str) -> Preset:
    """The preset ``name``, or what any other model name means (``ARCH:TAG``, ``hf-hub:ORG/REPO``, a local open_clip
    folder: :func:`clipiqa.zoo.resolve_model`); an unknown name raises ValueError listing the presets."""
    if str(name).lower() in PRESETS:
        return PRESETS[str(name).lower()]
    from .zoo import resolve_model  # here, not at the top: zoo imports this module (PRESETS)
    return resolve_model(name)
