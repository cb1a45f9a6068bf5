"""What the parts of a :class:`~clipiqa.session.Session` share: the folder's files, its label store, the settings
kept in ``settings.json``, who rates through this Session object, and that rater's view of the database
(recomputed whenever anyone committed a change, so it shows other writers' ratings)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..labelstore import DB_NAME, LabelStore
from .files import check_rater, json_text, settings_dict, write_if_changed
from .scale import Scale
from .view import View, view_of

LABELS = "labels.csv"
SETTINGS = "settings.json"
CHECKPOINTS = "checkpoints"


class SessionState:
    """The folder, its :class:`~clipiqa.labelstore.LabelStore`, the settings and the rater of one Session
    object. ``lock`` guards every change a part makes (a Session is used from a panel's worker thread too)."""

    def __init__(self, folder: Path, scale: Scale, *, created: str, model_name: str, weights: str | None,
                 device: str | None, checkpoint: str | None, repeat_share: float):
        self.folder = folder
        self.lock = threading.RLock()
        self.store = LabelStore(self.database_path, export=self.labels_path)
        self.scale = scale
        self.created = created
        self.model_name = model_name
        self.weights = weights
        self.device = device
        self.active_checkpoint = checkpoint
        self.repeat_share = repeat_share
        self._rater: str | None = None  # set by the Session once the database is ready
        self._view_key: Any = None
        self._view_cache: View | None = None

    @property
    def labels_path(self) -> Path:
        return self.folder / LABELS

    @property
    def database_path(self) -> Path:
        return self.folder / DB_NAME

    @property
    def checkpoints_dir(self) -> Path:
        return self.folder / CHECKPOINTS

    @property
    def rater(self) -> str:
        return self._rater

    @rater.setter
    def rater(self, name: str) -> None:
        self._rater = check_rater(name)

    def save_settings(self) -> None:
        """Write settings.json when it changed (the image list and ratings live in the database)."""
        write_if_changed(self.folder / SETTINGS, json_text(settings_dict(
            self.created, self.scale.to_dict(), self.model_name, self.weights, self.device, self.active_checkpoint,
            self.repeat_share)))

    def view(self) -> View:
        """This rater's view of the database, recomputed whenever anyone committed a change."""
        with self.lock:
            key = (self.store.version(), self._rater)
            if key != self._view_key or self._view_cache is None:
                self._view_cache = view_of(self.store.snapshot(), key[1])
                self._view_key = key
            return self._view_cache

    def cached_view(self) -> View | None:
        """The last view computed, possibly stale (images are only ever added, so a path found in it stays valid)."""
        return self._view_cache


__all__ = ["SessionState", "LABELS", "SETTINGS", "CHECKPOINTS"]
