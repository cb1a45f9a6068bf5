"""Few-shot fine-tuning settings (docs/design.md, 'Few-shot fine-tuning and recipes'): ``AdaptConfig``,
validated at construction, and ``with_qgr``, the one helper that turns QGR on or off in a config (the two
comparison arms differ in this only)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..configs import invalid
from ..adapters import LAST_BLOCKS
from ..data.transforms import VARIANTS
from ..qgr import QGRConfig

SELECTION_MODES = ("fixed", "val", "test-oracle")
OPTIMISTIC_NOTE = "test-oracle: best epoch picked on the test split (the released code's protocol) - optimistic"

LR_SCHEDULES = ("constant", "cosine", "plateau")
SELECTION_METRICS = ("srcc", "srcc+plcc")
LABEL_NORMS = ("none", "minmax", "subset-minmax")
RELEASED_QGR_LAM = 5.0
"""The QGR weight of the released code: ``with_qgr`` uses it when a config turns QGR on with lam = 0."""


def _fail(field_name: str, value: Any, allowed: str) -> None:
    invalid("AdaptConfig", field_name, value, allowed)


def _check_choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(field_name, value, f"use one of {', '.join(repr(a) for a in allowed)}")


@dataclass(frozen=True)
class AdaptConfig:
    """Few-shot fine-tuning settings; defaults follow the released code."""

    trainable: str = LAST_BLOCKS     # "last-blocks" (GRMP-IQA's set), "prompts", "text"
    tuned_blocks: int = 4
    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.0
    batch_size: int = 192
    augment: str = "model"            # "none", "model" (crop + flip), "grmp" (244 squash, crop + flip, ImageNet)
    n_views: int = 4                  # cached crops per training image (1 when augment == "none")
    qgr: QGRConfig = field(default_factory=QGRConfig)
    qgr_stats: bool = False           # with QGR off, still compute g_s for the diagnostics (a second backward)
    selection: str = "fixed"
    val_fraction: float = 0.2
    cache_prefix: bool = True
    seed: int = 0
    amp: bool | None = None           # bf16 autocast; None = on for CUDA
    eval_batch_size: int = 64
    # schedule and selection details that recipes set (clipiqa.recipes); defaults = the released fine-tuning
    lr_schedule: str = "constant"     # "constant", "cosine" (to 0 over the run), "plateau" (x factor on a plateau)
    warmup_epochs: int = 0            # epochs at warmup_lr before the schedule starts (CoOp: 1 at 1e-5)
    warmup_lr: float = 1e-5
    plateau_factor: float = 0.3       # "plateau": lr multiplier when the selection metric stops improving
    plateau_patience: int = 5         # "plateau": evaluations without improvement before the lr drops
    selection_metric: str = "srcc"    # "srcc" or "srcc+plcc" (the released code's sum)
    select_initial: bool = False      # evaluate before the first step and let selection keep the initial state
    label_norm: str = "none"          # "none", "minmax" (released: the whole training draw) or "subset-minmax"
    eval_every: int = 1               # evaluate every N epochs (and after the last; epoch 0 with select_initial)
    plateau_after: int = 0            # "plateau": no lr cut at an evaluation of an epoch <= this (released: 10)
    min_lr: float = 0.0               # end training once the lr falls below this (released: 5e-7; 0 = never)
    prompt_dropout: bool = False      # keep visual-prompt dropout active when the prompts are frozen (released)

    def __post_init__(self) -> None:
        if isinstance(self.qgr, dict):
            object.__setattr__(self, "qgr", QGRConfig(**self.qgr))
        if self.trainable not in (LAST_BLOCKS, "prompts", "text"):
            _fail("trainable", self.trainable, "use 'last-blocks', 'prompts' or 'text'")
        if not isinstance(self.qgr_stats, bool):
            _fail("qgr_stats", self.qgr_stats, "use True (diagnostics for both arms) or False")
        for name in ("epochs", "batch_size", "n_views", "tuned_blocks", "eval_batch_size", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                _fail(name, value, "use a positive integer")
        for name in ("lr", "weight_decay", "momentum"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                _fail(name, value, "use a finite number >= 0")
        if self.lr <= 0:
            _fail("lr", self.lr, "use a positive learning rate")
        if self.augment not in ("none",) + VARIANTS:
            _fail("augment", self.augment, "use 'none', 'model' or 'grmp'")
        if self.selection not in SELECTION_MODES:
            _fail("selection", self.selection, f"use one of {', '.join(SELECTION_MODES)}")
        if not 0 < self.val_fraction < 1:
            _fail("val_fraction", self.val_fraction, "use a fraction in (0, 1)")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("selection_metric", self.selection_metric, SELECTION_METRICS)
        _check_choice("label_norm", self.label_norm, LABEL_NORMS)
        for name in ("warmup_epochs", "plateau_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _fail(name, value, "use an integer >= 0")
        if isinstance(self.plateau_patience, bool) or not isinstance(self.plateau_patience, int) \
                or self.plateau_patience < 1:
            _fail("plateau_patience", self.plateau_patience, "use a positive integer (evaluations)")
        if not (isinstance(self.warmup_lr, (int, float)) and math.isfinite(self.warmup_lr) and self.warmup_lr > 0):
            _fail("warmup_lr", self.warmup_lr, "use a finite positive learning rate")
        if not (isinstance(self.min_lr, (int, float)) and math.isfinite(self.min_lr) and 0 <= self.min_lr < self.lr):
            _fail("min_lr", self.min_lr, f"use a number >= 0 below lr={self.lr} (0: never stop on the lr)")
        if not (isinstance(self.plateau_factor, (int, float)) and 0 < self.plateau_factor < 1):
            _fail("plateau_factor", self.plateau_factor, "use a factor in (0, 1), e.g. 0.3")
        if self.lr_schedule == "plateau" and self.selection == "fixed":
            _fail("lr_schedule", self.lr_schedule, "'plateau' watches the selection metric: use selection='val' or "
                  "'test-oracle' with it, or another schedule")
        if self.select_initial and self.selection == "fixed":
            _fail("select_initial", self.select_initial, "it only matters with selection='val' or 'test-oracle'")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["qgr"] = asdict(self.qgr)
        return d


def with_qgr(config: AdaptConfig, enabled: bool | str) -> AdaptConfig:
    """The same config with QGR off (plain fine-tuning) or on, with the config's lam, or the released
    ``RELEASED_QGR_LAM`` = 5 when the config's lam is 0: the two comparison arms differ in this only.
    ``enabled="auto"``: on, with the strength chosen per run from the labelled images (``QGRConfig(lam="auto")``,
    descent guard on)."""
    if enabled == "auto":
        return replace(config, qgr=replace(config.qgr, enabled=True, lam="auto"))
    qgr = replace(config.qgr, enabled=enabled)
    if enabled and not qgr.active:
        qgr = replace(qgr, lam=RELEASED_QGR_LAM)
    return replace(config, qgr=qgr)
