"""What the arms of one protocol run share: the frozen model, decoded images, frozen CLIP features, classical
statistics and auto meta checkpoints. Frozen quantities depend only on the image, so every split reuses them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import baselines
from ..data.image_cache import ImageCache

__all__ = ["ModelFactory", "ProtocolCache"]

ModelFactory = Callable[..., Any]
"""``() -> IQAModel`` (a fresh model) and ``(prompts=PromptConfig | checkpoint) -> IQAModel``."""


class ProtocolCache:
    """What methods share within one run: the frozen model, decoded images, frozen CLIP features, classical
    statistics and auto meta checkpoints. Frozen quantities depend only on the image, so every split reuses them.

    ``image_budget_bytes`` bounds the decoded images kept in memory (RGB bytes); beyond it the least recently used
    images are dropped and re-read when needed (:class:`~clipiqa.data.image_cache.ImageCache`).
    """

    def __init__(self, image_budget_bytes: int = 1_500_000_000):
        self.image_budget_bytes = image_budget_bytes
        self._images = ImageCache(max_bytes=image_budget_bytes)
        self._frozen = None
        self._features: dict[str, np.ndarray] = {}
        self._classical: dict[str, dict] = {}
        self.meta_checkpoints: dict[tuple, Path | Exception] = {}
        self.workdir: Path | None = None

    def images(self, paths: Sequence[str]) -> list:
        """Decoded RGB PIL images, kept while the memory budget allows."""
        return self._images.get(paths)

    def frozen_model(self, model_factory: ModelFactory):
        """One model for the frozen methods (used with adapters off only)."""
        if self._frozen is None:
            self._frozen = model_factory()
        return self._frozen

    def clip_features(self, model_factory: ModelFactory, paths: Sequence[str], batch_size: int) -> np.ndarray:
        """Frozen, normalised CLIP features of ``paths`` (computed once per image)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._features]
        if todo:
            feats = baselines.clip_features(self.frozen_model(model_factory), todo, batch_size,
                                            images=self.images(todo))
            self._features.update(zip(todo, feats))
        return np.stack([self._features[p] for p in paths])

    def classical(self, paths: Sequence[str]) -> pd.DataFrame:
        """Classical statistics of ``paths`` (computed once per image)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._classical]
        if todo:
            table = baselines.classical_table(todo, images=self.images(todo))
            self._classical.update((r["path"], r) for r in table.to_dict("records"))
        return pd.DataFrame([self._classical[p] for p in paths])
