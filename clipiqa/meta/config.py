"""Meta pre-training settings (docs/design.md, 'Meta-prompt pre-training'): ``MetaConfig``, validated at
construction, its choices and defaults, and ``OuterSettings``, the outer optimizer a config resolves to."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..configs import from_dict, invalid
from ..adapters import LAST_BLOCKS
from ..data.transforms import VARIANTS
from ..finetune import AdaptConfig
from ..qgr import QGRConfig

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
                 "Reptile/FOMAML")
SELECTION_METRICS = ("adapted", "init")
META_TRAINABLE = ("prompts", "text", LAST_BLOCKS)


def _fail(field_name: str, value: Any, allowed: str) -> None:
    invalid("MetaConfig", field_name, value, allowed)


@dataclass(frozen=True)
class OuterSettings:
    """The outer optimizer of a run (``MetaConfig.outer()``): ``sgd``/``adam``, base step size, schedule."""

    optimizer: str
    lr: float
    schedule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetaConfig:
    """Meta pre-training settings; defaults follow the released code where it had one.

    algorithm: ``reptile``, ``fomaml`` (first-order MAML) or ``released`` (the released code's loop, for
        comparison only: see :mod:`clipiqa.meta`).
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
        ``text`` (context only) or ``last-blocks`` (context + tuned copies of the last ``tuned_blocks`` blocks).
    qgr: the gradient regulariser for inner steps and FOMAML query gradients; default off (lam = 0).
    holdout_tasks: held-out *source* tasks used only for checkpoint selection: a fraction of the tasks
        (default 0.2, at least one task, at least one left for training) drawn with ``seed``, or explicit names.
    selection_metric: ``adapted`` (held-out SRCC after ``inner_steps`` steps on the task's support: what the meta
        init is for) or ``init`` (SRCC of ``theta`` itself).
    eval_every / checkpoint_every: in epochs; the last epoch is always evaluated.
    batch_size / eval_batch_size: images per inner step / per scoring chunk.
    augment: ``model`` (random crop + flip), ``grmp`` (244 squash, crop + flip, ImageNet stats) or ``none``.
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
            _fail("augment", self.augment, "use 'none', 'model' or 'grmp'")
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
