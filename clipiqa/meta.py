"""Meta-prompt pre-training: proper first-order meta-learning over distortion-type tasks (DESIGN 2.4).

``meta_pretrain(model, tasks, config)`` reads top to bottom:

1. split the source tasks into *training* tasks and *held-out* tasks (``config.holdout_tasks``); each task's
   table is split by content into support (``support_fraction``) and query;
2. per epoch, shuffle the training tasks into meta batches of ``tasks_per_batch``; per meta batch and per
   task: copy the meta parameters ``theta`` into the model, take ``inner_steps`` Adam steps (lr ``inner_lr``,
   fresh optimizer state per task) on support batches, giving ``phi``; then
   - ``reptile``: the task's direction is ``phi - theta``;
   - ``fomaml`` (first-order MAML): the direction is ``-grad L_query(phi)``, the quality-loss gradient on a
     query batch at ``phi`` (QGR applies to it as to inner steps);
3. outer update, a plain SGD step with the meta learning rate ``beta``:
   ``theta <- theta + beta * mean_over_tasks(direction)``, i.e. Reptile ``theta += beta * mean(phi - theta)``
   and FOMAML ``theta -= beta * mean(grad)``; the model is then reset to the new ``theta``;
4. every ``eval_every`` epochs (and once before training, epoch 0), each *held-out source task* is scored:
   from ``theta``, ``inner_steps`` steps on its support, then SRCC on its query (``srcc_adapted``; ``srcc_init``
   is the SRCC of ``theta`` itself). The meta parameters with the best mean held-out SRCC are kept.

Selection reads **only held-out source tasks**: there is no target-data argument at all, and the held-out task
names are disjoint from the training task names (asserted). Losses are the quality loss with the semantic
(scene) loss feeding QGR, exactly as in few-shot adaptation (``clipiqa.adapt``); QGR defaults to off here
(``lam = 0``) because the released code does not regularise meta training; turn it on with ``qgr=QGRConfig()``.

Determinism: every random draw of a task visit (support batches, crops, dropout) comes from a seed derived
from ``(seed, epoch, meta step, task name)``, never from a shared stream. So a run resumed from a periodic
checkpoint continues with exactly the numbers of an uninterrupted run, and under ``torchrun`` each task gives
the same result whichever rank computes it.

Distributed (``torchrun``, see :mod:`clipiqa.distributed`): the tasks of a meta batch are spread over ranks
(task ``i`` of the batch on rank ``i % world_size``); per-task directions are summed over ranks with one
all-reduce and divided by the number of tasks in the batch, so every rank applies the identical outer update.
Held-out tasks are evaluated sharded the same way. Only rank 0 writes files.

Numbers from the random-init ``tiny`` preset are meaningless: they show that the machinery runs.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from . import distributed as ddp
from .checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint
from .configs import from_dict, invalid
from .data.demo import stable_seed
from .data.distortions import DISTORTIONS, apply_distortion, list_distortions
from .data.splits import holdout as _holdout
from .data.transforms import VARIANTS, eval_transform, train_transform
from .finetune import AdaptationDivergedError, AdaptConfig, EncodedSet, compute_gradients, train_step
from .imageio import list_images, load_image, load_rgb_array
from .metrics import srcc
from .qgr import QGRConfig

__all__ = ["ALGORITHMS", "MetaConfig", "Task", "MetaHistory", "MetaDivergedError", "tasks_from_dataset",
           "synthetic_tasks", "split_tasks", "task_split", "meta_pretrain", "reptile_update", "fomaml_update",
           "param_hash", "LABEL_KIND"]

ALGORITHMS = ("reptile", "fomaml")
SELECTION_METRICS = ("adapted", "init")
META_TRAINABLE = ("prompts", "text", "paper")
REFERENCE = "reference"
LABEL_KIND = "synthetic severity (q = 1 - level / 5), not human MOS"
STATE_VERSION = 1
_TIMING_KEYS = ("seconds",)


def _fail(field_name: str, value: Any, allowed: str) -> None:
    invalid("MetaConfig", field_name, value, allowed)


# ============================================================================================ configuration
@dataclass(frozen=True)
class MetaConfig:
    """Meta pre-training settings; defaults follow the released code where it had one (DESIGN 2.4).

    algorithm: ``reptile`` or ``fomaml`` (first-order MAML).
    inner_steps: Adam steps per task visit, from ``theta`` (k).
    inner_lr: inner Adam learning rate (1e-4, as released); Adam state is fresh for every task visit.
    meta_lr: outer step size beta (0.01, as released); the outer optimizer is plain SGD on the mean direction.
    epochs: passes over the training tasks (50, as released).
    tasks_per_batch: tasks per meta step (the meta batch); the last batch of an epoch may be smaller.
    support_fraction: share of each task's *content groups* in its support split (the rest is query).
    trainable: ``prompts`` (text context + visual prompts + their projection and norm: the released set),
        ``text`` (context only) or ``paper`` (context + tuned copies of the last ``tuned_blocks`` blocks).
    qgr: the gradient regulariser for inner steps and FOMAML query gradients; default off (lam = 0).
    holdout_tasks: held-out *source* tasks used only for checkpoint selection: a fraction of the tasks
        (default 0.2, at least one task, at least one left for training) drawn with ``seed``, or explicit names.
    selection_metric: ``adapted`` (held-out SRCC after ``inner_steps`` steps on the task's support: what the meta
        init is for) or ``init`` (SRCC of ``theta`` itself).
    eval_every / checkpoint_every: in epochs; the last epoch is always evaluated.
    batch_size / eval_batch_size: images per inner step / per scoring chunk.
    augment: ``model`` (random crop + flip), ``paper`` (244 squash, crop + flip, ImageNet stats) or ``none``.
    n_views: 0 = fresh crops for every inner step (no per-task cache, memory bounded); >= 1 = cache that many
        crops per support image per task (frozen prefix and teacher logits, as ``adapt``), built on first visit.
    image_cache: decoded images kept in memory (least recently used are dropped).
    amp: bf16 autocast; None = on for CUDA.
    """

    algorithm: str = "reptile"
    inner_steps: int = 5
    inner_lr: float = 1e-4
    meta_lr: float = 0.01
    epochs: int = 50
    tasks_per_batch: int = 4
    support_fraction: float = 0.8
    trainable: str = "prompts"
    tuned_blocks: int = 4
    qgr: QGRConfig = field(default_factory=lambda: QGRConfig(lam=0.0))
    holdout_tasks: float | tuple[str, ...] = 0.2
    selection_metric: str = "adapted"
    eval_every: int = 1
    checkpoint_every: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64
    augment: str = "model"
    n_views: int = 0
    image_cache: int = 512
    seed: int = 0
    amp: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.qgr, dict):
            object.__setattr__(self, "qgr", QGRConfig(**self.qgr))
        if isinstance(self.holdout_tasks, (list, tuple)):
            object.__setattr__(self, "holdout_tasks", tuple(self.holdout_tasks))
        if self.algorithm not in ALGORITHMS:
            _fail("algorithm", self.algorithm, f"use one of {', '.join(ALGORITHMS)}")
        for name in ("inner_steps", "epochs", "tasks_per_batch", "tuned_blocks", "eval_every", "checkpoint_every",
                     "batch_size", "eval_batch_size", "image_cache"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(name, value, "use a positive integer")
        if isinstance(self.n_views, bool) or not isinstance(self.n_views, int) or self.n_views < 0:
            _fail("n_views", self.n_views, "use 0 (fresh crops every step) or a positive integer")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _fail("seed", self.seed, "use a non-negative integer")
        for name in ("inner_lr", "meta_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                _fail(name, value, "use a finite positive number")
        if not (isinstance(self.support_fraction, (int, float)) and 0 < self.support_fraction < 1):
            _fail("support_fraction", self.support_fraction, "use a fraction in (0, 1)")
        if self.trainable not in META_TRAINABLE:
            _fail("trainable", self.trainable, f"use one of {', '.join(META_TRAINABLE)}")
        if not isinstance(self.qgr, QGRConfig):
            _fail("qgr", self.qgr, "use a QGRConfig (or its dict)")
        self._check_holdout()
        if self.selection_metric not in SELECTION_METRICS:
            _fail("selection_metric", self.selection_metric, f"use one of {', '.join(SELECTION_METRICS)}")
        if self.augment not in ("none",) + VARIANTS:
            _fail("augment", self.augment, "use 'none', 'model' or 'paper'")
        if self.amp not in (None, True, False):
            _fail("amp", self.amp, "use None (auto), True or False")

    def _check_holdout(self) -> None:
        h = self.holdout_tasks
        if isinstance(h, tuple):
            if not h or not all(isinstance(n, str) and n for n in h) or len(set(h)) != len(h):
                _fail("holdout_tasks", h, "give a fraction in (0, 1) or at least one distinct task name")
        elif isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 < h < 1:
            _fail("holdout_tasks", h, "give a fraction in (0, 1) or at least one distinct task name")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["qgr"] = asdict(self.qgr)
        d["holdout_tasks"] = list(self.holdout_tasks) if isinstance(self.holdout_tasks, tuple) \
            else self.holdout_tasks
        return d

    @classmethod
    def from_dict(cls, data) -> "MetaConfig":
        return from_dict(cls, data)

    def adapt_config(self) -> AdaptConfig:
        """The step settings shared with few-shot adaptation (QGR, AMP), for ``clipiqa.adapt``'s step."""
        return AdaptConfig(trainable="prompts", lr=self.inner_lr, qgr=self.qgr, amp=self.amp,
                           batch_size=self.batch_size, eval_batch_size=self.eval_batch_size, augment=self.augment)


# ============================================================================================ tasks
@dataclass(frozen=True, eq=False)
class Task:
    """One meta-learning task: the images of one distortion type, in the common table
    (``path``, ``q`` in [0, 1] higher = better, ``content_id``; also ``distortion``, ``level``)."""

    name: str
    table: pd.DataFrame
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task needs a non-empty name; got {self.name!r}")
        missing = [c for c in ("path", "q", "content_id") if c not in self.table.columns]
        if missing:
            raise ValueError(f"task {self.name!r}: table lacks column(s) {missing}; it needs path, q (in [0, 1], "
                             "higher = better) and content_id")
        q = pd.to_numeric(self.table["q"], errors="coerce").to_numpy(dtype=float)
        if len(q) == 0 or not np.all(np.isfinite(q)) or q.min() < 0 or q.max() > 1:
            raise ValueError(f"task {self.name!r}: q must be finite and in [0, 1] for every row "
                             f"({len(q)} rows)")
        if self.table["content_id"].nunique() < 2:
            raise ValueError(f"task {self.name!r}: needs at least 2 content groups for a support/query split; "
                             f"has {self.table['content_id'].nunique()}")

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {len(self.table)} images, {self.table['content_id'].nunique()} contents)"


def task_split(task: Task, config: MetaConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(support, query)`` of a task: split by content (no content on both sides), seeded per task."""
    seed = stable_seed(config.seed, "split", task.name)
    support, query = _holdout(task.table, 1.0 - float(config.support_fraction), seed=seed, by="content")
    return support.reset_index(drop=True), query.reset_index(drop=True)


def tasks_from_dataset(df: pd.DataFrame, types: Iterable[str] | None = None, prefix: str | None = None
                       ) -> list[Task]:
    """One task per distortion type of a dataset in the common table (KADID-10k: all 25 types; TID2013: 24).

    Task names are ``"<dataset>:<type code>"`` (``prefix`` replaces the dataset name), so tasks of several
    datasets can be pooled. ``types`` keeps only these type codes.
    """
    if "distortion" not in df.columns or df["distortion"].isna().all():
        raise ValueError("the table has no distortion types (column 'distortion'); meta tasks are distortion "
                         "types: use KADID-10k, TID2013 or synthetic_tasks")
    dataset = prefix or str(df.attrs.get("dataset") or "data")
    names = _distortion_names(dataset)
    table = df[df["distortion"].notna()]
    codes = sorted(table["distortion"].astype(str).unique())
    if types is not None:
        wanted = [str(t) for t in types]
        unknown = sorted(set(wanted) - set(codes))
        if unknown:
            raise ValueError(f"distortion types {unknown} are not in {dataset}; it has {', '.join(codes)}")
        codes = [c for c in codes if c in set(wanted)]
    tasks = []
    for code in codes:
        part = table[table["distortion"].astype(str) == code].reset_index(drop=True)
        part.attrs = dict(df.attrs)
        tasks.append(Task(f"{dataset}:{code}", part, names.get(code, "")))
    return tasks


def _distortion_names(dataset: str) -> dict[str, str]:
    from .data.readers import DATASETS
    return dict(getattr(DATASETS.get(dataset), "distortion_names", None) or {})


def synthetic_tasks(references: Mapping[str, np.ndarray] | str | os.PathLike, types: Iterable[str] | None = None,
                    levels: Iterable[int] = (1, 2, 3, 4, 5), size: int = 256, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None) -> list[Task]:
    """One task per distortion type, made from any reference images.

    references: ``{name: uint8 H x W x 3}`` (e.g. :func:`clipiqa.data.demo_references`) or a folder of the
        user's own photos (unreadable files are skipped with a warning naming them).
    types: distortion names (default: all of :func:`clipiqa.data.list_distortions`).
    levels: severities; ``q = 1 - level / 5``. Every task also holds the clean references at ``q = 1``.
    size: references are centre-cropped to squares of ``size`` pixels.
    cache_dir: where the PNGs go (default ``$CLIPIQA_CACHE`` or ``~/.cache/clipiqa``, in a folder named by a hash
        of the settings and the reference pixels); existing files are reused, new ones written atomically.

    Labels are synthetic severities, never human opinion scores.
    """
    refs = _load_references(references, int(size))
    type_list = _resolve_types(types)
    level_list = sorted({int(v) for v in levels})
    if not level_list or level_list[0] < 1 or level_list[-1] > 5:
        raise ValueError(f"levels must be integers from 1 to 5, got {list(levels)}")
    folder = _synthetic_folder(refs, type_list, level_list, int(size), int(seed), cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ref_rows = [_row(_ensure_png(folder / f"{c}.png", lambda c=c: refs[c]), c, REFERENCE, 0) for c in refs]
    tasks = []
    for t in type_list:
        rows = list(ref_rows)
        for c, ref in refs.items():
            rng_seed = stable_seed(seed, c, t)  # the levels of one photo share their random draws (nested)
            for lv in level_list:
                path = _ensure_png(folder / f"{c}__{t}__{lv}.png",
                                   lambda ref=ref, t=t, lv=lv, s=rng_seed: apply_distortion(ref, t, lv, rng=s))
                rows.append(_row(path, c, t, lv))
        table = pd.DataFrame(rows)
        table.attrs.update({"dataset": "synthetic", "synthetic": True, "label_kind": LABEL_KIND,
                            "cache_dir": str(folder)})
        tasks.append(Task(t, table, DISTORTIONS[t].description))
    return tasks


def _row(path: Path, content: str, distortion: str, level: int) -> dict:
    return {"path": str(path), "mos": float(level), "q": 1.0 - level / 5.0, "mos_std": float("nan"),
            "content_id": content, "distortion": distortion, "level": int(level)}


def _resolve_types(types: Iterable[str] | None) -> list[str]:
    if types is None:
        return list_distortions()
    names = list(dict.fromkeys([types] if isinstance(types, str) else types))
    unknown = [t for t in names if t not in DISTORTIONS]
    if unknown or not names:
        raise ValueError(f"unknown distortion types {unknown}; valid: {', '.join(sorted(DISTORTIONS))}")
    return names


def _square(img: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(img[..., :3]).astype(np.uint8, copy=False))
    return np.asarray(ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    out, i = base, 1
    while out in taken:
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


def _load_references(references, size: int) -> dict[str, np.ndarray]:
    if size < 16:
        raise ValueError(f"size={size} is too small; use at least 16 pixels (224 or more for real models)")
    if isinstance(references, Mapping):
        items = list(references.items())
    else:
        folder = Path(references)
        if not folder.is_dir():
            raise FileNotFoundError(f"reference folder {folder} does not exist")
        items, failed = [], []
        for p in list_images([str(folder)]):
            try:
                items.append((str(Path(p).relative_to(folder).with_suffix("")), load_rgb_array(p)))
            except (ValueError, OSError) as e:
                failed.append(f"{p}: {e}")
        if failed:
            warnings.warn(f"skipped {len(failed)} unreadable reference image(s): " + "; ".join(failed),
                          RuntimeWarning, stacklevel=3)
    taken: set[str] = set()
    refs = {_safe_name(str(n), taken): _square(np.asarray(img), size) for n, img in items}
    if len(refs) < 2:
        raise ValueError(f"need at least 2 reference images to build tasks (support and query are split by "
                         f"content); got {len(refs)}")
    return refs


def _synthetic_folder(refs: dict[str, np.ndarray], types: list[str], levels: list[int], size: int, seed: int,
                      cache_dir) -> Path:
    digest = hashlib.sha256()
    settings = {"v": 1, "types": types, "levels": levels, "size": size, "seed": seed,
                "parameters": {t: repr(DISTORTIONS[t].levels) for t in types}}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, img in refs.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(img.tobytes()).digest())
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get("CLIPIQA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "clipiqa")
    return Path(root) / f"meta-tasks-{digest.hexdigest()[:12]}"


def _ensure_png(path: Path, make: Callable[[], np.ndarray]) -> Path:
    """Write ``make()`` as a PNG unless the file exists (written atomically, so it is complete)."""
    if not path.is_file():
        fd, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                Image.fromarray(make()).save(f, "PNG", compress_level=1)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path.resolve()


def split_tasks(tasks: Sequence[Task], holdout: float | Sequence[str], seed: int = 0
                ) -> tuple[list[Task], list[Task]]:
    """``(training tasks, held-out tasks)``. A fraction draws round(fraction * n) tasks (at least 1, leaving at
    least 1) from a seeded permutation of the sorted names; names pick exactly those tasks."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"task names must be unique; repeated: {dup}")
    if len(tasks) < 2:
        raise ValueError(f"meta pre-training needs at least 2 source tasks (one held out for selection); "
                         f"got {len(tasks)}")
    if isinstance(holdout, (int, float)) and not isinstance(holdout, bool):
        n = min(max(int(math.floor(float(holdout) * len(tasks) + 0.5)), 1), len(tasks) - 1)
        order = sorted(names)
        perm = np.random.default_rng(stable_seed(seed, "holdout")).permutation(len(order))
        held = {order[i] for i in perm[:n]}
    else:
        held = set(holdout)
        unknown = sorted(held - set(names))
        if unknown:
            raise ValueError(f"held-out task(s) {unknown} are not among the source tasks {sorted(names)}")
        if len(held) >= len(tasks):
            raise ValueError("every task is held out; leave at least one task for meta training")
    train = [t for t in tasks if t.name not in held]
    return train, [t for t in tasks if t.name in held]


# ============================================================================================ history
class MetaDivergedError(RuntimeError):
    """A non-finite loss or gradient in a task visit; the model is reset to the last meta parameters."""

    def __init__(self, message: str, history: "MetaHistory"):
        super().__init__(message)
        self.history = history


@dataclass
class MetaHistory:
    """What happened: one row per meta step and per evaluation, the task starts (a hash of the parameters at
    the start of every task visit) and the selection outcome."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    task_starts: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    train_tasks: list[str] = field(default_factory=list)
    holdout_tasks: list[str] = field(default_factory=list)
    trainable: list[str] = field(default_factory=list)
    initial_hash: str = ""
    best_score: float | None = None
    best_epoch: int | None = None
    best_meta_step: int | None = None
    stopped: bool = False
    resumed_from: int | None = None
    note: str = ""
    seconds: float = 0.0

    def steps_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.steps)

    def evals_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals)

    def to_frame(self) -> pd.DataFrame:
        """Steps and evaluations in time order (the ``history.csv`` table)."""
        frame = pd.DataFrame(self.steps + self.evals)
        if frame.empty:
            return frame
        return frame.sort_values("meta_step", kind="mergesort").reset_index(drop=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetaHistory":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def param_hash(params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str:
    """A short fingerprint of named tensors (names, shapes, float32 values)."""
    items = params.items() if isinstance(params, Mapping) else params
    digest = hashlib.blake2b(digest_size=8)
    for name, t in sorted(items, key=lambda kv: kv[0]):
        a = t.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(a.shape)}".encode())
        digest.update(a.numpy().tobytes())
    return digest.hexdigest()


# ============================================================================================ outer updates
def reptile_update(theta: Mapping[str, torch.Tensor], phis: Sequence[Mapping[str, torch.Tensor]], beta: float
                   ) -> dict[str, torch.Tensor]:
    """``theta + beta * mean_t(phi_t - theta)`` (a new dict)."""
    return _outer(theta, [{n: phi[n] - theta[n] for n in theta} for phi in phis], beta)


def fomaml_update(theta: Mapping[str, torch.Tensor], grads: Sequence[Mapping[str, torch.Tensor]], beta: float
                  ) -> dict[str, torch.Tensor]:
    """``theta - beta * mean_t(grad_t)``, the query gradients at each task's ``phi`` (a new dict)."""
    return _outer(theta, [{n: -g[n] for n in theta} for g in grads], beta)


def _outer(theta: Mapping[str, torch.Tensor], directions: Sequence[Mapping[str, torch.Tensor]], beta: float
           ) -> dict[str, torch.Tensor]:
    total = {n: sum((d[n] for d in directions), torch.zeros_like(theta[n])) for n in theta}
    return _apply_outer(theta, total, len(directions), beta)


def _apply_outer(theta: Mapping[str, torch.Tensor], summed: Mapping[str, torch.Tensor], n_tasks: int,
                 beta: float) -> dict[str, torch.Tensor]:
    """The outer SGD step on the mean direction: ``theta + beta * summed / n_tasks``."""
    return {n: theta[n] + (beta / n_tasks) * summed[n] for n in theta}


# ============================================================================================ the run
class _ImageStore:
    """Decoded images by path, least recently used dropped beyond ``capacity``."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: dict[str, Image.Image] = {}

    def get(self, paths: Iterable[str]) -> list[Image.Image]:
        out = []
        for p in paths:
            im = self._items.pop(p, None)
            if im is None:
                im = load_image(p)
            self._items[p] = im  # most recent last
            out.append(im)
        while len(self._items) > self.capacity:
            self._items.pop(next(iter(self._items)))
        return out


@dataclass
class _Visit:
    """What one task visit returns."""

    direction: dict[str, torch.Tensor] | None   # phi - theta (Reptile) or -grad (FOMAML); None when stopped
    loss_first: float = float("nan")
    loss_last: float = float("nan")
    query_loss: float = float("nan")


class _Runner:
    """Holds the model, the trainable tensors and the per-task data; runs task visits and evaluations."""

    def __init__(self, model, config: MetaConfig, tasks: Sequence[Task]):
        self.model, self.config = model, config
        self.step_config = config.adapt_config()
        self.names = model.set_trainable(config.trainable, config.tuned_blocks)
        self.params = [p for _, p in model.named_parameters() if p.requires_grad]
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        model.eval()
        self.start = model.first_trainable_visual_block()
        variant = "paper" if config.augment == "paper" else "model"
        self.train_tf = eval_transform(model, variant) if config.augment == "none" else \
            train_transform(model, config.augment)
        self.eval_tf = eval_transform(model, variant)
        self.images = _ImageStore(config.image_cache)
        self.splits = {t.name: task_split(t, config) for t in tasks}
        self.view_cache: dict[str, EncodedSet] = {}

    # ------------------------------------------------------------------ parameters
    def theta(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.named}

    def load(self, theta: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(theta[n])

    # ------------------------------------------------------------------ randomness
    @contextmanager
    def seeded(self, *parts: Any) -> Iterator[np.random.Generator]:
        """torch (crops, dropout) and numpy (batches) draws from a seed derived from ``parts`` only."""
        s = stable_seed(self.config.seed, *parts)
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s % (2 ** 63))
            yield np.random.default_rng(s)

    # ------------------------------------------------------------------ batches
    def _batch(self, table: pd.DataFrame, rng: np.random.Generator, transform) -> tuple:
        n = len(table)
        index = np.sort(rng.choice(n, size=min(self.config.batch_size, n), replace=False))
        rows = table.iloc[index]
        encoded = EncodedSet(self.model, self.images.get(rows["path"]), transform, 1, self.start,
                             self.config.eval_batch_size)
        q = torch.tensor(rows["q"].to_numpy(dtype=float), dtype=torch.float32, device=self.model.device)
        k = len(index)
        return encoded, torch.arange(k), torch.zeros(k, dtype=torch.long), q

    def _cached_batch(self, name: str, table: pd.DataFrame, rng: np.random.Generator) -> tuple:
        if name not in self.view_cache:
            with self.seeded("views", name):
                self.view_cache[name] = EncodedSet(self.model, self.images.get(table["path"]), self.train_tf,
                                                   self.config.n_views, self.start, self.config.eval_batch_size)
        encoded = self.view_cache[name]
        n = len(table)
        index = torch.from_numpy(np.sort(rng.choice(n, size=min(self.config.batch_size, n), replace=False)))
        view = torch.from_numpy(rng.integers(0, self.config.n_views, size=len(index)))
        q = torch.tensor(table["q"].to_numpy(dtype=float), dtype=torch.float32, device=self.model.device)
        return encoded, index, view, q

    def support_batch(self, name: str, rng: np.random.Generator) -> tuple:
        support = self.splits[name][0]
        if self.config.n_views:
            return self._cached_batch(name, support, rng)
        return self._batch(support, rng, self.train_tf)

    # ------------------------------------------------------------------ one task
    def step(self, batch: tuple, optimizer) -> dict:
        encoded, index, view, q = batch
        return train_step(self.model, encoded, index, view, q, optimizer, self.params, self.step_config)

    def inner_loop(self, name: str, rng: np.random.Generator, stop: Callable[[], bool] | None,
                   on_inner: Callable[[dict], None] | None) -> list[float] | None:
        """``inner_steps`` Adam steps on the task's support from the current parameters; None when stopped."""
        optimizer = torch.optim.Adam(self.params, lr=self.config.inner_lr)
        self.model.train()
        losses = []
        for k in range(1, self.config.inner_steps + 1):
            if stop is not None and stop():
                return None
            record = self.step(self.support_batch(name, rng), optimizer)
            losses.append(record["loss"])
            if on_inner is not None:
                on_inner({"kind": "inner", "task": name, "inner_step": k, **record})
        return losses

    def query_gradient(self, name: str, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], float]:
        """The (QGR-combined) quality-loss gradient on a query batch at the current parameters."""
        self.model.train()
        for p in self.params:
            p.grad = None
        encoded, index, view, q = self._batch(self.splits[name][1], rng, self.train_tf)
        record = compute_gradients(self.model, encoded, index, view, q, self.params, self.step_config)
        grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in self.named}
        for p in self.params:
            p.grad = None
        return grads, record["loss"]

    def visit(self, name: str, theta: Mapping[str, torch.Tensor], seed_parts: tuple,
              stop: Callable[[], bool] | None, on_inner: Callable[[dict], None] | None,
              on_task_end: Callable[..., None] | None) -> _Visit:
        """Start from theta, adapt on support, return the task's direction for the outer step."""
        self.load(theta)
        with self.seeded(*seed_parts) as rng:
            losses = self.inner_loop(name, rng, stop, on_inner)
            if losses is None:
                return _Visit(direction=None)
            phi = {n: p.detach() for n, p in self.named}
            if self.config.algorithm == "reptile":
                direction, grads, query_loss = {n: phi[n] - theta[n] for n in theta}, None, float("nan")
            else:
                grads, query_loss = self.query_gradient(name, rng)
                direction = {n: -g for n, g in grads.items()}
        if on_task_end is not None:
            on_task_end(name, phi, grads)
        return _Visit(direction, losses[0], losses[-1], query_loss)

    # ------------------------------------------------------------------ evaluation
    def query_srcc(self, name: str) -> float:
        """SRCC of the current parameters on the task's query (one centre crop, eval mode)."""
        query = self.splits[name][1]
        was = self.model.training
        self.model.eval()
        scores = []
        with torch.no_grad():
            for i in range(0, len(query), self.config.eval_batch_size):
                images = self.images.get(query["path"].iloc[i:i + self.config.eval_batch_size])
                x = torch.stack([self.eval_tf(im) for im in images]).to(self.model.device)
                scores.append(self.model.score(x).float().cpu())
        self.model.train(was)
        return srcc(torch.cat(scores).numpy(), query["q"].to_numpy())

    def evaluate_task(self, name: str, theta: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """SRCC on the task's query of theta itself and after ``inner_steps`` steps on its support."""
        self.load(theta)
        init = self.query_srcc(name)
        with self.seeded("eval", name) as rng:
            self.inner_loop(name, rng, None, None)
        adapted = self.query_srcc(name)
        self.load(theta)
        return {"init": init, "adapted": adapted}


# -------------------------------------------------------------------------------------------- state files
def _rng_state() -> dict:
    def b64(t: torch.Tensor) -> str:
        return base64.b64encode(t.cpu().numpy().tobytes()).decode()
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {"torch": b64(torch.get_rng_state()),
           "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
           "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_state(state: Mapping[str, Any]) -> None:
    def unb64(s: str) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())
    torch.set_rng_state(unb64(state["torch"]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([unb64(s) for s in state["cuda"]])


@dataclass
class _Position:
    """Where the run is: ``epoch`` in progress, meta steps done in it, meta steps done in all."""

    epoch: int = 1
    step_in_epoch: int = 0
    meta_step: int = 0


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target`` (a missing ``target`` is never observed for long)."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json.tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, default=str)
    os.replace(tmp, path)


def _save_state(out_dir: Path, model, runner: _Runner, theta, best_theta, pos: _Position,
                history: MetaHistory) -> None:
    """A periodic checkpoint: ``state/<name>/`` (meta params as a clipiqa checkpoint, best params, state.json),
    then ``state/latest.json`` is switched to it atomically and older state folders are removed."""
    from safetensors.torch import save_file
    states = out_dir / "state"
    states.mkdir(parents=True, exist_ok=True)
    name = f"e{pos.epoch:04d}-s{pos.meta_step:07d}-{time.time_ns()}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=states))
    runner.load(theta)
    save_checkpoint(model, tmp / "theta", trainable=runner.config.trainable, training=runner.config.to_dict())
    if best_theta is not None:
        save_file({n: t.detach().cpu().contiguous() for n, t in best_theta.items()}, str(tmp / "best.safetensors"))
    _write_json(tmp / "state.json", {
        "version": STATE_VERSION, "position": asdict(pos), "history": history.to_dict(),
        "config": runner.config.to_dict(), "rng": _rng_state()})
    os.replace(tmp, states / name)
    _write_json(states / "latest.json", {"folder": name})
    for other in states.iterdir():
        if other.name not in (name, "latest.json") and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def _load_state(out_dir: Path, model, runner: _Runner, history: MetaHistory) -> tuple | None:
    """``(theta, best_theta, position, history)`` from the latest periodic checkpoint, or None."""
    from safetensors.torch import load_file
    pointer = out_dir / "state" / "latest.json"
    if not pointer.is_file():
        return None
    folder = out_dir / "state" / json.loads(pointer.read_text())["folder"]
    state = json.loads((folder / "state.json").read_text())
    _check_resumable(state, runner.config, history)
    apply_checkpoint(model, read_checkpoint(folder / "theta"))
    theta = runner.theta()
    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").is_file() else None
    if best is not None:
        best = {n: t.to(model.device) for n, t in best.items()}
    _set_rng_state(state["rng"])
    return theta, best, _Position(**state["position"]), MetaHistory.from_dict(state["history"])


def _check_resumable(state: dict, config: MetaConfig, history: MetaHistory) -> None:
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"periodic checkpoint version {state.get('version')} is not {STATE_VERSION}; "
                         "start again with resume=False or another out_dir")
    saved = {k: v for k, v in state["config"].items() if k != "epochs"}
    here = {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "epochs"}
    diff = sorted(k for k in set(saved) | set(here) if saved.get(k) != here.get(k))
    if diff:
        raise ValueError(f"cannot resume: the periodic checkpoint was made with other settings ({', '.join(diff)}: "
                         f"{[saved.get(k) for k in diff]} there, {[here.get(k) for k in diff]} now); only epochs "
                         "may change. Use resume=False (--no-resume) or another out_dir")
    old = state["history"]
    if old["train_tasks"] != history.train_tasks or old["holdout_tasks"] != history.holdout_tasks:
        raise ValueError("cannot resume: the periodic checkpoint was made with other tasks; use resume=False "
                         "(--no-resume) or another out_dir")


# -------------------------------------------------------------------------------------------- the loop
def _meta_batches(names: list[str], config: MetaConfig, epoch: int) -> list[list[str]]:
    order = np.random.default_rng(stable_seed(config.seed, "order", epoch)).permutation(len(names))
    shuffled = [names[i] for i in order]
    return [shuffled[i:i + config.tasks_per_batch] for i in range(0, len(shuffled), config.tasks_per_batch)]


def _poll(stop: Callable[[], bool] | None, device) -> bool:
    """Collective stop: True on every rank when any rank's ``stop()`` is True."""
    return ddp.all_reduce_max(bool(stop is not None and stop()), device=device) > 0


def meta_pretrain(model, tasks: Sequence[Task], config: MetaConfig | None = None, *,
                  on_step: Callable[[dict], None] | None = None, out_dir: str | os.PathLike | None = None,
                  resume: bool = True, stop: Callable[[], bool] | None = None,
                  on_task_start: Callable[[str, dict], None] | None = None,
                  on_task_end: Callable[[str, dict, dict | None], None] | None = None) -> MetaHistory:
    """Meta-learn an initialisation of ``model``'s trainable tensors over source ``tasks``; returns the history.

    The model ends holding the **selected** meta parameters (best mean held-out SRCC; the last ones when no
    evaluation gave a finite SRCC). With ``out_dir`` (written by rank 0 only): ``best/`` and ``last/`` clipiqa
    checkpoints (``best`` is the meta init for ``clipiqa adapt --init``), ``history.csv``, and periodic state in
    ``state/`` every ``checkpoint_every`` epochs and when stopped; ``resume=True`` continues from it with exactly
    the numbers of an uninterrupted run (only ``epochs`` may differ from the saved settings).

    on_step: called with every record: ``kind="inner"`` (one inner step of a task visit on this rank),
        ``"step"`` (a meta step: losses, update norm, ``theta_hash`` after the update) and ``"eval"``.
    stop: polled before every inner step and after every outer step; True ends the run at the last completed
        meta step (saving state when ``out_dir`` is given). Under torchrun any rank's stop stops all.
    on_task_start(name, params) / on_task_end(name, phi, query_grad): instrumentation; ``params``/``phi`` are
        the live trainable tensors (clone them to keep), ``query_grad`` is None for Reptile.

    There is no target-data argument: selection reads held-out *source* tasks only.
    """
    config = config or MetaConfig()
    t0 = time.perf_counter()
    tasks = list(tasks)
    train_tasks, held = split_tasks(tasks, config.holdout_tasks, config.seed)
    train_names, held_names = [t.name for t in train_tasks], [t.name for t in held]
    assert not set(train_names) & set(held_names), "selection must never read tasks used for training"
    runner = _Runner(model, config, tasks)
    theta = runner.theta()
    ddp.broadcast_(list(theta.values()))
    runner.load(theta)
    history = MetaHistory(config=config.to_dict(), train_tasks=train_names, holdout_tasks=held_names,
                          trainable=runner.names, initial_hash=param_hash(theta))
    out = Path(out_dir) if out_dir is not None else None
    best_theta, pos = None, _Position()
    if out is not None and resume:
        loaded = _load_state(out, model, runner, history)
        if loaded is not None:
            theta, best_theta, pos, history = loaded
            history.resumed_from = pos.meta_step
            history.config = config.to_dict()
            history.stopped = False
    write = out is not None and ddp.is_main()
    emit = on_step or (lambda record: None)
    device = model.device
    batches_per_epoch = math.ceil(len(train_names) / config.tasks_per_batch)
    total_steps = config.epochs * batches_per_epoch

    def evaluate(epoch: int) -> None:
        nonlocal best_theta
        row = _evaluate(runner, theta, held_names, config, epoch, pos.meta_step, history, on_task_start)
        emit(row)
        score = row["srcc"]
        if math.isfinite(score) and (history.best_score is None or score > history.best_score):
            history.best_score, history.best_epoch, history.best_meta_step = score, epoch, pos.meta_step
            best_theta = {n: t.clone() for n, t in theta.items()}

    if pos.meta_step == 0 and not history.evals:
        evaluate(0)
    stopped = False
    while pos.epoch <= config.epochs and not stopped:
        batches = _meta_batches(train_names, config, pos.epoch)
        while pos.step_in_epoch < len(batches):
            batch = batches[pos.step_in_epoch]
            new_theta, record = _meta_step(runner, theta, batch, pos, config, history, stop, emit,
                                           on_task_start, on_task_end)
            if new_theta is None:
                stopped = True
                break
            theta = new_theta
            pos.step_in_epoch += 1
            pos.meta_step += 1
            record.update(epoch=pos.epoch, meta_step=pos.meta_step, step_in_epoch=pos.step_in_epoch,
                          steps_per_epoch=len(batches), total_steps=total_steps,
                          seconds=time.perf_counter() - t0)
            history.steps.append(record)
            emit(record)
            if _poll(stop, device):
                stopped = True
                break
        if stopped:
            break
        epoch = pos.epoch
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            evaluate(epoch)
        pos.epoch, pos.step_in_epoch = epoch + 1, 0
        if write and (epoch % config.checkpoint_every == 0 or epoch == config.epochs):
            _save_state(out, model, runner, theta, best_theta, pos, history)
    runner.load(theta)
    history.stopped = stopped
    if stopped and write:
        _save_state(out, model, runner, theta, best_theta, pos, history)
    if best_theta is None:
        history.note = "no held-out evaluation gave a finite SRCC: the selected parameters are the last ones"
    history.seconds = time.perf_counter() - t0
    _finish(model, runner, theta, best_theta, history, out if write else None)
    ddp.barrier()
    return history


def _meta_step(runner: _Runner, theta, batch: list[str], pos: _Position, config: MetaConfig,
               history: MetaHistory, stop, emit, on_task_start, on_task_end):
    """One meta step over ``batch`` (this rank's share of it); returns ``(new theta, record)`` or
    ``(None, None)`` when stopped. Directions and loss sums are all-reduced, so every rank agrees."""
    device = runner.model.device
    summed = {n: torch.zeros_like(t) for n, t in theta.items()}
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # loss_first, loss_last, query_loss, n
    step_no = pos.meta_step + 1
    local_stop, starts = False, []
    for name in ddp.shard(batch):
        runner.load(theta)
        starts.append({"meta_step": step_no, "task": name, "phase": "train", "hash": param_hash(runner.named)})
        if on_task_start is not None:
            on_task_start(name, dict(runner.named))
        on_inner = lambda r, name=name: emit({"epoch": pos.epoch, "meta_step": step_no, **r})  # noqa: E731
        try:
            visit = runner.visit(name, theta, ("inner", pos.epoch, step_no, name), stop, on_inner, on_task_end)
        except AdaptationDivergedError as e:
            runner.load(theta)
            raise MetaDivergedError(f"task {name!r} at meta step {step_no}: {e}", history) from e
        if visit.direction is None:
            local_stop = True
            break
        for n in summed:
            summed[n] += visit.direction[n]
        stats += torch.tensor([visit.loss_first, visit.loss_last,
                               0.0 if math.isnan(visit.query_loss) else visit.query_loss, 1.0],
                              dtype=torch.float64, device=device)
    runner.load(theta)
    if ddp.all_reduce_max(local_stop, device=device) > 0:
        return None, None
    history.task_starts.extend(_in_order(ddp.gather_objects(starts), batch))
    ddp.all_reduce_sum_(list(summed.values()))
    ddp.all_reduce_sum_([stats])
    new_theta = _apply_outer(theta, summed, len(batch), config.meta_lr)
    runner.load(new_theta)
    s = stats.tolist()
    record = {"kind": "step", "tasks": ";".join(batch), "n_tasks": len(batch),
              "loss_first": s[0] / len(batch), "loss_last": s[1] / len(batch),
              "query_loss": s[2] / len(batch) if config.algorithm == "fomaml" else float("nan"),
              "update_norm": float(torch.sqrt(sum(((new_theta[n] - theta[n]).double() ** 2).sum()
                                                  for n in theta)).item()),
              "theta_hash": param_hash(new_theta)}
    return new_theta, record


def _in_order(parts: list[list[dict]], names: list[str]) -> list[dict]:
    """Records gathered from all ranks, in the order of ``names`` (the order of a one-process run)."""
    rank = {n: i for i, n in enumerate(names)}
    return sorted((r for part in parts for r in part), key=lambda r: rank[r["task"]])


def _evaluate(runner: _Runner, theta, held: list[str], config: MetaConfig, epoch: int, meta_step: int,
              history: MetaHistory, on_task_start) -> dict:
    """Held-out source tasks only: mean SRCC (init and adapted), sharded over ranks and gathered."""
    local, starts = {}, []
    for name in ddp.shard(held):
        runner.load(theta)
        starts.append({"meta_step": meta_step, "task": name, "phase": "eval", "hash": param_hash(runner.named)})
        if on_task_start is not None:
            on_task_start(name, dict(runner.named))
        local[name] = runner.evaluate_task(name, theta)
    merged: dict[str, dict] = {}
    gathered = ddp.gather_objects((local, starts))
    for part, _ in gathered:
        merged.update(part)
    history.task_starts.extend(_in_order([part_starts for _, part_starts in gathered], held))
    assert set(merged) <= set(held), "evaluation must read held-out source tasks only"
    runner.load(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan means
        adapted = float(np.nanmean([merged[n]["adapted"] for n in held])) if held else float("nan")
        init = float(np.nanmean([merged[n]["init"] for n in held])) if held else float("nan")
    row = {"kind": "eval", "epoch": epoch, "meta_step": meta_step,
           "srcc": adapted if config.selection_metric == "adapted" else init,
           "srcc_adapted": adapted, "srcc_init": init}
    for n in held:
        row[f"srcc_adapted:{n}"] = merged[n]["adapted"]
        row[f"srcc_init:{n}"] = merged[n]["init"]
    history.evals.append(row)
    return row


def _finish(model, runner: _Runner, theta, best_theta, history: MetaHistory, out: Path | None) -> None:
    """Leave the selected parameters in the model; write ``last``, ``best`` and ``history.csv``."""
    selected = best_theta if best_theta is not None else theta
    card = {"trainable": runner.config.trainable, "training": {"kind": "meta-pretrain", **runner.config.to_dict()},
            "data": {"train_tasks": history.train_tasks, "holdout_tasks": history.holdout_tasks,
                     "label_kind": "task labels as given (synthetic tasks: " + LABEL_KIND + ")"}}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        runner.load(theta)
        _save_checkpoint_dir(model, out / "last", card, {"meta_step": history.steps[-1]["meta_step"]
                                                         if history.steps else 0})
        runner.load(selected)
        _save_checkpoint_dir(model, out / "best", card, {
            "heldout_srcc": history.best_score, "selection_metric": runner.config.selection_metric,
            "selected_epoch": history.best_epoch, "selected_meta_step": history.best_meta_step,
            "selected_on": "held-out source tasks: " + ", ".join(history.holdout_tasks)})
        frame = history.to_frame()
        fd, tmp = tempfile.mkstemp(suffix=".csv.tmp", dir=out)
        with os.fdopen(fd, "w") as f:
            frame.to_csv(f, index=False)
        os.replace(tmp, out / "history.csv")
    runner.load(selected)
    model.eval()


def _save_checkpoint_dir(model, path: Path, card: dict, metrics: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    save_checkpoint(model, tmp, metrics=metrics, **card)
    _replace_dir(tmp, path)
