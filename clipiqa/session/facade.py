"""``Session``: the one public entry of a labelling-and-adaptation project in one folder. It holds the state
(folder, scale, rater, position, model, caches) and delegates to plain functions: files and settings
(:mod:`.store`), format-1 migration (:mod:`.migrate`), the rater's view of the database (:mod:`.view`), what to
label next (:mod:`.suggest`) and checkpoints (:mod:`.checkpoints`).

Over ~450 lines on purpose: it is the whole public API of a session, each method with the docstring users read
(``help(Session)``); the methods themselves are a few lines each."""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..agreement import human_ceiling
from ..configs import invalid
from ..data import read_labels
from ..labelstore import DB_NAME, LabelNotSaved, LabelStore, cleanup_temporaries
from ..scoring import score_files
from ..pilot.watch import queued_requests
from ..caveats import RANDOM_INIT
from .checkpoints import (checked_test, checkpoint_preset, checkpoint_table, new_checkpoint_dir, save_adapted,
                          split_labels)
from .migrate import migrate_format1
from .recover import LabelsRecovered, database_state, recover_from_export
from .scale import as_scale, check_fits_scale
from .files import (DEFAULT_RATER, REPEAT_SHARE, SESSION_FORMAT, check_rater, check_repeat_share, image_rows,
                    json_text, now_text, read_json, settings_dict, write_if_changed)
from .suggest import DIVERSE_UNTIL, check_strategy, encode_zero_shot, pick_repeat, suggest
from .view import View, counts_of, next_not_done, progress_line, view_of

# Imported on first use, not here: clipiqa.presets (so clipiqa.factory too) reads its JSON files through
# importlib.resources.files("clipiqa") at import, which fails in processes that only rate and import
# clipiqa.session without clipiqa/__init__ (tests/labelstore_workers.py: four spawned children); and
# clipiqa.finetune costs 2.9 s per such process (measured on the 2-core machine), a model-side cost.


def _default_model() -> str:
    from ..presets import DEFAULT_MODEL  # on first use: see the note at the imports
    return DEFAULT_MODEL


class Session:
    """Images, ratings, model and checkpoints of one labelling/adaptation project, persisted in ``folder``.

    folder: where everything is saved (created if needed). An existing session there is resumed: its ratings,
        position and settings are kept (never wiped); images given here are added to its image list. A
        format-1 session (``labels.csv`` with ``path,score,content_id`` plus ``state.json``) is migrated into
        ``labels.sqlite`` on first use, every label kept (as ratings of the rater ``"default"``).
    images: None (use the stored list), a list of paths, a folder (all images below it), or a table with a
        ``path`` column and optionally ``content_id`` (groups of images of the same scene; used for splits).
    scale: the rating scale (default ACR 1 bad .. 5 excellent); see :class:`Scale`.
    model_name / weights / device: passed to ``clipiqa.load_model`` when the model is first needed.
        ``model_name="tiny"`` is a random-init model for smoke runs: its numbers are meaningless.
    model: an already loaded ``IQAModel`` to use instead of loading one (e.g. shared between sessions);
        ``adapt`` still starts from a freshly loaded ``model_name``.
    rater: who rates through this object (see :attr:`rater`); None: the only rater the folder knows, else
        ``"default"``.
    repeat_share: the share of blind repeats :meth:`advance` mixes in (test-retest; 0 = none; default 0.1,
        stored in the session).

    Any number of Session objects, kernels and processes may rate one folder at once: each rating is one
    SQLite transaction (:mod:`clipiqa.labelstore`), and every view (``images``, ``labels``, ``counts``,
    ``next_unlabelled``, ``labelled_table``) is read from the database, so it shows the other writers' ratings.
    """

    LABELS = "labels.csv"
    DATABASE = DB_NAME
    SETTINGS = "settings.json"
    STATE = "state.json"  # format 1 only: read once when migrating
    LEGACY_BACKUP = "labels-format1.csv"
    CHECKPOINTS = "checkpoints"

    def __init__(self, folder: str | os.PathLike, images: Any = None, scale: Any = None,
                 model_name: str | None = None, weights: str | None = None, device: str | None = None,
                 model: Any = None, *, rater: str | None = None, repeat_share: float | None = None):
        self.folder = Path(folder).expanduser().resolve()
        self._lock = threading.RLock()
        stored = read_json(self.folder / self.SETTINGS) or {}
        if stored and stored.get("format") != SESSION_FORMAT:
            raise ValueError(f"{self.folder / self.SETTINGS} is not a clipiqa session settings file")
        rows = image_rows(images)
        found = database_state(self.folder / self.DATABASE)  # "missing", "empty (0 bytes)" or None
        db_existed = found != "missing"
        if not rows and not stored and not db_existed:
            raise ValueError(f"no images for the session in {self.folder}: give image files, a folder of images, "
                             "or a table with a 'path' column as images=")
        format1 = int(stored.get("version", 1)) < 2 if stored else (not db_existed and self.labels_path.is_file())
        self.folder.mkdir(parents=True, exist_ok=True)
        cleanup_temporaries(self.folder, [self.LABELS, self.SETTINGS, self.STATE])
        self.scale = as_scale(scale if scale is not None else stored.get("scale"))
        self.model_name = model_name or stored.get("model_name") or _default_model()
        self.weights = weights if weights is not None else stored.get("weights")
        self.device = device if device is not None else stored.get("device")
        self.active_checkpoint: str | None = stored.get("checkpoint")
        self.created = stored.get("created") or now_text()
        self.repeat_share = check_repeat_share(repeat_share if repeat_share is not None
                                               else stored.get("repeat_share", REPEAT_SHARE))
        self.store = LabelStore(self.folder / self.DATABASE, export=self.labels_path)
        self._view_key: Any = None
        self._view_cache: View | None = None
        self.recovery: str | None = None  # what was done when the database was found lost (also warned)
        if format1 and self.store.get_meta("migrated") is None:
            migrate_format1(self.store, stored, self.labels_path, self.folder / self.STATE,
                            self.folder / self.LEGACY_BACKUP, self.scale.name)
        elif self.labels_path.is_file():  # a lost database beside an export with rows: import, never overwrite it
            self.recovery = recover_from_export(self.store, self.labels_path, self.scale.name, found)
            if self.recovery:
                warnings.warn(self.recovery, LabelsRecovered, stacklevel=3)
        self.store.add_images(rows)
        if not self.images:
            raise ValueError(f"no images for the session in {self.folder}: give image files, a folder of images, "
                             "or a table with a 'path' column as images=")
        check_fits_scale(self.scale, [(r.path, r.score) for r in self.store.snapshot().ratings])
        self._rater = check_rater(rater) if rater is not None else self._only_rater()
        self._repeat_pending: str | None = None
        self._undoable: dict[str, list[tuple[str, int]]] = {}  # per rater: this object's ratings and skips
        self._current = self._restore_current()
        self._model = model
        self._features: dict[str, np.ndarray] = {}
        self._zero_shot: dict[str, float] = {}
        self._bad_images: dict[str, str] = {}
        self.last_checkpoint: str | None = None  # the checkpoint the last adapt() of this object saved
        self._save_settings()
        if not self.store.export_is_current():  # missing (a session without labels has an empty export too),
            self.store.export()  # or left ahead of the database by a writer killed before its commit

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def open(cls, folder: str | os.PathLike, **overrides: Any) -> "Session":
        """Resume the session saved in ``folder`` (ratings, position, settings); ``overrides`` as in
        ``__init__``."""
        if not (Path(folder).expanduser() / cls.SETTINGS).is_file():
            raise FileNotFoundError(f"no clipiqa session in {folder}: {cls.SETTINGS} is missing. Start one with "
                                    "Session(folder, images=...)")
        return cls(folder, **overrides)

    def _only_rater(self) -> str:
        raters = self._view().raters
        return raters[0] if len(raters) == 1 else DEFAULT_RATER

    def _restore_current(self) -> str:
        v = self._view()
        where = v.positions.get(self._rater)
        return where if where in v.index else v.images[0]

    # ------------------------------------------------------------------ files
    @property
    def labels_path(self) -> Path:
        """``labels.csv``: the export (per image ``mos, mos_std, n_ratings, content_id``), rewritten after every
        rating; ``clipiqa.data.read_labels`` and ``clipiqa adapt --labels`` read it."""
        return self.folder / self.LABELS

    @property
    def database_path(self) -> Path:
        """``labels.sqlite``: every rating (see :mod:`clipiqa.labelstore`)."""
        return self.folder / self.DATABASE

    @property
    def checkpoints_dir(self) -> Path:
        return self.folder / self.CHECKPOINTS

    def _save_settings(self) -> None:
        """Write settings.json when it changed (the image list and ratings live in the database)."""
        write_if_changed(self.folder / self.SETTINGS, json_text(settings_dict(
            self.created, self.scale.to_dict(), self.model_name, self.weights, self.device, self.active_checkpoint,
            self.repeat_share)))

    def export(self) -> Path:
        """Rewrite ``labels.csv`` from the database now (it is also rewritten after every rating)."""
        return self.store.export()

    def close(self) -> None:
        """Close the database connection (a later call opens it again)."""
        self.store.close()

    # ------------------------------------------------------------------ what the database says now
    def _view(self) -> View:
        """This rater's view of the database, recomputed whenever anyone committed a change."""
        with self._lock:
            key = (self.store.version(), getattr(self, "_rater", None))
            if key != self._view_key or self._view_cache is None:
                self._view_cache = view_of(self.store.snapshot(), key[1])
                self._view_key = key
            return self._view_cache

    @property
    def images(self) -> list[str]:
        """The session's images in order (read-only: add images with ``Session(folder, images=[...])``)."""
        return self._view().images

    @property
    def content_ids(self) -> dict[str, str]:
        return self._view().content_ids

    @property
    def labels(self) -> dict[str, dict[str, Any]]:
        """Per labelled image, over all raters: ``score`` (the MOS), ``mos_std`` (None for one rater),
        ``n_ratings``, ``content_id``."""
        return self._view().labels

    @property
    def my_labels(self) -> dict[str, float]:
        """This rater's label (latest non-repeat rating) per image they rated."""
        return self._view().mine

    @property
    def skipped(self) -> list[str]:
        """The images this rater skipped (and has not labelled since), in skip order."""
        return self._view().skipped

    @property
    def raters(self) -> list[str]:
        """Everyone who rated or skipped in this session."""
        return self._view().raters

    @property
    def rater(self) -> str:
        """Who rates through this object; each rating is stored under this name. Setting it (the label panel's
        Rater box does) switches to that rater's labels, skips and undo history."""
        return self._rater

    @rater.setter
    def rater(self, name: str) -> None:
        with self._lock:
            self._rater = check_rater(name)
            self._repeat_pending = None

    @property
    def repeat_pending(self) -> str | None:
        """The image :meth:`advance` chose as a blind repeat (its next rating is stored as a repeat)."""
        return self._repeat_pending if self._repeat_pending == self._current else None

    def ratings(self, include_undone: bool = False) -> pd.DataFrame:
        """Every rating, oldest first: ``id, image, rater, score, scale, time, is_repeat, undone``."""
        return self.store.ratings_table(include_undone)

    def agreement(self, n_boot: int = 1000, seed: int = 0):
        """The human ceiling of these ratings (inter-rater split-half SRCC with Spearman-Brown, test-retest
        SRCC of the blind repeats, bootstrap CIs): a :class:`clipiqa.agreement.Ceiling`."""
        return human_ceiling(self.ratings(), n_boot=n_boot, seed=seed)

    # ------------------------------------------------------------------ labelling
    @property
    def current(self) -> str | None:
        return self._current

    @property
    def position(self) -> int:
        return self._view().index[self._current]

    def _path(self, path: str | os.PathLike | None) -> str:
        if path is None:
            return self._current
        p = os.fspath(path)
        cached = self._view_cache
        if cached is not None and p in cached.index:  # images are only ever added: a cached hit stays valid
            return p
        index = self._view().index
        if p in index:
            return p
        absolute = os.path.abspath(p)
        if absolute not in index:
            raise KeyError(f"{p} is not one of this session's {len(index)} images; add it with "
                           "Session(folder, images=[...])")
        return absolute

    def label(self, path: str | os.PathLike | None, score: float, *, repeat: bool | None = None) -> None:
        """Rate ``path`` (None = the current image) with ``score`` on the session's scale, as :attr:`rater`.

        The rating is committed to the database (and the labels.csv export rewritten) when this returns; if the
        write fails nothing is stored and the error (:class:`~clipiqa.labelstore.LabelNotSaved`) propagates.
        repeat: store it as a blind repeat (default: when ``path`` is the repeat :meth:`advance` chose).
        """
        score = self.scale.check(score)
        with self._lock:
            p = self._path(path)
            is_repeat = (p == self.repeat_pending) if repeat is None else bool(repeat)
            if is_repeat and p not in self.my_labels:
                raise ValueError(f"{os.path.basename(p)} has no earlier rating by {self._rater!r} to repeat")
            row = self.store.add_rating(p, self._rater, score, self.scale.name, repeat=is_repeat)
            self._undoable.setdefault(self._rater, []).append(("rating", row))
            if is_repeat:
                self._repeat_pending = None

    def skip(self, path: str | os.PathLike | None = None) -> None:
        """Mark ``path`` (None = the current image) as skipped by this rater: not labelled, not suggested
        again. Skipping a blind repeat just passes it over."""
        with self._lock:
            p = self._path(path)
            if p == self.repeat_pending:
                self._repeat_pending = None
                return
            if p in self.skipped:
                return
            row = self.store.add_skip(p, self._rater)
            self._undoable.setdefault(self._rater, []).append(("skip", row))

    def undo(self) -> str | None:
        """Take back the last rating or skip made through this object as :attr:`rater` (a tombstone in the
        database); returns its image (now current) or None when there is nothing to undo.

        Only this object's own: another Session object, tab, kernel or process rating under the same name
        keeps its ratings, and a Session opened anew starts with nothing to undo."""
        with self._lock:
            mine, done = self._undoable.get(self._rater, []), None
            while mine and done is None:
                kind, row = mine[-1]
                done = self.store.undo(kind, row)
                mine.pop()  # after the undo committed (a failed one raises and keeps it)
            if done is None:
                return None
            self._go(done.path)
            self._repeat_pending = done.path if done.is_repeat else None
            return done.path

    def _go(self, path: str) -> str:
        self._current = path
        self._repeat_pending = None
        try:  # where this rater is, for resuming; best effort (a full disk must not stop browsing)
            self.store.set_position(self._rater, path)
        except LabelNotSaved:
            pass
        return path

    def goto(self, where: int | str | os.PathLike) -> str:
        """Make an image current (by index or path); returns its path. The position is saved."""
        with self._lock:
            if isinstance(where, (int, np.integer)):
                images = self.images
                if not 0 <= int(where) < len(images):
                    raise IndexError(f"image index {where} outside 0..{len(images) - 1}")
                return self._go(images[int(where)])
            return self._go(self._path(where))

    def step(self, delta: int) -> str:
        """Move ``delta`` images forward (negative: back), clamped to the ends."""
        return self.goto(min(max(self.position + delta, 0), len(self.images) - 1))

    def is_done(self, path: str) -> bool:
        """True when this rater labelled or skipped ``path``."""
        return path in self._view().done

    def next_unlabelled(self, after: int | None = None) -> str | None:
        """The first image after ``after`` (default: the current one), wrapping around, that this rater has
        neither labelled nor skipped (other writers' ratings count as soon as they are committed); None when
        every image is done."""
        v = self._view()
        return next_not_done(v, self.position if after is None else after)

    def advance(self, strategy: str = "next") -> str | None:
        """Go to what this rater should rate next; returns it, or None (and stays) when every image is done.

        Usually the next unlabelled image (``strategy="next"``: list order; ``"suggest"``: the first of
        :meth:`suggest_next`). With probability :attr:`repeat_share` it is instead a **blind repeat**: an image
        the rater labelled at least ``REPEAT_GAP`` labels ago (:func:`pick_repeat`); its rating is stored as a
        repeat (test-retest) and never enters the MOS. The label panel shows a repeat like a new image.
        """
        if strategy not in ("next", "suggest"):
            raise ValueError(f"strategy={strategy!r} is not allowed; use 'next' or 'suggest'")
        with self._lock:
            target = self.next_unlabelled()
            if target is None:
                return None
            v = self._view()
            repeat = pick_repeat(v.my_order, v.my_repeats, v.n_my_ratings, self.repeat_share, self._rater)
            if repeat is not None:
                self._go(repeat)
                self._repeat_pending = repeat
                return repeat
            if strategy == "suggest":
                target = (self.suggest_next(1) or [target])[0]
            return self._go(target)

    def counts(self) -> dict[str, int]:
        """This rater's ``labelled``, ``skipped``, ``to_go`` and the ``total`` of images; over all raters:
        ``rated_images``, ``ratings`` (repeats included) and ``raters``; this rater's ``repeats``."""
        return counts_of(self._view())

    def progress_text(self) -> str:
        return progress_line(self.counts(), self.raters, self._rater)

    def labelled_table(self) -> pd.DataFrame:
        """The labels as the common table (``path, mos, q, mos_std, content_id, ...``): the labels.csv export,
        rewritten from the database now and read back with ``clipiqa.data.read_labels`` on this session's
        scale (so what is on disk is what trains). ``mos`` is the mean over raters."""
        if not self.labels:
            df = pd.DataFrame(columns=["path", "mos", "q", "mos_std", "content_id", "distortion", "level"])
            df.attrs.update(score_range=self.scale.range, dataset="custom")
            return df
        self.store.export()
        df = read_labels(self.labels_path, score_range=self.scale.range, higher_better=self.scale.higher_better)
        df.attrs["scale"] = self.scale.name
        return df

    # ------------------------------------------------------------------ model
    @property
    def random_init(self) -> bool:
        """True when the model has random-init weights (``tiny``): its scores are meaningless."""
        if self._model is not None:
            return bool(self._model.random_init)
        from ..weights import weights_are_random  # on first use: see the note at the imports
        return weights_are_random(self.model_name, self.weights)  # also random weights under a real preset's name

    @property
    def toy(self) -> bool:
        """True when the model is the ``lesson`` toy (trained by clipiqa on synthetic distortions)."""
        if self._model is not None:
            return bool(self._model.source.toy)
        from ..presets import get_preset  # on first use: see the note at the imports
        return get_preset(self.model_name).toy and self.weights is None

    @property
    def model(self):
        """The session's ``IQAModel``, loaded on first use (with the active checkpoint, if any)."""
        with self._lock:
            if self._model is None:
                from ..factory import load_model  # on first use: see the note at the imports
                ckpt = self._usable_checkpoint()
                self._model = load_model(self.model_name, self.weights, self.device,
                                         prompts=str(ckpt) if ckpt else None)
            return self._model

    def _usable_checkpoint(self) -> Path | None:
        """The active checkpoint's folder, or None (and it is deactivated) when it is missing or was made for
        another preset (e.g. a smoke-mode ``tiny`` checkpoint after switching to real weights)."""
        if not self.active_checkpoint:
            return None
        ckpt = self.checkpoints_dir / self.active_checkpoint
        if checkpoint_preset(ckpt) != self.model_name:
            self.active_checkpoint = None
            self._save_settings()
            return None
        return ckpt

    def fresh_model(self, device: str | None = None):
        """A newly loaded zero-shot model with the session's preset and weights."""
        from ..factory import load_model  # on first use: see the note at the imports
        return load_model(self.model_name, self.weights, device or self.device)

    @property
    def adapted(self) -> bool:
        return self.active_checkpoint is not None

    def score(self, paths: Iterable[str] | None = None, zero_shot: bool = False, batch_size: int = 32
              ) -> pd.DataFrame:
        """Score images (default: all of the session's): with the active checkpoint when there is one, else (or
        with ``zero_shot``) zero-shot CLIP with antonym prompts. Never with untrained prompts."""
        model = self.model
        paths = list(self.images if paths is None else paths)
        if zero_shot or not self.adapted:
            with model.adapters_off():
                return score_files(model, paths, batch_size=batch_size)
        return score_files(model, paths, batch_size=batch_size)

    # ------------------------------------------------------------------ suggestions
    def _encode(self, paths: list[str]) -> None:
        """Fill the caches of zero-shot normalised features and zero-shot scores for ``paths``."""
        if any(p not in self._features and p not in self._bad_images for p in paths):
            encode_zero_shot(self.model, paths, self._features, self._zero_shot, self._bad_images)

    def _adapted_scores(self, paths: list[str]) -> dict[str, float]:
        table = score_files(self.model, list(paths))
        return {p: m for p, m in zip(table["path"], table["logit_margin"]) if np.isfinite(m)}

    def suggest_next(self, k: int = 1, diverse_until: int = DIVERSE_UNTIL, strategy: str = "auto") -> list[str]:
        """Up to ``k`` unlabelled, unskipped images to label next (best first).

        strategy: ``"auto"`` (diverse while fewer than ``diverse_until`` labels, then uncertain), ``"diverse"``
        or ``"uncertain"``. See the :mod:`clipiqa.session` docstring for the exact rules.
        """
        check_strategy(strategy)
        if k < 1:
            return []
        queued = self._line_requests()
        if len(queued) >= k:
            return queued[:k]
        candidates = [p for p in self.images if not self.is_done(p) and p not in queued]
        if not candidates:
            return queued
        labelled = list(self.labels)
        self._encode(candidates + labelled)
        return queued + suggest(candidates, labelled, self._features, self._zero_shot, self.images, k - len(queued),
                                diverse_until, strategy, self._adapted_scores if self.adapted else None)

    def _line_requests(self) -> list[str]:
        """Images a line monitor queued for labels (``clipiqa watch``: near the gate's threshold, or from a drifted
        window) that this rater has not done: they come first, and join the session's images when new."""
        queued = [os.path.abspath(p) for p in queued_requests(self.database_path) if os.path.isfile(p)]
        known = set(self.images)
        new = [p for p in queued if p not in known]
        if new:
            self.store.add_images(image_rows(new))
        return [p for p in dict.fromkeys(queued) if not self.is_done(p)]

    # ------------------------------------------------------------------ adaptation and checkpoints
    def adapt(self, config=None, on_step: Callable[[dict], None] | None = None,
              stop: Callable[[], bool] | None = None, *, shots: int | None = None, seed: int = 0,
              name: str | None = None, device: str | None = None, activate: bool | None = None,
              test: pd.DataFrame | None = None):
        """Adapt a fresh zero-shot model on the labels, save a checkpoint and (when it finished) make it the
        session's model.

        shots: train on a seeded draw of this many labels (``clipiqa.data.few_shot``); the other labels become
            the test set whose SRCC is logged after every epoch (``kind="eval"`` records, ``srcc_test``). None or
            at least the number of labels: train on all of them (no test curve unless ``config.selection="val"``).
        test: labelled images of other contents (``path``, ``q`` in [0, 1]) to measure on after each epoch instead
            of the labels ``shots`` leaves over, e.g. a held-out set of photos nobody labelled in this session;
            an image that is also among the training labels is refused.
        activate: None (default): the new checkpoint becomes the session's model only when the run finished its
            budget; a run that ``stop`` ended early is under-trained, so it is saved (its card says stopped) but
            the session keeps scoring with what it had. True: activate it even when stopped. False: never.
            ``session.last_checkpoint`` names the new checkpoint either way; ``use_checkpoint(name)`` activates
            it later.
        Returns the ``clipiqa.adapt.History`` (``history.stopped`` is True when ``stop`` ended it early).
        """
        from ..finetune import AdaptConfig, adapt  # on first use: see the note at the imports
        from ..explain.prompt_words import prompt_words
        if not isinstance(activate, (bool, type(None))):
            invalid("Session.adapt", "activate", activate, "use None (activate unless stopped early), True "
                    "(always) or False (never; use_checkpoint(name) later)")
        config = config or AdaptConfig()
        train, rest = split_labels(self.labelled_table(), shots, seed)
        test = rest if test is None else checked_test(test, train)
        model = self.fresh_model(device)
        before = prompt_words(model)  # the card records what the learned text context became
        history = adapt(model, train, config, on_step=on_step, stop=stop, test=test)
        target = new_checkpoint_dir(self.checkpoints_dir, name, len(train))
        save_adapted(model, target, config, history, train, test, self.folder, seed, prompt_words_before=before)
        self.last_checkpoint = target.name
        if activate or (activate is None and not history.stopped):
            with self._lock:
                self._model = model
                self.active_checkpoint = target.name
                self._save_settings()
        return history

    def checkpoints(self) -> pd.DataFrame:
        """The session's checkpoints, oldest first: name, path, created, labels used, stopped, SRCC, random-init."""
        return checkpoint_table(self.checkpoints_dir, self.active_checkpoint)

    def use_checkpoint(self, name: str | None) -> None:
        """Make a saved checkpoint (or None: zero-shot) the session's model."""
        with self._lock:
            if name is not None and not (self.checkpoints_dir / name).is_dir():
                raise FileNotFoundError(f"no checkpoint {name!r} in {self.checkpoints_dir}; "
                                        f"have: {list(self.checkpoints()['name'])}")
            self.active_checkpoint = name
            self._model = None
            self._save_settings()

    def __repr__(self) -> str:
        extra = f", {RANDOM_INIT.text}" if self.random_init else ""
        return (f"Session({str(self.folder)!r}: {len(self.images)} images, {self.progress_text()}, "
                f"model {self.model_name}{extra})")
