"""The model of a Session: the preset and weights it loads (on first use, with the active checkpoint), what its
scores are worth (random init, toy), scoring, and the checkpoints adaptation saved in the session's folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..scoring import score_files
from .checkpoints import checkpoint_preset, checkpoint_table
from .state import SessionState

# clipiqa.factory, clipiqa.weights and clipiqa.presets are imported on first use, not here: clipiqa.presets reads
# its JSON files through importlib.resources.files("clipiqa") at import, which fails in processes that only rate
# and import clipiqa.session without clipiqa/__init__ (tests/labelstore_workers.py: four spawned children).


class Models:
    """Loads, holds and switches the Session's model; ``model`` may be an already loaded ``IQAModel``."""

    def __init__(self, state: SessionState, model: Any = None):
        self.state = state
        self._model = model
        self.last_checkpoint: str | None = None  # the checkpoint the last adapt() of this object saved

    @property
    def random_init(self) -> bool:
        """True when the model has random-init weights (``tiny``): its scores are meaningless."""
        if self._model is not None:
            return bool(self._model.random_init)
        from ..weights import weights_are_random  # on first use: see the note at the imports
        return weights_are_random(self.state.model_name, self.state.weights)  # random weights under a real name too

    @property
    def toy(self) -> bool:
        """True when the model is the ``lesson`` toy (trained by clipiqa on synthetic distortions)."""
        if self._model is not None:
            return bool(self._model.source.toy)
        from ..presets import get_preset  # on first use: see the note at the imports
        return get_preset(self.state.model_name).toy and self.state.weights is None

    @property
    def model(self):
        """The session's ``IQAModel``, loaded on first use (with the active checkpoint, if any)."""
        with self.state.lock:
            if self._model is None:
                from ..factory import load_model  # on first use: see the note at the imports
                ckpt = self._usable_checkpoint()
                self._model = load_model(self.state.model_name, self.state.weights, self.state.device,
                                         prompts=str(ckpt) if ckpt else None)
            return self._model

    def _usable_checkpoint(self) -> Path | None:
        """The active checkpoint's folder, or None (and it is deactivated) when it is missing or was made for
        another preset (e.g. a smoke-mode ``tiny`` checkpoint after switching to real weights)."""
        name = self.state.active_checkpoint
        if not name:
            return None
        ckpt = self.state.checkpoints_dir / name
        if checkpoint_preset(ckpt) != self.state.model_name:
            self.state.active_checkpoint = None
            self.state.save_settings()
            return None
        return ckpt

    def fresh_model(self, device: str | None = None):
        """A newly loaded zero-shot model with the session's preset and weights."""
        from ..factory import load_model  # on first use: see the note at the imports
        return load_model(self.state.model_name, self.state.weights, device or self.state.device)

    @property
    def adapted(self) -> bool:
        """True when a checkpoint is active (the session scores with adapted prompts)."""
        return self.state.active_checkpoint is not None

    def score(self, paths: Iterable[str] | None = None, zero_shot: bool = False, batch_size: int = 32
              ) -> pd.DataFrame:
        """Score images (default: all of the session's): with the active checkpoint when there is one, else (or
        with ``zero_shot``) zero-shot CLIP with antonym prompts. Never with untrained prompts."""
        model = self.model
        paths = list(self.state.view().images if paths is None else paths)
        if zero_shot or not self.adapted:
            with model.adapters_off():
                return score_files(model, paths, batch_size=batch_size)
        return score_files(model, paths, batch_size=batch_size)

    def checkpoints(self) -> pd.DataFrame:
        """The session's checkpoints, oldest first: name, path, created, labels used, stopped, SRCC, random-init."""
        return checkpoint_table(self.state.checkpoints_dir, self.state.active_checkpoint)

    def use_checkpoint(self, name: str | None) -> None:
        """Make a saved checkpoint (or None: zero-shot) the session's model."""
        with self.state.lock:
            if name is not None and not (self.state.checkpoints_dir / name).is_dir():
                raise FileNotFoundError(f"no checkpoint {name!r} in {self.state.checkpoints_dir}; "
                                        f"have: {list(self.checkpoints()['name'])}")
            self.state.active_checkpoint = name
            self._model = None
            self.state.save_settings()

    def activate(self, model, name: str) -> None:
        """Make ``model``, just adapted and saved as checkpoint ``name``, the session's model."""
        with self.state.lock:
            self._model = model
            self.state.active_checkpoint = name
            self.state.save_settings()


__all__ = ["Models"]
