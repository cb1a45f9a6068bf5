"""``Session``: the one public entry of a labelling-and-adaptation project in one folder, composed of parts with
one job each (``session.parts``):

* :class:`~clipiqa.session.state.SessionState`: the folder's files, the label store, the settings, the rater
  and their view of the database, shared by the other parts;
* :class:`~clipiqa.session.navigator.Navigator`: the image list and where this object is in it;
* :class:`~clipiqa.session.ratings.Ratings`: the ratings (everyone's labels, this rater's, counts, the human
  ceiling) and what this object adds (label, skip, undo);
* :class:`~clipiqa.session.models.Models`: the model, scoring and checkpoints;
* :class:`~clipiqa.session.suggestions.Suggestions`: what to label next.

``Session`` builds them (opening, migrating or recovering the folder), joins them where a job needs two
(``adapt``: the labels, a fresh model, a checkpoint) and forwards every other public name to the part that owns
it, docstring and signature included (``help(Session)`` reads as one API)."""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..caveats import RANDOM_INIT
from ..configs import invalid
from ..labelstore import DB_NAME, cleanup_temporaries
from .checkpoints import checked_test, new_checkpoint_dir, save_adapted, split_labels
from .files import (DEFAULT_RATER, REPEAT_SHARE, SESSION_FORMAT, check_repeat_share, image_rows, now_text,
                    read_json)
from .migrate import migrate_format1
from .models import Models
from .navigator import Navigator
from .ratings import Ratings
from .recover import LabelsRecovered, database_state, recover_from_export
from .scale import as_scale, check_fits_scale
from .state import CHECKPOINTS, LABELS, SETTINGS, SessionState
from .suggestions import Suggestions


def _default_model() -> str:
    from ..presets import DEFAULT_MODEL  # on first use: see the note in clipiqa/session/models.py
    return DEFAULT_MODEL


def _part_of(cls: type) -> str:
    return cls.__name__.lower() if cls is not SessionState else "state"


def _forward(cls: type, name: str, doc: str | None = None):
    """The Session attribute ``name`` as the same attribute of its part of class ``cls``, with its docstring (and,
    for a method, its signature); settable when the part's attribute is (a plain attribute, or a property with a
    setter)."""
    part, target = _part_of(cls), getattr(cls, name, None)
    if callable(target):
        @functools.wraps(target)
        def method(self, *args, **kwargs):
            return getattr(getattr(self.parts, part), name)(*args, **kwargs)
        return method

    def get(self):
        return getattr(getattr(self.parts, part), name)

    def set_(self, value):
        setattr(getattr(self.parts, part), name, value)
    settable = not isinstance(target, property) or target.fset is not None
    return property(get, set_ if settable else None, doc=doc or getattr(target, "__doc__", None))


class Parts:
    """The parts of one Session object (see the :mod:`clipiqa.session.facade` docstring)."""

    def __init__(self, state: SessionState, model: Any = None):
        self.state = state
        self.models = Models(state, model)
        self.suggestions = Suggestions(state, self.models)
        self.navigator = Navigator(state, self.suggestions.suggest_next)
        self.ratings = Ratings(state, self.navigator)


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

    LABELS = LABELS
    DATABASE = DB_NAME
    SETTINGS = SETTINGS
    STATE = "state.json"  # format 1 only: read once when migrating
    LEGACY_BACKUP = "labels-format1.csv"
    CHECKPOINTS = CHECKPOINTS

    def __init__(self, folder: str | os.PathLike, images: Any = None, scale: Any = None,
                 model_name: str | None = None, weights: str | None = None, device: str | None = None,
                 model: Any = None, *, rater: str | None = None, repeat_share: float | None = None):
        self.folder = folder = Path(folder).expanduser().resolve()
        stored = read_json(folder / self.SETTINGS) or {}
        if stored and stored.get("format") != SESSION_FORMAT:
            raise ValueError(f"{folder / self.SETTINGS} is not a clipiqa session settings file")
        rows = image_rows(images)
        found = database_state(folder / self.DATABASE)  # "missing", "empty (0 bytes)" or None
        db_existed = found != "missing"
        if not rows and not stored and not db_existed:
            raise ValueError(f"no images for the session in {folder}: give image files, a folder of images, "
                             "or a table with a 'path' column as images=")
        format1 = int(stored.get("version", 1)) < 2 if stored else (not db_existed and (folder / LABELS).is_file())
        folder.mkdir(parents=True, exist_ok=True)
        cleanup_temporaries(folder, [self.LABELS, self.SETTINGS, self.STATE])
        state = SessionState(
            folder, as_scale(scale if scale is not None else stored.get("scale")), created=stored.get("created")
            or now_text(), model_name=model_name or stored.get("model_name") or _default_model(),
            weights=weights if weights is not None else stored.get("weights"),
            device=device if device is not None else stored.get("device"), checkpoint=stored.get("checkpoint"),
            repeat_share=check_repeat_share(repeat_share if repeat_share is not None
                                            else stored.get("repeat_share", REPEAT_SHARE)))
        self.store = state.store
        self.recovery = self._open_database(state, stored, rows, format1, found)
        raters = state.view().raters
        state.rater = rater if rater is not None else raters[0] if len(raters) == 1 else DEFAULT_RATER
        self.parts = Parts(state, model)
        state.save_settings()
        if not self.store.export_is_current():  # missing (a session without labels has an empty export too),
            self.store.export()  # or left ahead of the database by a writer killed before its commit

    def _open_database(self, state: SessionState, stored: dict, rows: list, format1: bool, found) -> str | None:
        """Migrate a format-1 folder, or recover a lost database from the export; add the images given. Returns
        what the recovery did (None: nothing), also warned."""
        store, recovery = state.store, None
        if format1 and store.get_meta("migrated") is None:
            migrate_format1(store, stored, state.labels_path, self.folder / self.STATE,
                            self.folder / self.LEGACY_BACKUP, state.scale.name)
        elif state.labels_path.is_file():  # a lost database beside an export with rows: import, never overwrite it
            recovery = recover_from_export(store, state.labels_path, state.scale.name, found)
            if recovery:
                warnings.warn(recovery, LabelsRecovered, stacklevel=4)
        store.add_images(rows)
        if not state.view().images:
            raise ValueError(f"no images for the session in {self.folder}: give image files, a folder of images, "
                             "or a table with a 'path' column as images=")
        check_fits_scale(state.scale, [(r.path, r.score) for r in store.snapshot().ratings])
        return recovery

    @classmethod
    def open(cls, folder: str | os.PathLike, **overrides: Any) -> "Session":
        """Resume the session saved in ``folder`` (ratings, position, settings); ``overrides`` as in
        ``__init__``."""
        if not (Path(folder).expanduser() / cls.SETTINGS).is_file():
            raise FileNotFoundError(f"no clipiqa session in {folder}: {cls.SETTINGS} is missing. Start one with "
                                    "Session(folder, images=...)")
        return cls(folder, **overrides)

    # ------------------------------------------------------------------ the folder and its settings
    @property
    def labels_path(self) -> Path:
        """``labels.csv``: the export (per image ``mos, mos_std, n_ratings, content_id``), rewritten after every
        rating; ``clipiqa.data.read_labels`` and ``clipiqa adapt --labels`` read it."""
        return self.parts.state.labels_path

    @property
    def database_path(self) -> Path:
        """``labels.sqlite``: every rating (see :mod:`clipiqa.labelstore`)."""
        return self.parts.state.database_path

    @property
    def checkpoints_dir(self) -> Path:
        """``checkpoints/``: one folder per adaptation."""
        return self.parts.state.checkpoints_dir

    scale = _forward(SessionState, "scale", "The rating scale (:class:`~clipiqa.session.Scale`), in settings.json.")
    created = _forward(SessionState, "created", "When the session was started (local time, ISO format).")
    model_name = _forward(SessionState, "model_name", "The model ``load_model`` loads when the model is first needed.")
    weights = _forward(SessionState, "weights", "A weights file or folder for ``model_name`` (None: its own).")
    device = _forward(SessionState, "device", "Where the model runs (None: chosen by ``load_model``).")
    active_checkpoint = _forward(SessionState, "active_checkpoint",
                                 "The checkpoint the session scores with (None: zero-shot).")
    repeat_share = _forward(SessionState, "repeat_share", "The share of blind repeats :meth:`advance` mixes in.")

    def export(self) -> Path:
        """Rewrite ``labels.csv`` from the database now (it is also rewritten after every rating)."""
        return self.store.export()

    def close(self) -> None:
        """Close the database connection (a later call opens it again)."""
        self.store.close()

    @property
    def rater(self) -> str:
        """Who rates through this object; each rating is stored under this name. Setting it (the label panel's
        Rater box does) switches to that rater's labels, skips and undo history."""
        return self.parts.state.rater

    @rater.setter
    def rater(self, name: str) -> None:
        with self.parts.state.lock:
            self.parts.state.rater = name
            self.parts.navigator.forget_repeat()

    # ------------------------------------------------------------------ the images and moving through them
    images = _forward(Navigator, "images")
    content_ids = _forward(Navigator, "content_ids")
    current = _forward(Navigator, "current")
    position = _forward(Navigator, "position")
    repeat_pending = _forward(Navigator, "repeat_pending")
    goto = _forward(Navigator, "goto")
    step = _forward(Navigator, "step")
    is_done = _forward(Navigator, "is_done")
    next_unlabelled = _forward(Navigator, "next_unlabelled")
    advance = _forward(Navigator, "advance")

    # ------------------------------------------------------------------ ratings
    labels = _forward(Ratings, "labels")
    my_labels = _forward(Ratings, "my_labels")
    skipped = _forward(Ratings, "skipped")
    raters = _forward(Ratings, "raters")
    counts = _forward(Ratings, "counts")
    progress_text = _forward(Ratings, "progress_text")
    ratings = _forward(Ratings, "ratings")
    agreement = _forward(Ratings, "agreement")
    labelled_table = _forward(Ratings, "labelled_table")
    label = _forward(Ratings, "label")
    skip = _forward(Ratings, "skip")
    undo = _forward(Ratings, "undo")

    # ------------------------------------------------------------------ the model and its checkpoints
    random_init = _forward(Models, "random_init")
    toy = _forward(Models, "toy")
    model = _forward(Models, "model")
    adapted = _forward(Models, "adapted")
    last_checkpoint = _forward(Models, "last_checkpoint", "The checkpoint the last ``adapt`` of this object saved.")
    fresh_model = _forward(Models, "fresh_model")
    score = _forward(Models, "score")
    checkpoints = _forward(Models, "checkpoints")
    use_checkpoint = _forward(Models, "use_checkpoint")

    # ------------------------------------------------------------------ what to label next
    suggest_next = _forward(Suggestions, "suggest_next")

    # ------------------------------------------------------------------ adaptation: labels + model + checkpoint
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
        from ..finetune import AdaptConfig, adapt  # on first use: see the note in clipiqa/session/models.py
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
        self.parts.models.last_checkpoint = target.name
        if activate or (activate is None and not history.stopped):
            self.parts.models.activate(model, target.name)
        return history

    def __repr__(self) -> str:
        extra = f", {RANDOM_INIT.text}" if self.random_init else ""
        return (f"Session({str(self.folder)!r}: {len(self.images)} images, {self.progress_text()}, "
                f"model {self.model_name}{extra})")
