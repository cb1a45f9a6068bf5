"""Backbone presets: small JSON files in ``clipiqa/presets/`` (model configs as data)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named backbone: which open_clip architecture, and where its weights come from."""

    name: str
    description: str
    arch: str
    tag: str | None = None
    hf_hub: str | None = None
    quick_gelu: bool = False
    random_init: bool = False
    model_cfg: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.random_init and not self.tag:
            raise ValueError(f"Preset {self.name!r}: field 'tag' is empty; a preset with real weights needs an "
                             "open_clip pretrained tag (e.g. 'openai')")

    @property
    def weights_source(self) -> str:
        if self.random_init:
            return "random init (no weights; scores are meaningless)"
        return f"open_clip tag {self.arch}/{self.tag} (hub: {self.hf_hub}), or a local file/folder via weights="


def _load_all() -> dict[str, Preset]:
    presets = {}
    for entry in resources.files("clipiqa").joinpath("presets").iterdir():
        if entry.name.endswith(".json"):
            preset = Preset(**json.loads(entry.read_text()))
            presets[preset.name] = preset
    return dict(sorted(presets.items()))


PRESETS: dict[str, Preset] = _load_all()


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown model preset {name!r}; available presets: {', '.join(PRESETS)}. "
                         "`clipiqa models` lists them with their weight sources.") from None
