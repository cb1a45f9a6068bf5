"""What a Session suggests to label next: the images a line monitor queued first, then diverse or uncertain
picks (the rules are :mod:`clipiqa.session.suggest`'s, described in the :mod:`clipiqa.session` docstring), with
each image's zero-shot features and score computed once and kept."""
from __future__ import annotations

import os

import numpy as np

from ..pilot.watch import queued_requests
from ..scoring import score_files
from .files import image_rows
from .models import Models
from .state import SessionState
from .suggest import DIVERSE_UNTIL, check_strategy, encode_zero_shot, suggest


class Suggestions:
    """The suggestion rules over the Session's images, with the caches they need: ``features`` (normalised
    zero-shot image embeddings), ``zero_shot`` (zero-shot logit margins) and ``bad_images`` (path -> why it
    could not be read), filled by :meth:`encode`."""

    def __init__(self, state: SessionState, models: Models):
        self.state = state
        self.models = models
        self.features: dict[str, np.ndarray] = {}
        self.zero_shot: dict[str, float] = {}
        self.bad_images: dict[str, str] = {}

    def encode(self, paths: list[str]) -> None:
        """Fill the caches for ``paths`` (only the images not encoded yet are read)."""
        if any(p not in self.features and p not in self.bad_images for p in paths):
            encode_zero_shot(self.models.model, paths, self.features, self.zero_shot, self.bad_images)

    def _adapted_scores(self, paths: list[str]) -> dict[str, float]:
        table = score_files(self.models.model, list(paths))
        return {p: m for p, m in zip(table["path"], table["logit_margin"]) if np.isfinite(m)}

    def suggest_next(self, k: int = 1, diverse_until: int = DIVERSE_UNTIL, strategy: str = "auto") -> list[str]:
        """Up to ``k`` unlabelled, unskipped images to label next (best first).

        strategy: ``"auto"`` (diverse while fewer than ``diverse_until`` labels, then uncertain), ``"diverse"``
        or ``"uncertain"``. See the :mod:`clipiqa.session` docstring for the exact rules.
        """
        check_strategy(strategy)
        if k < 1:
            return []
        queued = self.line_requests()
        if len(queued) >= k:
            return queued[:k]
        view = self.state.view()
        candidates = [p for p in view.images if p not in view.done and p not in queued]
        if not candidates:
            return queued
        labelled = list(view.labels)
        self.encode(candidates + labelled)
        adapted = self._adapted_scores if self.models.adapted else None
        return queued + suggest(candidates, labelled, self.features, self.zero_shot, view.images, k - len(queued),
                                diverse_until, strategy, adapted)

    def line_requests(self) -> list[str]:
        """Images a line monitor queued for labels (``clipiqa watch``: near the gate's threshold, or from a drifted
        window) that this rater has not done: they come first, and join the session's images when new."""
        queued = [os.path.abspath(p) for p in queued_requests(self.state.database_path) if os.path.isfile(p)]
        known = set(self.state.view().images)
        new = [p for p in queued if p not in known]
        if new:
            self.state.store.add_images(image_rows(new))
        done = self.state.view().done
        return [p for p in dict.fromkeys(queued) if p not in done]


__all__ = ["Suggestions"]
