"""A labelling-and-adaptation session persisted in one folder (DESIGN 6).

``Session(folder, images)`` holds an image set, the labels given so far, the settings, the model (loaded
lazily) and the checkpoints made from the labels. Everything lives under ``folder/``::

    settings.json        image list, rating scale, model preset/weights/device, active checkpoint
    labels.csv           path,score,content_id  (readable by clipiqa.data.read_labels(csv, score_range=...))
    state.json           position (current image), skipped images, undo stack
    checkpoints/<name>/  adapter.safetensors + card.json + history.json, one per adaptation

Every write is atomic (temporary file in the same folder, fsync, ``os.replace``): a crash while writing leaves
the previous file intact, so labels are never lost or half-written. ``Session.open(folder)`` resumes labels,
position and settings.

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
import io
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

SESSION_FORMAT = "clipiqa-session"
SESSION_VERSION = 1
DIVERSE_UNTIL = 10
RANDOM_INIT_BANNER = "random-init weights: scores are meaningless"


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

    Temporary file in the same folder, flush + fsync, ``os.replace`` over the target, then fsync of the folder
    (best effort). On any error the temporary file is removed and the old file is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------- the session
class Session:
    """Images, labels, model and checkpoints of one labelling/adaptation project, persisted in ``folder``.

    folder: where everything is saved (created if needed). An existing session there is resumed: its labels,
        position and settings are kept (never wiped); images given here are added to its image list.
    images: None (use the stored list), a list of paths, a folder (all images below it), or a table with a
        ``path`` column and optionally ``content_id`` (groups of images of the same scene; used for splits).
    scale: the rating scale (default ACR 1 bad .. 5 excellent); see :class:`Scale`.
    model_name / weights / device: passed to ``clipiqa.load_model`` when the model is first needed.
        ``model_name="tiny"`` is a random-init model for smoke runs: its numbers are meaningless.
    model: an already loaded ``IQAModel`` to use instead of loading one (e.g. shared between sessions);
        ``adapt`` still starts from a freshly loaded ``model_name``.
    """

    LABELS = "labels.csv"
    SETTINGS = "settings.json"
    STATE = "state.json"
    CHECKPOINTS = "checkpoints"

    def __init__(self, folder: str | os.PathLike, images: Any = None, scale: Any = None,
                 model_name: str | None = None, weights: str | None = None, device: str | None = None,
                 model: Any = None):
        self.folder = Path(folder).expanduser().resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        stored = self._read_json(self.SETTINGS) or {}
        if stored and stored.get("format") != SESSION_FORMAT:
            raise ValueError(f"{self.folder / self.SETTINGS} is not a clipiqa session settings file")
        self.scale = as_scale(scale if scale is not None else stored.get("scale"))
        self.model_name = model_name or stored.get("model_name") or "vitb16-openai"
        self.weights = weights if weights is not None else stored.get("weights")
        self.device = device if device is not None else stored.get("device")
        self.active_checkpoint: str | None = stored.get("checkpoint")
        self.content_ids: dict[str, str] = dict(stored.get("content_ids", {}))
        self.images: list[str] = list(stored.get("images", []))
        self.created = stored.get("created") or _now()
        self._add_images(images)
        self.labels: dict[str, dict[str, Any]] = self._read_labels_file()
        for path, row in self.labels.items():
            if row.get("content_id"):
                self.content_ids.setdefault(path, row["content_id"])
        self._check_labels_fit_scale()
        if not self.images:
            raise ValueError(f"no images for the session in {self.folder}: give image files, a folder of images, "
                             "or a table with a 'path' column as images=")
        state = self._read_json(self.STATE) or {}
        self.skipped: list[str] = [p for p in state.get("skipped", []) if p not in self.labels]
        self._undo: list[dict[str, Any]] = list(state.get("undo", []))
        self.position = self._restore_position(state)
        self._model = model
        self._features: dict[str, np.ndarray] = {}
        self._zero_shot: dict[str, float] = {}
        self._bad_images: dict[str, str] = {}
        self._save_settings()
        self._save_state()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def open(cls, folder: str | os.PathLike, **overrides: Any) -> "Session":
        """Resume the session saved in ``folder`` (labels, position, settings); ``overrides`` as in ``__init__``."""
        if not (Path(folder).expanduser() / cls.SETTINGS).is_file():
            raise FileNotFoundError(f"no clipiqa session in {folder}: {cls.SETTINGS} is missing. Start one with "
                                    "Session(folder, images=...)")
        return cls(folder, **overrides)

    def _add_images(self, images: Any) -> None:
        if images is None:
            return
        if isinstance(images, pd.DataFrame):
            if "path" not in images:
                raise ValueError(f"an image table needs a 'path' column; got {list(images.columns)}")
            paths = [os.path.abspath(p) for p in images["path"]]
            if "content_id" in images:
                for p, c in zip(paths, images["content_id"]):
                    if isinstance(c, str) and c:
                        self.content_ids[p] = c
        else:
            from .imageio import list_images
            if isinstance(images, (str, os.PathLike)):
                images = [images]
            paths = [os.path.abspath(p) for p in list_images(list(images))]
        known = set(self.images)
        for p in paths:
            if p not in known:
                known.add(p)
                self.images.append(p)

    def _restore_position(self, state: Mapping[str, Any]) -> int:
        current = state.get("current")
        if current in self.images:
            return self.images.index(current)
        pos = int(state.get("position", 0))
        return min(max(pos, 0), max(len(self.images) - 1, 0))

    def _check_labels_fit_scale(self) -> None:
        lo, hi = self.scale.range
        bad = [p for p, row in self.labels.items() if not lo <= row["score"] <= hi]
        if bad:
            raise ValueError(f"{len(bad)} stored label(s) lie outside the {self.scale.name} scale "
                             f"({_num(lo)}..{_num(hi)}), e.g. {bad[0]}; open the session with its own scale")

    # ------------------------------------------------------------------ files
    @property
    def labels_path(self) -> Path:
        return self.folder / self.LABELS

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

    def _read_labels_file(self) -> dict[str, dict[str, Any]]:
        if not self.labels_path.is_file():
            return {}
        out: dict[str, dict[str, Any]] = {}
        with open(self.labels_path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("path"):
                    out[row["path"]] = {"score": float(row["score"]), "content_id": row.get("content_id") or ""}
        for p in out:
            if p not in self.images:
                self.images.append(p)
        return out

    @staticmethod
    def _labels_text(labels: Mapping[str, Mapping[str, Any]]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "score", "content_id"])
        for path, row in labels.items():
            w.writerow([path, _num(row["score"]), row.get("content_id", "")])
        return buf.getvalue()

    def _save_labels(self, labels: Mapping[str, Mapping[str, Any]]) -> None:
        atomic_write_text(self.labels_path, self._labels_text(labels))

    def _save_state(self) -> None:
        atomic_write_text(self.folder / self.STATE, _json_text({
            "position": self.position, "current": self.current, "skipped": self.skipped,
            "undo": self._undo[-500:], "updated": _now()}))

    def _save_settings(self) -> None:
        atomic_write_text(self.folder / self.SETTINGS, _json_text({
            "format": SESSION_FORMAT, "version": SESSION_VERSION, "created": self.created,
            "scale": self.scale.to_dict(), "model_name": self.model_name, "weights": self.weights,
            "device": self.device, "checkpoint": self.active_checkpoint, "images": self.images,
            "content_ids": self.content_ids}))

    # ------------------------------------------------------------------ labelling
    @property
    def current(self) -> str | None:
        return self.images[self.position] if self.images else None

    def _path(self, path: str | os.PathLike | None) -> str:
        if path is None:
            if self.current is None:
                raise ValueError("this session has no images")
            return self.current
        p = os.fspath(path)
        if p in self.images:
            return p
        absolute = os.path.abspath(p)
        if absolute not in self.images:
            raise KeyError(f"{p} is not one of this session's {len(self.images)} images; add it with "
                           "Session(folder, images=[...])")
        return absolute

    def label(self, path: str | os.PathLike | None, score: float) -> None:
        """Label ``path`` (None = the current image) with ``score`` on the session's scale.

        The label is on disk (``labels.csv``, written atomically) when this returns; if the write fails the
        session keeps its previous labels and the error propagates.
        """
        score = self.scale.check(score)
        with self._lock:
            p = self._path(path)
            labels = dict(self.labels)
            labels[p] = {"score": score, "content_id": self.content_ids.get(p, "")}
            self._save_labels(labels)
            previous = self.labels.get(p)
            self._undo.append({"op": "label", "path": p, "previous": previous and previous["score"],
                               "was_skipped": p in self.skipped, "position": self.position})
            self.labels = labels
            self.skipped = [s for s in self.skipped if s != p]
            self._save_state()

    def skip(self, path: str | os.PathLike | None = None) -> None:
        """Mark ``path`` (None = the current image) as skipped: not labelled, not suggested again."""
        with self._lock:
            p = self._path(path)
            if p in self.skipped:
                return
            self._undo.append({"op": "skip", "path": p, "position": self.position})
            self.skipped.append(p)
            self._save_state()

    def undo(self) -> str | None:
        """Revert the last label or skip; returns its image path (now current) or None when nothing to undo."""
        with self._lock:
            if not self._undo:
                return None
            action = self._undo[-1]
            p = action["path"]
            if action["op"] == "label":
                labels = dict(self.labels)
                if action.get("previous") is None:
                    labels.pop(p, None)
                else:
                    labels[p] = {"score": float(action["previous"]), "content_id": self.content_ids.get(p, "")}
                self._save_labels(labels)
                self.labels = labels
                if action.get("was_skipped") and p not in self.skipped:
                    self.skipped.append(p)
            else:
                self.skipped = [s for s in self.skipped if s != p]
            self._undo.pop()
            if p in self.images:
                self.position = self.images.index(p)
            self._save_state()
            return p

    def goto(self, where: int | str | os.PathLike) -> str:
        """Make an image current (by index or path); returns its path. The position is saved."""
        with self._lock:
            if isinstance(where, (int, np.integer)):
                if not 0 <= int(where) < len(self.images):
                    raise IndexError(f"image index {where} outside 0..{len(self.images) - 1}")
                self.position = int(where)
            else:
                self.position = self.images.index(self._path(where))
            self._save_state()
            return self.current

    def step(self, delta: int) -> str:
        """Move ``delta`` images forward (negative: back), clamped to the ends."""
        return self.goto(min(max(self.position + delta, 0), len(self.images) - 1))

    def is_done(self, path: str) -> bool:
        return path in self.labels or path in self.skipped

    def next_unlabelled(self, after: int | None = None) -> str | None:
        """The first image after ``after`` (default: the current one), wrapping around, that is neither labelled
        nor skipped; None when every image is done."""
        start = self.position if after is None else after
        n = len(self.images)
        for k in range(1, n + 1):
            p = self.images[(start + k) % n]
            if not self.is_done(p):
                return p
        return None

    def counts(self) -> dict[str, int]:
        n_l, n_s = len(self.labels), len(self.skipped)
        return {"labelled": n_l, "skipped": n_s, "to_go": len(self.images) - n_l - n_s, "total": len(self.images)}

    def progress_text(self) -> str:
        c = self.counts()
        return f"{c['labelled']} labelled, {c['skipped']} skipped, {c['to_go']} to go"

    def labelled_table(self) -> pd.DataFrame:
        """The labels as the common table (``path, mos, q, mos_std, content_id, ...``), read back from
        ``labels.csv`` with ``clipiqa.data.read_labels`` on this session's scale (so what is on disk is what
        trains)."""
        from .data import read_labels
        if not self.labels:
            df = pd.DataFrame(columns=["path", "mos", "q", "mos_std", "content_id", "distortion", "level"])
            df.attrs.update(score_range=self.scale.range, dataset="custom")
            return df
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
        model = self.model
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
            with torch.inference_mode(), model.adapters_off():
                feats = model.encode_image(torch.stack(batch).to(model.device)).float()
                scores = model.heads(feats, scenes=False)[0].softmax(-1)[:, 0]
                feats = F.normalize(feats, dim=-1).cpu().numpy()
            for p, f, s in zip(chunk, feats, scores.cpu().tolist()):
                self._features[p] = f
                self._zero_shot[p] = float(s)

    def _adapted_scores(self, paths: Sequence[str]) -> dict[str, float]:
        from .scoring import score_files
        table = score_files(self.model, list(paths))
        return {p: s for p, s in zip(table["path"], table["score"]) if np.isfinite(s)}

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
            key = {p: abs(self._zero_shot[p] - 0.5) for p in candidates}
        return sorted(candidates, key=lambda p: (key[p], self.images.index(p)))[:n]

    # ------------------------------------------------------------------ adaptation and checkpoints
    def adapt(self, config=None, on_step: Callable[[dict], None] | None = None,
              stop: Callable[[], bool] | None = None, *, shots: int | None = None, seed: int = 0,
              name: str | None = None, device: str | None = None):
        """Adapt a fresh zero-shot model on the labels, save a checkpoint, make it the session's model.

        shots: train on a seeded draw of this many labels (``clipiqa.data.few_shot``); the other labels become
            the test set whose SRCC is logged after every epoch (``kind="eval"`` records, ``srcc_test``). None or
            at least the number of labels: train on all of them (no test curve unless ``config.selection="val"``).
        Returns the ``clipiqa.adapt.History`` (``history.stopped`` is True when ``stop`` ended it early; the
        checkpoint is saved either way and its card says so).
        """
        from .finetune import AdaptConfig, adapt
        from .checkpoint import save_checkpoint
        from .data import few_shot, split_hash
        config = config or AdaptConfig()
        table = self.labelled_table()
        if len(table) < 2:
            raise ValueError(f"label at least 2 images before adapting (now {len(table)}); more labels help")
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


__all__ = ["Session", "Scale", "ACR", "as_scale", "atomic_write_text", "RANDOM_INIT_BANNER", "DIVERSE_UNTIL"]
