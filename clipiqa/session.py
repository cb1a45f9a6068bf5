"""A labelling-and-adaptation session persisted in one folder (DESIGN 6).

``Session(folder, images)`` holds an image set, the labels given so far, the settings, the model (loaded
lazily) and the checkpoints made from the labels. Everything lives under ``folder/``::

    labels.sqlite        the images and every rating (image, rater, score, scale, time, repeat flag), skips and
                         each rater's position: SQLite in WAL mode, one transaction per rating (clipiqa.labelstore)
    labels.csv           the export, per image: path, mos, mos_std, n_ratings, content_id (read it with
                         clipiqa.data.read_labels(csv, score_range=...)); rewritten after every rating
    settings.json        rating scale, model preset/weights/device, active checkpoint, repeat_share
    checkpoints/<name>/  adapter.safetensors + card.json + history.json, one per adaptation

Any number of Sessions, kernels and processes may rate one folder at once and lose nothing: a rating is a row
inserted in its own transaction, never a rewrite of a file from one object's memory, and every view of a Session
(images, labels, counts, next unlabelled image, labelled table) is read from the database. Files are written
atomically (temporary file, fsync, ``os.replace``). ``Session.open(folder)`` resumes ratings, position and
settings; a format-1 folder (``labels.csv`` as ``path,score,content_id`` with ``state.json``) is migrated on first
use without losing a label (its labels.csv is kept as ``labels-format1.csv``).

Several raters: each Session rates as its :attr:`Session.rater` (the label panel asks for the name once). A
rater's label of an image is their latest rating of it; the MOS is the mean over raters. ``advance`` mixes in
blind repeats (``repeat_share``, default 0.1) for test-retest; ``Session.agreement()`` gives the human ceiling
(:mod:`clipiqa.agreement`). Undo takes back only the rater's own last rating or skip.

What to label next (``suggest_next``), documented because it decides which labels you spend time on:

1. **diversity first**: while fewer than ``diverse_until`` (default 10) images are labelled, pick by
   farthest-point sampling on the L2-normalised zero-shot CLIP image embeddings: the unlabelled image whose
   largest cosine similarity to any labelled (or already suggested) image is smallest. With nothing labelled,
   the first pick is the image closest to the mean embedding (a typical image).
2. **then uncertainty**: once an adapted checkpoint is active, the images where the adapted score and the
   zero-shot score disagree most; before that, the images whose zero-shot score is closest to 0.5 (where
   CLIP's good/bad prompts are least decided).

With random-init weights (the ``tiny`` preset) embeddings and scores are meaningless, so the suggestions are an
arbitrary but deterministic order; the machinery is the same.
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .configs import invalid
from .labelstore import (DB_NAME, LabelNotSaved, LabelStore, Snapshot, cleanup_temporaries, decode_name,
                         encode_name)
from .notebook import UserError, install as _install_short_errors

SESSION_FORMAT = "clipiqa-session"
SESSION_VERSION = 2  # 2: images and ratings in labels.sqlite; 1: labels.csv path,score,content_id + state.json
DIVERSE_UNTIL = 10
DEFAULT_RATER = "default"
REPEAT_SHARE = 0.1
MAX_REPEAT_SHARE = 0.5
REPEAT_GAP = 10  # a blind repeat is of an image labelled at least this many labels ago
RANDOM_INIT_BANNER = "random-init weights: scores are meaningless"
_install_short_errors()  # user errors (no weights, a bad image, ...) show as one short message in notebooks


class NotEnoughLabelsError(UserError, ValueError):
    """Adaptation was asked for with fewer labels than it needs; label more images first."""


# --------------------------------------------------------------------------------------------- rating scale
@dataclass(frozen=True)
class Scale:
    """A rating scale: numbered levels with names, e.g. ACR ``1 bad .. 5 excellent``.

    ``range`` (lowest, highest value) is what ``read_labels(score_range=...)`` needs; higher values are better
    unless ``higher_better`` is False.
    """

    name: str
    levels: tuple[tuple[float, str], ...]
    higher_better: bool = True

    def __post_init__(self) -> None:
        levels = tuple((float(v), str(n)) for v, n in self.levels)
        if len(levels) < 2:
            raise ValueError(f"Scale {self.name!r} needs at least two levels; got {levels}")
        values = [v for v, _ in levels]
        if len(set(values)) != len(values):
            raise ValueError(f"Scale {self.name!r} has repeated level values: {values}")
        object.__setattr__(self, "levels", tuple(sorted(levels)))

    @property
    def range(self) -> tuple[float, float]:
        return self.levels[0][0], self.levels[-1][0]

    @property
    def values(self) -> list[float]:
        return [v for v, _ in self.levels]

    def label(self, value: float) -> str:
        """``"4 good"`` for a named level, the plain number otherwise."""
        for v, n in self.levels:
            if v == float(value):
                return f"{_num(v)} {n}"
        return _num(float(value))

    def q(self, value: float) -> float:
        """The score mapped to [0, 1], higher = better (same mapping as ``read_labels``)."""
        lo, hi = self.range
        q = (float(value) - lo) / (hi - lo)
        return q if self.higher_better else 1.0 - q

    def check(self, value: float) -> float:
        value = float(value)
        lo, hi = self.range
        if not np.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"score {value!r} is outside the {self.name} scale ({_num(lo)}..{_num(hi)}); "
                             f"levels: {', '.join(self.label(v) for v in self.values)}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "levels": [[v, n] for v, n in self.levels], "higher_better": self.higher_better}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Scale":
        return cls(d["name"], tuple((v, n) for v, n in d["levels"]), bool(d.get("higher_better", True)))


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


ACR = Scale("ACR", ((1, "bad"), (2, "poor"), (3, "fair"), (4, "good"), (5, "excellent")))


def as_scale(scale: Scale | Mapping | Sequence[str] | None) -> Scale:
    """A ``Scale`` from a Scale, a ``{value: name}`` dict, a list of names (values 1..n) or None (ACR)."""
    if scale is None:
        return ACR
    if isinstance(scale, Scale):
        return scale
    if isinstance(scale, Mapping):
        if "levels" in scale:
            return Scale.from_dict(scale)
        return Scale("custom", tuple((float(v), str(n)) for v, n in scale.items()))
    names = list(scale)
    return Scale("custom", tuple((float(i + 1), str(n)) for i, n in enumerate(names)))


# --------------------------------------------------------------------------------------------- atomic files
def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file, never a mix.

    Through :func:`clipiqa.csvio.atomic_write`: a temporary file in the same folder, fsync, ``os.replace`` over
    the target, fsync of the folder; on any error the temporary file is removed and the old file is untouched;
    a temporary file left by a killed process is removed by the next write of the same file.
    """
    from .csvio import atomic_write
    with atomic_write(path) as f:
        f.write(text)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------- raters, repeats
def check_rater(name: Any) -> str:
    """A rater's name: non-empty printable text of at most 64 characters (leading/trailing spaces dropped)."""
    text = name.strip() if isinstance(name, str) else None
    ok = bool(text) and len(text) <= 64 and text.isprintable()
    if ok:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            ok = False
    if not ok:
        invalid("Session", "rater", name, "use a non-empty name of at most 64 printable characters, e.g. 'anna'")
    return text


def check_repeat_share(share: Any) -> float:
    try:
        value = float(share)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= MAX_REPEAT_SHARE:
        invalid("Session", "repeat_share", share, f"use a share between 0 (no blind repeats) and "
                f"{MAX_REPEAT_SHARE:g}; the default {REPEAT_SHARE:g} re-shows about one image in ten")
    return value


def pick_repeat(rated: Sequence[str], repeated: Collection[str], n_ratings: int, share: float, rater: str,
                gap: int = REPEAT_GAP) -> str | None:
    """The image to re-show blind now, or None (test-retest).

    rated: the images the rater has labelled, oldest label first; repeated: those already repeated;
    n_ratings: how many ratings the rater has given (repeats included). A draw seeded by ``(rater,
    n_ratings)`` (so the same history gives the same answer) says yes with probability ``share``; then one of
    the images labelled at least ``gap`` labels ago and not repeated yet is picked (a repeat must not be
    recognisable from the last few images).
    """
    if share <= 0 or len(rated) <= gap:
        return None
    rng = random.Random(f"{rater}\0{n_ratings}")
    if rng.random() >= share:
        return None
    eligible = [p for p in rated[:len(rated) - gap] if p not in repeated]
    return rng.choice(eligible) if eligible else None


@dataclass(frozen=True)
class _View:
    """What one rater sees, derived from a :class:`~clipiqa.labelstore.Snapshot` (cached per database state)."""

    images: list[str]
    index: dict[str, int]
    content_ids: dict[str, str]
    labels: dict[str, dict[str, Any]]  # per image, over all raters
    mine: dict[str, float]  # this rater's labels
    my_order: list[str]  # images this rater labelled, oldest label first
    my_repeats: frozenset[str]
    n_my_ratings: int  # repeats and superseded ratings included (seeds the repeat draw)
    n_my_repeats: int
    skipped: list[str]  # this rater's skips (not labelled since), in skip order
    done: frozenset[str]  # labelled or skipped by this rater
    raters: list[str]
    n_ratings: int
    positions: dict[str, str]


def _view_of(snap: Snapshot, rater: str) -> _View:
    from .agreement import mos_by_image
    labels_by: dict[tuple[str, str], Any] = {}
    for r in snap.ratings:  # in seq order: the latest non-repeat rating wins
        if not r.is_repeat:
            labels_by.pop((r.path, r.rater), None)
            labels_by[(r.path, r.rater)] = r
    mine_rows = [r for (p, who), r in labels_by.items() if who == rater]
    mine = {r.path: r.score for r in mine_rows}
    stats = mos_by_image((r.path, r.score) for r in labels_by.values())
    labels: dict[str, dict[str, Any]] = {}
    for p in snap.images:
        if p in stats:
            mos, std, n = stats[p]
            labels[p] = {"score": mos, "mos_std": std if np.isfinite(std) else None, "n_ratings": n,
                         "content_id": snap.content_ids.get(p, "")}
    skipped: list[str] = []
    for s in snap.skips:
        if s.rater == rater and s.path not in mine and s.path not in skipped:
            skipped.append(s.path)
    mine_ratings = [r for r in snap.ratings if r.rater == rater]
    raters = sorted({r.rater for r in snap.ratings} | {s.rater for s in snap.skips})
    return _View(images=list(snap.images), index={p: i for i, p in enumerate(snap.images)},
                 content_ids=dict(snap.content_ids), labels=labels, mine=mine,
                 my_order=[r.path for r in mine_rows], n_my_ratings=len(mine_ratings),
                 my_repeats=frozenset(r.path for r in mine_ratings if r.is_repeat),
                 n_my_repeats=sum(r.is_repeat for r in mine_ratings), skipped=skipped,
                 done=frozenset(mine) | frozenset(skipped),
                 raters=raters, n_ratings=len(snap.ratings), positions=dict(snap.positions))


# --------------------------------------------------------------------------------------------- the session
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
        stored = self._read_json(self.SETTINGS) or {}
        if stored and stored.get("format") != SESSION_FORMAT:
            raise ValueError(f"{self.folder / self.SETTINGS} is not a clipiqa session settings file")
        rows = self._image_rows(images)
        db_existed = (self.folder / self.DATABASE).is_file()
        if not rows and not stored and not db_existed:
            raise ValueError(f"no images for the session in {self.folder}: give image files, a folder of images, "
                             "or a table with a 'path' column as images=")
        format1 = int(stored.get("version", 1)) < 2 if stored else (not db_existed and self.labels_path.is_file())
        if not db_existed and not format1 and self.labels_path.is_file():
            raise FileNotFoundError(
                f"{self.folder / self.DATABASE} is missing but {self.labels_path} is there: the ratings live in the "
                f"database and labels.csv is only its export. Restore {self.DATABASE} (or move labels.csv away to "
                "start this session afresh)")
        self.folder.mkdir(parents=True, exist_ok=True)
        cleanup_temporaries(self.folder, [self.LABELS, self.SETTINGS, self.STATE])
        self.scale = as_scale(scale if scale is not None else stored.get("scale"))
        self.model_name = model_name or stored.get("model_name") or "vitb16-openai"
        self.weights = weights if weights is not None else stored.get("weights")
        self.device = device if device is not None else stored.get("device")
        self.active_checkpoint: str | None = stored.get("checkpoint")
        self.created = stored.get("created") or _now()
        self.repeat_share = check_repeat_share(repeat_share if repeat_share is not None
                                               else stored.get("repeat_share", REPEAT_SHARE))
        self.store = LabelStore(self.folder / self.DATABASE, export=self.labels_path)
        self._view_key: Any = None
        self._view_cache: _View | None = None
        if format1 and self.store.get_meta("migrated") is None:
            self._migrate_format1(stored)
        self.store.add_images(rows)
        if not self.images:
            raise ValueError(f"no images for the session in {self.folder}: give image files, a folder of images, "
                             "or a table with a 'path' column as images=")
        self._check_labels_fit_scale()
        self._rater = check_rater(rater) if rater is not None else self._only_rater()
        self._repeat_pending: str | None = None
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

    @staticmethod
    def _image_rows(images: Any) -> list[tuple[str, str]]:
        """``(absolute path, content_id)`` for the images given to ``__init__``."""
        if images is None:
            return []
        if isinstance(images, pd.DataFrame):
            if "path" not in images:
                raise ValueError(f"an image table needs a 'path' column; got {list(images.columns)}")
            paths = [os.path.abspath(p) for p in images["path"]]
            cids = list(images["content_id"]) if "content_id" in images else [""] * len(paths)
            return [(p, c if isinstance(c, str) else "") for p, c in zip(paths, cids)]
        from .imageio import list_images
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        return [(os.path.abspath(p), "") for p in list_images(list(images))]

    def _migrate_format1(self, stored: Mapping[str, Any]) -> None:
        """Move a format-1 session (settings.json image list, labels.csv ``path,score,content_id``, state.json
        skips and position) into the database, once (the check runs inside the write transaction, so two
        processes opening the folder at once migrate it once). labels.csv is kept as labels-format1.csv."""
        content = dict(stored.get("content_ids", {}))
        with self.store.write("the migration of the format-1 session") as con:
            if con.execute("SELECT 1 FROM meta WHERE key = 'migrated'").fetchone():
                return  # another process migrated it meanwhile (and labels.csv is its export now)
            labels = self._read_format1_labels()
            state = self._read_json(self.STATE) or {}
            if self.labels_path.is_file():
                shutil.copy2(self.labels_path, self.folder / self.LEGACY_BACKUP)
            rows = [(p, content.get(p, "")) for p in stored.get("images", [])]
            rows += [(p, cid or content.get(p, "")) for p, _, cid in labels]
            self.store.add_images(rows, con)
            stamp = (datetime.fromtimestamp(self.labels_path.stat().st_mtime, timezone.utc).isoformat()
                     if self.labels_path.is_file() else _now())
            for p, score, _ in labels:
                self.store.add_rating(p, DEFAULT_RATER, score, self.scale.name, time=stamp, con=con, export=False)
            labelled = {p for p, _, _ in labels}
            known = {decode_name(p) for (p,) in con.execute("SELECT path FROM images")}
            skips = [p for p in state.get("skipped", []) if p in known and p not in labelled]
            for p in skips:
                self.store.add_skip(p, DEFAULT_RATER, con)
            current = state.get("current")
            if current in known:
                con.execute("INSERT OR REPLACE INTO positions(rater, image, time) SELECT ?, id, ? FROM images "
                            "WHERE path = ?", (DEFAULT_RATER, _now(), encode_name(current)))
            LabelStore.set_meta(con, "migrated", json.dumps({
                "from": "format 1 (labels.csv path,score,content_id; state.json)", "labels": len(labels),
                "skips": len(skips), "backup": self.LEGACY_BACKUP if self.labels_path.is_file() else None,
                "time": _now()}))
            self.store.write_export(con)

    def _read_format1_labels(self) -> list[tuple[str, float, str]]:
        if not self.labels_path.is_file():
            return []
        out: dict[str, tuple[str, float, str]] = {}
        with open(self.labels_path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            if "score" not in (reader.fieldnames or []):
                raise ValueError(f"{self.labels_path} has columns {reader.fieldnames}, not the format-1 "
                                 "path,score,content_id: cannot migrate it")
            for row in reader:
                if row.get("path"):
                    out[row["path"]] = (row["path"], float(row["score"]), row.get("content_id") or "")
        return list(out.values())

    def _only_rater(self) -> str:
        raters = self._view().raters
        return raters[0] if len(raters) == 1 else DEFAULT_RATER

    def _restore_current(self) -> str:
        v = self._view()
        where = v.positions.get(self._rater)
        return where if where in v.index else v.images[0]

    def _check_labels_fit_scale(self) -> None:
        lo, hi = self.scale.range
        bad = [r.path for r in self.store.snapshot().ratings if not lo <= r.score <= hi]
        if bad:
            raise ValueError(f"{len(bad)} stored rating(s) lie outside the {self.scale.name} scale "
                             f"({_num(lo)}..{_num(hi)}), e.g. {bad[0]}; open the session with its own scale")

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

    def _read_json(self, name: str) -> dict | None:
        try:
            return json.loads((self.folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise ValueError(f"{self.folder / name} is not valid JSON ({e}); restore it or remove it") from None

    def _save_settings(self) -> None:
        """Write settings.json when it changed (the image list and ratings live in the database)."""
        text = _json_text({
            "format": SESSION_FORMAT, "version": SESSION_VERSION, "created": self.created,
            "scale": self.scale.to_dict(), "model_name": self.model_name, "weights": self.weights,
            "device": self.device, "checkpoint": self.active_checkpoint, "repeat_share": self.repeat_share})
        path = self.folder / self.SETTINGS
        try:
            if path.read_text(encoding="utf-8") == text:
                return
        except (OSError, UnicodeError):
            pass
        atomic_write_text(path, text)

    def export(self) -> Path:
        """Rewrite ``labels.csv`` from the database now (it is also rewritten after every rating)."""
        return self.store.export()

    def close(self) -> None:
        """Close the database connection (a later call opens it again)."""
        self.store.close()

    # ------------------------------------------------------------------ what the database says now
    def _view(self) -> _View:
        """This rater's view of the database, recomputed whenever anyone committed a change."""
        with self._lock:
            key = (self.store.version(), getattr(self, "_rater", None))
            if key != self._view_key or self._view_cache is None:
                self._view_cache = _view_of(self.store.snapshot(), key[1])
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
        from .agreement import human_ceiling
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
            self.store.add_rating(p, self._rater, score, self.scale.name, repeat=is_repeat)
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
            self.store.add_skip(p, self._rater)

    def undo(self) -> str | None:
        """Take back this rater's last rating or skip (their own only; a tombstone in the database); returns
        its image (now current) or None when there is nothing to undo."""
        with self._lock:
            done = self.store.undo_last(self._rater)
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
        done = v.done
        start = self.position if after is None else after
        n = len(v.images)
        for k in range(1, n + 1):
            p = v.images[(start + k) % n]
            if p not in done:
                return p
        return None

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
        v = self._view()
        n_l, n_s = len(v.mine), len(v.skipped)
        return {"labelled": n_l, "skipped": n_s, "to_go": len(v.images) - n_l - n_s, "total": len(v.images),
                "repeats": v.n_my_repeats,
                "rated_images": len(v.labels), "ratings": v.n_ratings, "raters": len(v.raters)}

    def progress_text(self) -> str:
        c = self.counts()
        text = f"{c['labelled']} labelled, {c['skipped']} skipped, {c['to_go']} to go"
        others = [r for r in self.raters if r != self._rater]
        if others:
            text += (f" (you: {self._rater}; all {c['raters']} raters: {c['rated_images']} images, "
                     f"{c['ratings']} ratings)")
        return text

    def labelled_table(self) -> pd.DataFrame:
        """The labels as the common table (``path, mos, q, mos_std, content_id, ...``): the labels.csv export,
        rewritten from the database now and read back with ``clipiqa.data.read_labels`` on this session's
        scale (so what is on disk is what trains). ``mos`` is the mean over raters."""
        from .data import read_labels
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
        from .presets import get_preset
        return get_preset(self.model_name).random_init and self.weights is None

    @property
    def toy(self) -> bool:
        """True when the model is the ``lesson`` toy (trained by clipiqa on synthetic distortions)."""
        if self._model is not None:
            return bool(self._model.source.toy)
        from .presets import get_preset
        return get_preset(self.model_name).toy and self.weights is None

    @property
    def model(self):
        """The session's ``IQAModel``, loaded on first use (with the active checkpoint, if any)."""
        with self._lock:
            if self._model is None:
                from .model import load_model
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
        try:
            preset = json.loads((ckpt / "card.json").read_text())["backbone"].get("preset")
        except (OSError, ValueError, KeyError):
            preset = None
        if preset != self.model_name:
            self.active_checkpoint = None
            self._save_settings()
            return None
        return ckpt

    def fresh_model(self, device: str | None = None):
        """A newly loaded zero-shot model with the session's preset and weights."""
        from .model import load_model
        return load_model(self.model_name, self.weights, device or self.device)

    @property
    def adapted(self) -> bool:
        return self.active_checkpoint is not None

    def score(self, paths: Iterable[str] | None = None, zero_shot: bool = False, batch_size: int = 32
              ) -> pd.DataFrame:
        """Score images (default: all of the session's): with the active checkpoint when there is one, else (or
        with ``zero_shot``) zero-shot CLIP with antonym prompts. Never with untrained prompts."""
        from .scoring import score_files
        model = self.model
        paths = list(self.images if paths is None else paths)
        if zero_shot or not self.adapted:
            with model.adapters_off():
                return score_files(model, paths, batch_size=batch_size)
        return score_files(model, paths, batch_size=batch_size)

    # ------------------------------------------------------------------ suggestions
    def _encode(self, paths: Sequence[str]) -> None:
        """Fill the caches of zero-shot normalised features and zero-shot scores for ``paths``."""
        import torch
        import torch.nn.functional as F

        from .imageio import ImageLoadError, load_image
        todo = [p for p in paths if p not in self._features and p not in self._bad_images]
        if not todo:
            return
        from .inference import autocast_for, evaluating, predict_features
        model = self.model
        with model.adapters_off():  # zero-shot: the backbone's own preprocessing
            preprocess = model.preprocess
        for i in range(0, len(todo), 32):
            chunk, batch = [], []
            for p in todo[i:i + 32]:
                try:
                    batch.append(preprocess(load_image(p)))
                    chunk.append(p)
                except (ImageLoadError, OSError, ValueError) as e:
                    self._bad_images[p] = str(e)
            if not batch:
                continue
            with evaluating(model), model.adapters_off():
                with autocast_for(model.device):
                    feats = model.encode_image(torch.stack(batch).to(model.device))
                margins = predict_features(model, feats).margin.cpu().tolist()
                feats = F.normalize(feats.float(), dim=-1).cpu().numpy()
            for p, f, m in zip(chunk, feats, margins):
                self._features[p] = f
                self._zero_shot[p] = float(m)  # zero-shot logit margin (0 = undecided)

    def _adapted_scores(self, paths: Sequence[str]) -> dict[str, float]:
        from .scoring import score_files
        table = score_files(self.model, list(paths))
        return {p: m for p, m in zip(table["path"], table["logit_margin"]) if np.isfinite(m)}

    def suggest_next(self, k: int = 1, diverse_until: int = DIVERSE_UNTIL, strategy: str = "auto") -> list[str]:
        """Up to ``k`` unlabelled, unskipped images to label next (best first).

        strategy: ``"auto"`` (diverse while fewer than ``diverse_until`` labels, then uncertain), ``"diverse"``
        or ``"uncertain"``. See the module docstring for the exact rules.
        """
        if strategy not in ("auto", "diverse", "uncertain"):
            raise ValueError(f"strategy={strategy!r} is not allowed; use 'auto', 'diverse' or 'uncertain'")
        candidates = [p for p in self.images if not self.is_done(p)]
        if not candidates or k < 1:
            return []
        labelled = list(self.labels)
        self._encode(candidates + labelled)
        candidates = [p for p in candidates if p in self._features]
        picks: list[str] = []
        n_diverse = k if strategy == "diverse" else 0 if strategy == "uncertain" else \
            max(0, min(k, diverse_until - len(labelled)))
        if n_diverse:
            picks += self._farthest_points(candidates, [p for p in labelled if p in self._features], n_diverse)
        rest = [p for p in candidates if p not in picks]
        if len(picks) < k and rest:
            picks += self._most_uncertain(rest, k - len(picks))
        return picks

    def _farthest_points(self, candidates: list[str], anchors: list[str], n: int) -> list[str]:
        feats = np.stack([self._features[p] for p in candidates])
        picks: list[int] = []
        if anchors:
            best_sim = (feats @ np.stack([self._features[p] for p in anchors]).T).max(axis=1)
        else:
            centre = feats.mean(axis=0)
            first = int(np.argmax(feats @ centre))
            picks.append(first)
            best_sim = feats @ feats[first]
        while len(picks) < min(n, len(candidates)):
            masked = best_sim.copy()
            masked[picks] = np.inf
            nxt = int(np.argmin(masked))
            picks.append(nxt)
            best_sim = np.maximum(best_sim, feats @ feats[nxt])
        return [candidates[i] for i in picks[:n]]

    def _most_uncertain(self, candidates: list[str], n: int) -> list[str]:
        if self.adapted:
            adapted = self._adapted_scores(candidates)
            key = {p: -abs(adapted.get(p, self._zero_shot[p]) - self._zero_shot[p]) for p in candidates}
        else:
            key = {p: abs(self._zero_shot[p]) for p in candidates}  # margin closest to 0 = p_high closest to 0.5
        return sorted(candidates, key=lambda p: (key[p], self.images.index(p)))[:n]

    # ------------------------------------------------------------------ adaptation and checkpoints
    def adapt(self, config=None, on_step: Callable[[dict], None] | None = None,
              stop: Callable[[], bool] | None = None, *, shots: int | None = None, seed: int = 0,
              name: str | None = None, device: str | None = None, activate: bool | None = None):
        """Adapt a fresh zero-shot model on the labels, save a checkpoint and (when it finished) make it the
        session's model.

        shots: train on a seeded draw of this many labels (``clipiqa.data.few_shot``); the other labels become
            the test set whose SRCC is logged after every epoch (``kind="eval"`` records, ``srcc_test``). None or
            at least the number of labels: train on all of them (no test curve unless ``config.selection="val"``).
        activate: None (default): the new checkpoint becomes the session's model only when the run finished its
            budget; a run that ``stop`` ended early is under-trained, so it is saved (its card says stopped) but
            the session keeps scoring with what it had. True: activate it even when stopped. False: never.
            ``session.last_checkpoint`` names the new checkpoint either way; ``use_checkpoint(name)`` activates
            it later.
        Returns the ``clipiqa.adapt.History`` (``history.stopped`` is True when ``stop`` ended it early).
        """
        from .finetune import AdaptConfig, adapt
        from .checkpoint import save_checkpoint
        from .data import few_shot, split_hash
        if not isinstance(activate, (bool, type(None))):
            invalid("Session.adapt", "activate", activate, "use None (activate unless stopped early), True "
                    "(always) or False (never; use_checkpoint(name) later)")
        config = config or AdaptConfig()
        table = self.labelled_table()
        if len(table) < 2:
            raise NotEnoughLabelsError(f"label at least 2 images before adapting (now {len(table)}); more labels "
                                       "help")
        train, test = table, None
        if shots is not None and 0 < shots < len(table):
            train = few_shot(table, int(shots), seed)
            test = table.drop(index=train.index)
            test = test if len(test) >= 3 else None
        model = self.fresh_model(device)
        history = adapt(model, train, config, on_step=on_step, stop=stop, test=test)
        name = name or datetime.now().strftime("adapt-%Y%m%d-%H%M%S") + f"-{len(train)}labels"
        target, k = self.checkpoints_dir / name, 1
        while target.exists():  # never overwrite an earlier checkpoint (two runs within one second)
            k += 1
            target = self.checkpoints_dir / f"{name}-{k}"
        name = target.name
        last_eval = history.evals[-1] if history.evals else {}
        save_checkpoint(model, target, trainable=config.trainable, training=config.to_dict(),
                        data={"session": str(self.folder), "n_labels": len(train),
                              "labels_hash": split_hash(train), "n_test": 0 if test is None else len(test),
                              "test_hash": None if test is None else split_hash(test), "shots_seed": seed},
                        metrics={k: v for k, v in last_eval.items() if k.startswith("srcc")},
                        extra={"stopped": history.stopped, "steps": len(history.steps),
                               "selected_epoch": history.selected_epoch, "created_ns": time.time_ns()})
        atomic_write_text(target / "history.json", _json_text({
            "steps": history.steps, "evals": history.evals, "stopped": history.stopped, "note": history.note,
            "seconds": history.seconds, "selected_epoch": history.selected_epoch}))
        self.last_checkpoint = name
        if activate or (activate is None and not history.stopped):
            with self._lock:
                self._model = model
                self.active_checkpoint = name
                self._save_settings()
        return history

    def checkpoints(self) -> pd.DataFrame:
        """The session's checkpoints, oldest first: name, path, created, labels used, stopped, SRCC, random-init."""
        rows = []
        if self.checkpoints_dir.is_dir():
            for d in sorted(self.checkpoints_dir.iterdir()):
                card_path = d / "card.json"
                if not card_path.is_file():
                    continue
                card = json.loads(card_path.read_text())
                order = card.get("created_ns") or card_path.stat().st_mtime_ns
                rows.append({"order": order, "name": d.name, "path": str(d), "created": card.get("created"),
                             "n_labels": card.get("data", {}).get("n_labels"),
                             "trainable": card.get("trainable"), "stopped": card.get("stopped", False),
                             "srcc_test": card.get("metrics", {}).get("srcc_test"),
                             "random_init": bool(card.get("backbone", {}).get("random_init")),
                             "active": d.name == self.active_checkpoint})
        cols = ["name", "path", "created", "n_labels", "trainable", "stopped", "srcc_test", "random_init", "active"]
        table = pd.DataFrame(rows, columns=["order", *cols]).sort_values("order", kind="stable")
        return table[cols].reset_index(drop=True)

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
        extra = f", {RANDOM_INIT_BANNER}" if self.random_init else ""
        return (f"Session({str(self.folder)!r}: {len(self.images)} images, {self.progress_text()}, "
                f"model {self.model_name}{extra})")


__all__ = ["Session", "Scale", "ACR", "as_scale", "atomic_write_text", "RANDOM_INIT_BANNER", "DIVERSE_UNTIL",
           "DEFAULT_RATER", "REPEAT_SHARE", "REPEAT_GAP", "check_rater", "pick_repeat", "LabelNotSaved",
           "NotEnoughLabelsError"]
