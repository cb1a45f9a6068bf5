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
3. outer update along the mean direction ``d = mean_over_tasks(direction)`` (:func:`outer_update`):
   ``sgd``: ``theta <- theta + beta_t * d``, i.e. Reptile ``theta += beta_t * mean(phi - theta)`` and FOMAML
   ``theta -= beta_t * mean(grad)``; ``adam``: an Adam step on the gradient ``-d`` (moments kept across meta
   steps and in the periodic checkpoint). ``beta_t`` follows ``meta_lr_schedule`` (:func:`meta_lr_at`);
   defaults per algorithm in ``OUTER_DEFAULTS``. The model is then reset to the new ``theta``, and
   ``rel_move = |theta - theta0| / |theta0|`` (:func:`relative_movement`, theta0 = the parameters at the start
   of the run) is recorded; a run that ends below 1 % warns (``RuntimeWarning`` and ``history.note``);
4. every ``eval_every`` epochs (and once before training, epoch 0), each *held-out source task* is scored:
   from ``theta``, ``inner_steps`` steps on its support, then SRCC on its query (``srcc_adapted``; ``srcc_init``
   is the SRCC of ``theta`` itself). The meta parameters with the best mean held-out SRCC are kept.

Selection reads **only held-out source tasks**: there is no target-data argument at all, the held-out task
names are disjoint from the training task names (asserted), and a held-out task is scored without the images
that any training task also holds (:func:`exclude_shared_images`: synthetic tasks share their clean references).
Losses are the quality loss with the semantic (scene) loss feeding QGR, exactly as in few-shot adaptation
(``clipiqa.adapt``); QGR defaults to off here (``lam = 0``) because the released code does not regularise meta
training; turn it on with ``qgr=QGRConfig()``.

Determinism: every random draw of a task visit (support batches, crops, dropout) comes from a seed derived
from ``(seed, epoch, meta step, task name)``, never from a shared stream. So a run resumed from a periodic
checkpoint continues with exactly the numbers of an uninterrupted run, and under ``torchrun`` each task gives
the same result whichever rank computes it.

Distributed (``torchrun``, see :mod:`clipiqa.distributed`): the tasks of a meta batch are spread over ranks
(task ``i`` of the batch on rank ``i % world_size``); per-task directions are summed over ranks with one
all-reduce and divided by the number of tasks in the batch, so every rank applies the identical outer update.
Held-out tasks are evaluated sharded the same way. Only rank 0 writes files.

``algorithm="released"`` reproduces the released code's loop **for comparison only** (labelled so in the history
note and the checkpoint card): one inner model ``phi`` that is never reset to ``theta``, one inner Adam optimizer
for the whole run, per task ``inner_steps`` times a support step followed by a query step, and one outer step
``theta += beta * (phi - theta)`` per dataset phase (the tasks of one dataset, by the task-name prefix; see
:func:`released_phases`). Under torchrun every rank runs that sequential loop and rank 0's result is broadcast.

Numbers from the random-init ``tiny`` preset are meaningless: they show that the machinery runs.
"""
from __future__ import annotations

import base64
import copy
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
from .csvio import write_csv
from .data.demo import stable_seed
from .data.distortions import DISTORTIONS, apply_distortion, list_distortions
from .data.splits import holdout as _holdout
from .data.transforms import VARIANTS, eval_transform, spec_for, train_transform
from .finetune import AdaptationDivergedError, AdaptConfig, EncodedSet, compute_gradients, train_step
from .imageio import list_images, load_image, load_rgb_array
from .metrics import srcc
from .qgr import QGRConfig

__all__ = ["ALGORITHMS", "MetaConfig", "Task", "MetaHistory", "MetaDivergedError", "tasks_from_dataset",
           "synthetic_tasks", "split_tasks", "task_split", "meta_pretrain", "reptile_update", "fomaml_update",
           "param_hash", "LABEL_KIND", "OUTER_DEFAULTS", "OuterSettings", "meta_lr_at", "outer_update",
           "relative_movement", "exclude_shared_images", "released_phases", "MIN_REL_MOVE", "RELEASED_NOTE"]

ALGORITHMS = ("reptile", "fomaml", "released")
OUTER_OPTIMIZERS = ("sgd", "adam")
META_LR_SCHEDULES = ("constant", "linear")
OUTER_DEFAULTS: dict[str, tuple[str, float, str]] = {
    # Reptile's direction phi - theta already has the size of an inner trajectory (k Adam steps of inner_lr per
    # coordinate), so the outer step is a fraction of it: 1.0 annealed linearly to 0, as Nichol et al. 2018.
    "reptile": ("sgd", 1.0, "linear"),
    # FOMAML's direction is a raw query gradient whose size depends on the loss and on each tensor; Adam
    # normalises it per coordinate (MAML's reference code: Adam, 1e-3), so theta moves ~1e-3 per coordinate.
    "fomaml": ("adam", 1e-3, "constant"),
    # the released code's beta; it only moves theta because the released inner model is never reset.
    "released": ("sgd", 0.01, "constant"),
}
"""``(outer_optimizer, meta_lr, meta_lr_schedule)`` used when a ``MetaConfig`` leaves them None."""
MIN_REL_MOVE = 0.01
"""A run that ends with ``|theta - theta0| / |theta0|`` below this warns: the meta init is the start init."""
RELEASED_NOTE = ("released meta loop (comparison only): the inner model is never reset to the meta parameters, "
                 "trains on the query set too, and the outer step comes once per dataset phase; not the textbook "
                 "Reptile/FOMAML (DESIGN 2.4)")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SELECTION_METRICS = ("adapted", "init")
META_TRAINABLE = ("prompts", "text", "paper")
REFERENCE = "reference"
LABEL_KIND = "synthetic severity (q = 1 - level / 5), not human MOS"
STATE_VERSION = 2
_TIMING_KEYS = ("seconds",)


def _fail(field_name: str, value: Any, allowed: str) -> None:
    invalid("MetaConfig", field_name, value, allowed)


# ============================================================================================ configuration
@dataclass(frozen=True)
class MetaConfig:
    """Meta pre-training settings; defaults follow the released code where it had one (DESIGN 2.4).

    algorithm: ``reptile``, ``fomaml`` (first-order MAML) or ``released`` (the released code's loop, for
        comparison only: see the module docstring).
    inner_steps: Adam steps per task visit, from ``theta`` (k); ``released``: k support + k query steps.
    inner_lr: inner Adam learning rate (1e-4, as released); Adam state is fresh for every task visit
        (``released``: one optimizer for the whole run).
    outer_optimizer: ``sgd`` (``theta += beta_t * mean direction``) or ``adam`` (Adam on ``-mean direction``);
        None = the algorithm's default (``OUTER_DEFAULTS``: Reptile sgd, FOMAML adam, released sgd).
    meta_lr: the outer step size beta (or Adam's learning rate); None = the algorithm's default: Reptile 1.0
        (Nichol et al. 2018), FOMAML 1e-3 (Adam), released 0.01. With a per-task reset, the released 0.01 moves
        theta by ~5e-5 of its norm per meta step: nothing.
    meta_lr_schedule: ``constant`` or ``linear`` (beta at meta step i of T is ``meta_lr * (1 - (i-1)/T)``,
        annealed towards 0 as Nichol et al. 2018); None = the algorithm's default (Reptile linear, else constant).
        T counts the meta steps of ``epochs``: resuming with other ``epochs`` changes the rest of the schedule.
    epochs: passes over the training tasks (50, as released).
    tasks_per_batch: tasks per meta step (the meta batch); the last batch of an epoch may be smaller
        (``released``: ignored, a meta step is a dataset phase).
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
    meta_lr: float | None = None
    outer_optimizer: str | None = None
    meta_lr_schedule: str | None = None
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
            if name == "meta_lr" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                _fail(name, value, "use a finite positive number" + (" (or None for the algorithm's default)"
                                                                     if name == "meta_lr" else ""))
        if self.outer_optimizer is not None and self.outer_optimizer not in OUTER_OPTIMIZERS:
            _fail("outer_optimizer", self.outer_optimizer,
                  f"use one of {', '.join(OUTER_OPTIMIZERS)} (or None for the algorithm's default)")
        if self.meta_lr_schedule is not None and self.meta_lr_schedule not in META_LR_SCHEDULES:
            _fail("meta_lr_schedule", self.meta_lr_schedule,
                  f"use one of {', '.join(META_LR_SCHEDULES)} (or None for the algorithm's default)")
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

    def outer(self) -> "OuterSettings":
        """The outer optimizer actually used: the fields given, the algorithm's defaults for those left None."""
        optimizer, lr, schedule = OUTER_DEFAULTS[self.algorithm]
        return OuterSettings(optimizer=self.outer_optimizer or optimizer,
                             lr=float(lr if self.meta_lr is None else self.meta_lr),
                             schedule=self.meta_lr_schedule or schedule)

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


def _path_key(path: Any) -> str:
    return os.path.normcase(os.path.normpath(os.path.abspath(str(path))))


def exclude_shared_images(task: Task, others: Sequence[Task]) -> tuple[Task, int]:
    """``(task without the rows whose image any of others also holds, number of rows dropped)``.

    Held-out tasks are scored this way: synthetic tasks all hold the same clean references (level 0), so a
    held-out task's support/query would otherwise contain images the training tasks trained on. Images are
    compared by normalised absolute path. Raises ValueError when fewer than 2 content groups are left.
    """
    shared = {_path_key(p) for other in others for p in other.table["path"]}
    keep = np.array([_path_key(p) not in shared for p in task.table["path"]], dtype=bool)
    dropped = int((~keep).sum())
    if not dropped:
        return task, 0
    table = task.table[keep].reset_index(drop=True)
    table.attrs = dict(task.table.attrs)
    left = table["content_id"].nunique() if len(table) else 0
    if left < 2:
        raise ValueError(f"held-out task {task.name!r}: {dropped} of its {len(task.table)} images are also in "
                         f"training tasks and are left out of held-out scoring; {len(table)} images in {left} "
                         "content group(s) remain, fewer than the 2 a support/query split needs. Hold out another "
                         "task, or use more distortion levels / reference photos")
    return Task(task.name, table, task.description), dropped


def released_phases(names: Sequence[str], seed: int, epoch: int) -> list[list[str]]:
    """The meta steps of one epoch of the ``released`` loop: one per dataset phase.

    A phase holds the tasks of one dataset, named by the task-name prefix before the last ``:``
    (``kadid10k:01`` -> ``kadid10k``; unprefixed names, e.g. synthetic tasks, form one phase); phases come in
    the order of their first task in ``names``, tasks inside a phase in a seeded order per epoch.
    """
    phases: dict[str, list[str]] = {}
    for name in names:
        phases.setdefault(name.rsplit(":", 1)[0] if ":" in name else "", []).append(name)
    out = []
    for phase, members in phases.items():
        order = np.random.default_rng(stable_seed(seed, "released-order", epoch, phase)).permutation(len(members))
        out.append([members[i] for i in order])
    return out


# ============================================================================================ history
class MetaDivergedError(RuntimeError):
    """A non-finite loss or gradient in a task visit; the model is reset to the last meta parameters."""

    def __init__(self, message: str, history: "MetaHistory"):
        super().__init__(message)
        self.history = history


@dataclass
class MetaHistory:
    """What happened: one row per meta step and per evaluation, the task starts (a hash of the parameters at
    the start of every task visit) and the selection outcome.

    Every step and evaluation row has ``rel_move = |theta - theta0| / |theta0|`` (theta0: the parameters at the
    start of the run); ``rel_move`` here is the value at the end. ``outer`` is the outer optimizer actually used;
    ``holdout_excluded`` counts, per held-out task, the images left out of its scoring because training tasks
    hold them too. ``note`` says what to know before using the result (released loop, barely moved, ...)."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    task_starts: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    train_tasks: list[str] = field(default_factory=list)
    holdout_tasks: list[str] = field(default_factory=list)
    trainable: list[str] = field(default_factory=list)
    initial_hash: str = ""
    outer: dict = field(default_factory=dict)
    holdout_excluded: dict = field(default_factory=dict)
    rel_move: float | None = None
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
@dataclass(frozen=True)
class OuterSettings:
    """The outer optimizer of a run (``MetaConfig.outer()``): ``sgd``/``adam``, base step size, schedule."""

    optimizer: str
    lr: float
    schedule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_lr_at(step: int, total_steps: int, base: float, schedule: str) -> float:
    """The outer step size of meta step ``step`` (1-based) of a run of ``total_steps``.

    ``constant``: ``base``. ``linear``: ``base * (1 - (step - 1) / total_steps)``, from ``base`` at the first step
    towards 0 (Nichol et al. 2018; the last step gets ``base / total_steps``, steps past the end 0).
    """
    if schedule == "constant":
        return float(base)
    if schedule != "linear":
        raise ValueError(f"meta_lr schedule {schedule!r} is not one of {', '.join(META_LR_SCHEDULES)}")
    if total_steps < 1 or step < 1:
        raise ValueError(f"meta step {step} of {total_steps}: both must be at least 1")
    return float(base) * max(0.0, 1.0 - (step - 1) / total_steps)


def relative_movement(theta: Mapping[str, torch.Tensor], theta0: Mapping[str, torch.Tensor]) -> float:
    """``|theta - theta0| / |theta0|`` over all tensors together (L2 norms of their concatenation, in float64).

    0 when nothing moved; ``inf`` when ``theta0`` is all zeros and ``theta`` is not.
    """
    moved = sum(float((theta[n].double() - theta0[n].double()).pow(2).sum()) for n in theta0)
    size = sum(float(theta0[n].double().pow(2).sum()) for n in theta0)
    if moved == 0.0:
        return 0.0
    return math.sqrt(moved / size) if size > 0 else float("inf")


def outer_update(theta: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor], lr: float,
                 optimizer: str = "sgd", state: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                 step: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """One outer step along the mean task ``direction`` (Reptile ``mean(phi - theta)``, FOMAML ``-mean(grad)``).

    ``sgd``: ``theta + lr * direction``; the state stays empty. ``adam``: Adam (betas 0.9/0.999, eps 1e-8, the
    formula of ``torch.optim.Adam``) on the gradient ``-direction`` at step ``step`` (1-based, for the bias
    correction) from the moments ``state = {"exp_avg": {...}, "exp_avg_sq": {...}}`` (None = zeros).
    Returns ``(new theta, new state)``; nothing is changed in place.
    """
    if optimizer == "sgd":
        return {n: theta[n] + lr * direction[n] for n in theta}, {}
    if optimizer != "adam":
        raise ValueError(f"outer optimizer {optimizer!r} is not one of {', '.join(OUTER_OPTIMIZERS)}")
    if step < 1:
        raise ValueError(f"Adam step {step}: steps count from 1")
    b1, b2 = ADAM_BETAS
    state = state or {}
    m_old, v_old = state.get("exp_avg", {}), state.get("exp_avg_sq", {})
    new_theta, m_new, v_new = {}, {}, {}
    step_size = lr / (1 - b1 ** step)
    root_bc2 = math.sqrt(1 - b2 ** step)
    for n in theta:
        g = -direction[n]
        m = m_old.get(n, torch.zeros_like(theta[n])) * b1 + (1 - b1) * g
        v = v_old.get(n, torch.zeros_like(theta[n])) * b2 + (1 - b2) * g * g
        new_theta[n] = theta[n] - step_size * m / (v.sqrt() / root_bc2 + ADAM_EPS)
        m_new[n], v_new[n] = m, v
    return new_theta, {"exp_avg": m_new, "exp_avg_sq": v_new}


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
    return outer_update(theta, _mean(total, len(directions)), beta)[0]


def _mean(summed: Mapping[str, torch.Tensor], n_tasks: int) -> dict[str, torch.Tensor]:
    return {n: t / n_tasks for n, t in summed.items()}


class _Outer:
    """The outer optimizer of one run: settings, the schedule's length and the Adam moments (checkpointed)."""

    def __init__(self, settings: OuterSettings, total_steps: int):
        self.settings, self.total_steps = settings, total_steps
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def lr(self, step: int) -> float:
        return meta_lr_at(step, self.total_steps, self.settings.lr, self.settings.schedule)

    def step(self, theta: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor], step: int
             ) -> dict[str, torch.Tensor]:
        new_theta, self.state = outer_update(theta, direction, self.lr(step), self.settings.optimizer,
                                             self.state, step)
        return new_theta

    def tensors(self) -> dict[str, torch.Tensor]:
        """The moments as flat ``{"exp_avg/<name>": tensor}`` (for safetensors)."""
        return {f"{kind}/{n}": t for kind, part in self.state.items() for n, t in part.items()}

    def load_tensors(self, flat: Mapping[str, torch.Tensor], device) -> None:
        state: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in flat.items():
            kind, name = key.split("/", 1)
            state.setdefault(kind, {})[name] = t.to(device)
        self.state = state


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
        if config.augment != "none":  # the evaluation transform follows the training one (saved in the card)
            model.transform_spec = spec_for(model, config.augment)
        self.eval_tf = eval_transform(model.transform_spec)
        self.train_tf = self.eval_tf if config.augment == "none" else train_transform(model, config.augment)
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

    def released_visit(self, name: str, optimizer, seed_parts: tuple, stop: Callable[[], bool] | None,
                       on_inner: Callable[[dict], None] | None) -> tuple[list[float], list[float]] | None:
        """The released loop's task visit, from the current parameters (never reset to theta) with the run's
        one ``optimizer``: ``inner_steps`` times a support step then a query step. Returns the support and the
        query losses, or None when stopped."""
        self.model.train()
        support_losses, query_losses = [], []
        with self.seeded(*seed_parts) as rng:
            for k in range(1, self.config.inner_steps + 1):
                if stop is not None and stop():
                    return None
                support = self.step(self.support_batch(name, rng), optimizer)
                if stop is not None and stop():
                    return None
                query = self.step(self._batch(self.splits[name][1], rng, self.train_tf), optimizer)
                support_losses.append(support["loss"])
                query_losses.append(query["loss"])
                if on_inner is not None:
                    on_inner({"kind": "inner", "task": name, "inner_step": k, **support,
                              "query_loss": query["loss"]})
        return support_losses, query_losses

    # ------------------------------------------------------------------ evaluation
    def query_srcc(self, name: str) -> float:
        """SRCC of the logit margins of the current parameters on the task's query (one centre crop, through
        :func:`clipiqa.inference.predict_batches`: eval mode, head in fp32)."""
        from .inference import predict_batches
        query = self.splits[name][1]
        size = self.config.eval_batch_size
        batches = (torch.stack([self.eval_tf(im) for im in self.images.get(query["path"].iloc[i:i + size])])
                   for i in range(0, len(query), size))
        margins = predict_batches(self.model, batches, amp=self.config.amp).margin
        return srcc(margins.numpy(), query["q"].to_numpy())

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


@dataclass
class _Released:
    """The ``released`` loop's inner model: its parameters ``phi`` (never reset to theta) and its one Adam
    optimizer for the whole run; both go into the periodic checkpoint."""

    phi: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer

    def tensors(self) -> list[torch.Tensor]:
        """phi and the Adam moments: what rank 0 broadcasts so that every rank holds the same inner model."""
        moments = [t for st in self.optimizer.state.values() for k, t in sorted(st.items())
                   if k in ("exp_avg", "exp_avg_sq")]
        return list(self.phi.values()) + moments


@dataclass
class _Run:
    """What a periodic checkpoint restores besides the position and the history."""

    theta: dict[str, torch.Tensor]
    theta0: dict[str, torch.Tensor]
    outer: _Outer
    best: dict[str, torch.Tensor] | None = None
    released: _Released | None = None


def _save_state(out_dir: Path, model, runner: _Runner, run: _Run, pos: _Position, history: MetaHistory) -> None:
    """A periodic checkpoint: ``state/<name>/`` (meta params as a clipiqa checkpoint; start, best, outer-optimizer
    and released-loop tensors; state.json), then ``state/latest.json`` is switched to it atomically and older
    state folders are removed."""
    from safetensors.torch import save_file

    def tensors(d: Mapping[str, torch.Tensor], name: str) -> None:
        save_file({n: t.detach().cpu().contiguous() for n, t in d.items()}, str(tmp / name))

    states = out_dir / "state"
    states.mkdir(parents=True, exist_ok=True)
    name = f"e{pos.epoch:04d}-s{pos.meta_step:07d}-{time.time_ns()}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=states))
    runner.load(run.theta)
    save_checkpoint(model, tmp / "theta", trainable=runner.config.trainable, training=runner.config.to_dict())
    tensors(run.theta0, "theta0.safetensors")
    if run.best is not None:
        tensors(run.best, "best.safetensors")
    if run.outer.state:
        tensors(run.outer.tensors(), "outer.safetensors")
    if run.released is not None:
        tensors(run.released.phi, "phi.safetensors")
        torch.save(run.released.optimizer.state_dict(), tmp / "inner_optimizer.pt")
    _write_json(tmp / "state.json", {
        "version": STATE_VERSION, "position": asdict(pos), "history": history.to_dict(),
        "config": runner.config.to_dict(), "rng": _rng_state()})
    os.replace(tmp, states / name)
    _write_json(states / "latest.json", {"folder": name})
    for other in states.iterdir():
        if other.name not in (name, "latest.json") and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def _load_state(out_dir: Path, model, runner: _Runner, run: _Run, history: MetaHistory) -> tuple | None:
    """``(position, history)`` from the latest periodic checkpoint, restoring ``run`` in place; None without one."""
    from safetensors.torch import load_file
    pointer = out_dir / "state" / "latest.json"
    if not pointer.is_file():
        return None
    folder = out_dir / "state" / json.loads(pointer.read_text())["folder"]
    state = json.loads((folder / "state.json").read_text())
    _check_resumable(state, runner.config, history)
    device = model.device

    def tensors(name: str) -> dict[str, torch.Tensor] | None:
        path = folder / name
        return {n: t.to(device) for n, t in load_file(str(path)).items()} if path.is_file() else None

    apply_checkpoint(model, read_checkpoint(folder / "theta"))
    run.theta = runner.theta()
    run.theta0 = tensors("theta0.safetensors")
    run.best = tensors("best.safetensors")
    run.outer.load_tensors(tensors("outer.safetensors") or {}, device)
    if run.released is not None:
        run.released.phi = tensors("phi.safetensors")
        run.released.optimizer.load_state_dict(
            torch.load(folder / "inner_optimizer.pt", map_location=device, weights_only=True))
    _set_rng_state(state["rng"])
    return _Position(**state["position"]), MetaHistory.from_dict(state["history"])


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
    """The meta steps of one epoch: shuffled meta batches of ``tasks_per_batch`` (``released``: dataset phases)."""
    if config.algorithm == "released":
        return released_phases(names, config.seed, epoch)
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
    the numbers of an uninterrupted run (only ``epochs`` may differ from the saved settings; the outer
    optimizer's moments, the start parameters and the released loop's inner model are restored too).

    on_step: called with every record: ``kind="inner"`` (one inner step of a task visit on this rank),
        ``"step"`` (a meta step: losses, outer step size ``meta_lr``, update norm, ``rel_move``, ``theta_hash``
        after the update) and ``"eval"``.
    stop: polled before every inner step and after every outer step; True ends the run at the last completed
        meta step (saving state when ``out_dir`` is given). Under torchrun any rank's stop stops all.
    on_task_start(name, params) / on_task_end(name, phi, query_grad): instrumentation; ``params``/``phi`` are
        the live trainable tensors (clone them to keep), ``query_grad`` is None for Reptile and released.

    Warns (``RuntimeWarning``, and says so in ``history.note``) when a completed run leaves the meta parameters
    within ``MIN_REL_MOVE`` (1 %) of where they started. There is no target-data argument: selection reads
    held-out *source* tasks only, without the images that training tasks hold too.
    """
    config = config or MetaConfig()
    t0 = time.perf_counter()
    tasks = list(tasks)
    train_tasks, held = split_tasks(tasks, config.holdout_tasks, config.seed)
    held, excluded = _held_out_views(held, train_tasks)
    train_names, held_names = [t.name for t in train_tasks], [t.name for t in held]
    assert not set(train_names) & set(held_names), "selection must never read tasks used for training"
    runner = _Runner(model, config, train_tasks + held)
    theta = runner.theta()
    ddp.broadcast_(list(theta.values()))
    runner.load(theta)
    steps_per_epoch = len(_meta_batches(train_names, config, 1))
    total_steps = config.epochs * steps_per_epoch
    run = _Run(theta=theta, theta0={n: t.clone() for n, t in theta.items()},
               outer=_Outer(config.outer(), total_steps))
    if config.algorithm == "released":
        run.released = _Released(phi={n: t.clone() for n, t in theta.items()},
                                 optimizer=torch.optim.Adam(runner.params, lr=config.inner_lr))
    history = MetaHistory(config=config.to_dict(), train_tasks=train_names, holdout_tasks=held_names,
                          trainable=runner.names, initial_hash=param_hash(theta),
                          outer=config.outer().to_dict(), holdout_excluded=excluded)
    out = Path(out_dir) if out_dir is not None else None
    pos = _Position()
    if out is not None and resume:
        loaded = _load_state(out, model, runner, run, history)
        if loaded is not None:
            pos, history = loaded
            history.resumed_from = pos.meta_step
            history.config = config.to_dict()
            history.stopped = False
    write = out is not None and ddp.is_main()
    emit = on_step or (lambda record: None)
    device = model.device

    def evaluate(epoch: int) -> None:
        row = _evaluate(runner, run.theta, held_names, config, epoch, pos.meta_step, history, on_task_start)
        row["rel_move"] = relative_movement(run.theta, run.theta0)
        emit(row)
        score = row["srcc"]
        if math.isfinite(score) and (history.best_score is None or score > history.best_score):
            history.best_score, history.best_epoch, history.best_meta_step = score, epoch, pos.meta_step
            run.best = {n: t.clone() for n, t in run.theta.items()}

    if pos.meta_step == 0 and not history.evals:
        evaluate(0)
    stopped = False
    while pos.epoch <= config.epochs and not stopped:
        batches = _meta_batches(train_names, config, pos.epoch)
        while pos.step_in_epoch < len(batches):
            batch = batches[pos.step_in_epoch]
            step = _released_step if config.algorithm == "released" else _meta_step
            new_theta, record = step(runner, run, batch, pos, config, history, stop, emit, on_task_start,
                                     on_task_end)
            if new_theta is None:
                stopped = True
                break
            run.theta = new_theta
            pos.step_in_epoch += 1
            pos.meta_step += 1
            record.update(epoch=pos.epoch, meta_step=pos.meta_step, step_in_epoch=pos.step_in_epoch,
                          steps_per_epoch=len(batches), total_steps=total_steps,
                          rel_move=relative_movement(run.theta, run.theta0), seconds=time.perf_counter() - t0)
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
            _save_state(out, model, runner, run, pos, history)
    runner.load(run.theta)
    history.stopped = stopped
    if stopped and write:
        _save_state(out, model, runner, run, pos, history)
    history.rel_move = relative_movement(run.theta, run.theta0)
    history.note = "; ".join(_notes(history, config, run.best is None))
    if not stopped and history.rel_move < MIN_REL_MOVE and ddp.is_main():
        warnings.warn(_barely_moved(history.rel_move), RuntimeWarning, stacklevel=2)
    history.seconds = time.perf_counter() - t0
    _finish(model, runner, run, history, out if write else None)
    ddp.barrier()
    return history


def _held_out_views(held: list[Task], train: list[Task]) -> tuple[list[Task], dict[str, int]]:
    """Held-out tasks without the images training tasks hold too, and how many each lost."""
    views, excluded = [], {}
    for task in held:
        view, dropped = exclude_shared_images(task, train)
        views.append(view)
        if dropped:
            excluded[task.name] = dropped
        if view.table["q"].nunique() < 2 and ddp.is_main():
            warnings.warn(f"held-out task {task.name!r} has a single label value once the images training tasks "
                          "share are left out (e.g. one distortion level): its SRCC is undefined and it cannot "
                          "select anything; use at least 2 levels", RuntimeWarning, stacklevel=3)
    return views, excluded


def _barely_moved(rel_move: float) -> str:
    return (f"meta pre-training moved the meta parameters by only {100 * rel_move:.3g} % of their norm "
            f"(|theta - theta0| / |theta0| < {100 * MIN_REL_MOVE:g} %): the meta init is practically the start "
            "init. Raise meta_lr (--meta-lr), use outer_optimizer='adam', or train more epochs")


def _notes(history: MetaHistory, config: MetaConfig, no_selection: bool) -> list[str]:
    """What to know about a finished (or stopped) run, fresh each time (a resumed run does not repeat notes)."""
    notes = [RELEASED_NOTE] if config.algorithm == "released" else []
    if no_selection:
        notes.append("no held-out evaluation gave a finite SRCC: the selected parameters are the last ones")
    if not history.stopped and history.rel_move is not None and history.rel_move < MIN_REL_MOVE:
        notes.append(_barely_moved(history.rel_move))
    return notes


def _meta_step(runner: _Runner, run: _Run, batch: list[str], pos: _Position, config: MetaConfig,
               history: MetaHistory, stop, emit, on_task_start, on_task_end):
    """One meta step over ``batch`` (this rank's share of it); returns ``(new theta, record)`` or
    ``(None, None)`` when stopped. Directions and loss sums are all-reduced, so every rank applies the same
    outer update."""
    theta = run.theta
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
    new_theta = run.outer.step(theta, _mean(summed, len(batch)), step_no)
    runner.load(new_theta)
    s = stats.tolist()
    return new_theta, _step_record(batch, theta, new_theta, run.outer.lr(step_no), s[0] / len(batch),
                                   s[1] / len(batch),
                                   s[2] / len(batch) if config.algorithm == "fomaml" else float("nan"))


def _step_record(batch: list[str], theta, new_theta, lr: float, loss_first: float, loss_last: float,
                 query_loss: float) -> dict:
    return {"kind": "step", "tasks": ";".join(batch), "n_tasks": len(batch), "loss_first": loss_first,
            "loss_last": loss_last, "query_loss": query_loss, "meta_lr": lr,
            "update_norm": float(torch.sqrt(sum(((new_theta[n] - theta[n]).double() ** 2).sum()
                                                for n in theta)).item()),
            "theta_hash": param_hash(new_theta)}


def _released_step(runner: _Runner, run: _Run, batch: list[str], pos: _Position, config: MetaConfig,
                   history: MetaHistory, stop, emit, on_task_start, on_task_end):
    """One dataset phase of the ``released`` loop (comparison only): the inner model continues from where it
    was (never reset to theta) through the phase's tasks, then ``theta += beta * (phi - theta)``. Every rank
    runs the whole phase; rank 0's inner model is broadcast. A stop restores the phase's start."""
    released = run.released
    theta, device = run.theta, runner.model.device
    step_no = pos.meta_step + 1
    start_phi = {n: t.clone() for n, t in released.phi.items()}
    start_optimizer = copy.deepcopy(released.optimizer.state_dict())
    runner.load(released.phi)
    firsts, lasts, queries, starts, local_stop = [], [], [], [], False
    for name in batch:
        starts.append({"meta_step": step_no, "task": name, "phase": "train", "hash": param_hash(runner.named)})
        if on_task_start is not None:
            on_task_start(name, dict(runner.named))
        on_inner = lambda r, name=name: emit({"epoch": pos.epoch, "meta_step": step_no, **r})  # noqa: E731
        try:
            losses = runner.released_visit(name, released.optimizer, ("released", pos.epoch, step_no, name), stop,
                                           on_inner)
        except AdaptationDivergedError as e:
            _restore_released(runner, released, start_phi, start_optimizer, theta)
            raise MetaDivergedError(f"task {name!r} at meta step {step_no}: {e}", history) from e
        if losses is None:
            local_stop = True
            break
        if on_task_end is not None:
            on_task_end(name, {n: p.detach() for n, p in runner.named}, None)
        firsts.append(losses[0][0])
        lasts.append(losses[0][-1])
        queries.append(losses[1][-1])
    if ddp.all_reduce_max(local_stop, device=device) > 0:
        _restore_released(runner, released, start_phi, start_optimizer, theta)
        return None, None
    released.phi = runner.theta()
    ddp.broadcast_(released.tensors())
    history.task_starts.extend(starts)
    direction = {n: released.phi[n] - theta[n] for n in theta}
    new_theta = run.outer.step(theta, direction, step_no)
    runner.load(new_theta)
    return new_theta, _step_record(batch, theta, new_theta, run.outer.lr(step_no), float(np.mean(firsts)),
                                   float(np.mean(lasts)), float(np.mean(queries)))


def _restore_released(runner: _Runner, released: _Released, phi: dict, optimizer_state: dict, theta) -> None:
    released.phi = phi
    released.optimizer.load_state_dict(optimizer_state)
    runner.load(theta)


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


def _finish(model, runner: _Runner, run: _Run, history: MetaHistory, out: Path | None) -> None:
    """Leave the selected parameters in the model; write ``last``, ``best`` and ``history.csv``. Both cards carry
    the outer optimizer used, their ``rel_move`` and the run's note (the released-loop label among them)."""
    theta, selected = run.theta, run.best if run.best is not None else run.theta
    config = runner.config
    training = {"kind": "meta-pretrain" + (" (released loop, comparison only)" if config.algorithm == "released"
                                           else ""), **config.to_dict(), "outer": config.outer().to_dict()}
    card = {"trainable": config.trainable, "training": training,
            "data": {"train_tasks": history.train_tasks, "holdout_tasks": history.holdout_tasks,
                     "holdout_excluded_images": history.holdout_excluded,
                     "label_kind": "task labels as given (synthetic tasks: " + LABEL_KIND + ")"}}
    if history.note:
        card["extra"] = {"note": history.note}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        runner.load(theta)
        _save_checkpoint_dir(model, out / "last", card, {
            "meta_step": history.steps[-1]["meta_step"] if history.steps else 0,
            "rel_move": relative_movement(theta, run.theta0)})
        runner.load(selected)
        _save_checkpoint_dir(model, out / "best", card, {
            "heldout_srcc": history.best_score, "selection_metric": config.selection_metric,
            "selected_epoch": history.best_epoch, "selected_meta_step": history.best_meta_step,
            "selected_on": "held-out source tasks: " + ", ".join(history.holdout_tasks),
            "rel_move": relative_movement(selected, run.theta0)})
        write_csv(history.to_frame(), out / "history.csv")
    runner.load(selected)
    model.eval()


def _save_checkpoint_dir(model, path: Path, card: dict, metrics: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    save_checkpoint(model, tmp, metrics=metrics, **card)
    _replace_dir(tmp, path)
