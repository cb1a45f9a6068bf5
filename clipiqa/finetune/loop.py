"""``adapt``: the few-shot fine-tuning loop (docs/design.md, 'Few-shot fine-tuning and recipes') and the labels it
trains on. Its pieces live beside it: the steps of an epoch (:class:`EpochSteps` here), evaluation and selection
(``selection``), the learning rate and stopping rule (``schedule``), divergence recovery (``recovery``)."""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..data.readers.table import minmax_groups
from ..data.splits import holdout
from ..data.transforms import eval_transform, spec_for, train_transform
from ..history import AdaptHistory, DivergedError
from ..threads import sharing_cpus
from .auto_lam import choose_lam
from .config import OPTIMISTIC_NOTE, AdaptConfig
from .recovery import LastGoodState, recover_from_divergence
from .schedule import LearningRate, epoch_lr, evaluates_after
from .selection import Evaluation, SelectionTracker, images_for
from .step import EncodedSet, train_step


def adapt(model, labelled: pd.DataFrame, config: AdaptConfig | None = None, *,
          on_step: Callable[[dict], None] | None = None, test: pd.DataFrame | None = None,
          stop: Callable[[], bool] | None = None, images: list | None = None) -> AdaptHistory:
    """Fine-tune ``model`` in place on ``labelled`` (columns ``path``, ``q`` in [0, 1]) and return the History.

    test: only for ``selection="test-oracle"`` (optimistic, labelled so) or to log test SRCC per epoch.
    stop: a callable polled every step (e.g. ``threading.Event().is_set``); True ends training after that step.
    images: preloaded PIL images in ``labelled`` order (skips reading files).

    With ``config.qgr.lam == "auto"`` the QGR strength is first chosen from ``labelled`` alone by content-grouped
    inner cross-validation (:func:`clipiqa.finetune.auto_lam.choose_lam`; ``len(auto_grid) * auto_folds`` extra
    runs); ``history.qgr_lam`` records the strength used (0.0 = QGR off) and ``history.qgr_lam_cv`` the choice.
    """
    config = config or AdaptConfig()
    _check_inputs(labelled, config, test)
    t0 = time.perf_counter()
    history = AdaptHistory(config=config.to_dict(),
                           note=OPTIMISTIC_NOTE if config.selection == "test-oracle" else "")
    config = _qgr_strength(model, labelled, config, history, images, stop)
    train, val = _selection_split(labelled, config)
    preloaded = dict(zip(labelled["path"], images)) if images is not None else {}
    train_images = images_for(train, preloaded)

    # the cores other work leaves free now (clipiqa.threads.sharing_cpus), restored after
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []), sharing_cpus():
        torch.manual_seed(config.seed)
        history.trainable = model.set_trainable(config.trainable, config.tuned_blocks)
        encoded = _encode_training_set(model, config, train_images)
        evaluation = Evaluation(model, val, test, config, encoded.start, preloaded)
        q = torch.tensor(training_labels(train, config), dtype=torch.float32, device=model.device)
        steps = EpochSteps(model, encoded, q, config, history, t0, on_step, stop)
        selection, rate = SelectionTracker(config.selection), LearningRate(config)

        def evaluate(epoch: int) -> None:
            row = evaluation.row(epoch, steps.done, steps.lr)
            history.evals.append(row)
            if on_step is not None:
                on_step(row)
            score = selection.offer(row, epoch, model)
            if score is not None:
                rate.observe(score, epoch)

        if config.select_initial and evaluation:
            evaluate(0)
        model.train()
        steps.start()
        for epoch in range(1, config.epochs + 1):
            steps.run_epoch(epoch, rate.at(epoch))
            if evaluation and not history.stopped and evaluates_after(config, epoch):
                evaluate(epoch)
                model.train()
            if history.stopped:
                break
            reason = rate.stop_reason(epoch)
            if reason:
                history.add_note(reason)
                break
        selection.conclude(model, history, epoch, evaluation)
    model.eval()
    history.seconds = time.perf_counter() - t0
    return history


class EpochSteps:
    """The optimisation of one ``adapt`` run: SGD over the trainable tensors, one epoch at a time in a seeded
    shuffled order of the cached views, every step recorded (``history.steps``, ``on_step``) and ``stop`` polled
    after each. A diverged step restores the last good state in place (:mod:`clipiqa.finetune.recovery`) and
    raises :class:`~clipiqa.history.DivergedError`."""

    def __init__(self, model, encoded: EncodedSet, q: torch.Tensor, config: AdaptConfig, history: AdaptHistory,
                 t0: float, on_step: Callable[[dict], None] | None, stop: Callable[[], bool] | None):
        self.model, self.encoded, self.q, self.config, self.history = model, encoded, q, config, history
        self.t0, self.on_step, self.stop = t0, on_step, stop
        self.params = [p for _, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=epoch_lr(config, 1), momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.total = config.epochs * math.ceil(len(encoded) / config.batch_size)
        self.done = 0
        self.last_good: LastGoodState | None = None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def start(self) -> None:
        """Remember the initial trainable state (what a divergence in the first epoch restores)."""
        self.last_good = LastGoodState(self.params)

    def run_epoch(self, epoch: int, lr: float) -> None:
        """One pass over the training set at ``lr``; sets ``history.stopped`` when ``stop`` asks."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_good.epoch_start(epoch, self.done)
        n_views = self.encoded.n_views
        for index in torch.randperm(len(self.encoded), generator=self.generator).split(self.config.batch_size):
            view = torch.randint(0, n_views, (len(index),), generator=self.generator)
            self._step(index, view, epoch)
            if self.stop is not None and self.stop():
                self.history.stopped = True
                return

    def _step(self, index: torch.Tensor, view: torch.Tensor, epoch: int) -> None:
        try:
            record = train_step(self.model, self.encoded, index, view, self.q, self.optimizer, self.params,
                                self.config, self.done + 1)
        except DivergedError as e:
            raise recover_from_divergence(self.model, e, self.history, self.last_good, self.encoded, self.config,
                                          self.done + 1, epoch, self.t0) from e
        self.last_good.step_done()
        self.done += 1
        record.update(kind="step", step=self.done, epoch=epoch, total_steps=self.total,
                      seconds=time.perf_counter() - self.t0)
        self.history.steps.append(record)
        if self.on_step is not None:
            self.on_step(record)


def _check_inputs(labelled: pd.DataFrame, config: AdaptConfig, test: pd.DataFrame | None) -> None:
    if "q" not in labelled or "path" not in labelled:
        raise ValueError("labelled table needs columns 'path' and 'q' (quality in [0, 1], higher = better); "
                         f"got {list(labelled.columns)}")
    q_values = pd.to_numeric(labelled["q"], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(q_values)) or q_values.min() < 0 or q_values.max() > 1:
        raise ValueError("labelled q must lie in [0, 1] (higher = better) with no missing values; got range "
                         f"[{np.nanmin(q_values)}, {np.nanmax(q_values)}] with {int(np.isnan(q_values).sum())} NaN")
    if len(labelled) < 2:
        raise ValueError(f"need at least 2 labelled images to adapt; got {len(labelled)}")
    if config.selection == "test-oracle" and test is None:
        raise ValueError("selection='test-oracle' needs the test table (and is optimistic by construction)")


def _qgr_strength(model, labelled: pd.DataFrame, config: AdaptConfig, history: AdaptHistory, images, stop
                  ) -> AdaptConfig:
    """The config with the QGR strength the run trains with, recorded in ``history.qgr_lam``; ``lam="auto"`` is
    chosen from the labelled images alone (never ``test``) and the choice recorded in ``history.qgr_lam_cv``."""
    if config.qgr.is_auto:
        lam, history.qgr_lam_cv = choose_lam(model, labelled, config, images=images, stop=stop)
        config = replace(config, qgr=replace(config.qgr, lam=lam))
        history.add_note(history.qgr_lam_cv.get("note", ""))
    history.qgr_lam = float(config.qgr.lam) if config.qgr.active else 0.0
    return config


def _selection_split(labelled: pd.DataFrame, config: AdaptConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(train, val)``: ``selection="val"`` holds out ``val_fraction`` of the labelled images, else no val."""
    train = labelled.reset_index(drop=True)
    if config.selection != "val":
        return train, None
    train, val = holdout(train, config.val_fraction, config.seed)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def _encode_training_set(model, config: AdaptConfig, images: list) -> EncodedSet:
    """Set the model up for training (prompt dropout, eval-mode frozen parts, the evaluation transform that
    follows the training one, saved in the card) and cache ``n_views`` crops of every training image."""
    model.prompt_dropout = config.prompt_dropout
    model.eval()
    # frozen visual prompts with active dropout make the prefix random: no cache then (released behaviour)
    random_prefix = config.prompt_dropout and model.visual_prompt is not None
    start = model.first_trainable_visual_block() if config.cache_prefix and not random_prefix else 0
    if config.augment != "none":
        model.transform_spec = spec_for(model, config.augment)
    if config.augment == "none":
        transform, n_views = eval_transform(model.transform_spec), 1
    else:
        transform, n_views = train_transform(model, config.augment), config.n_views
    return EncodedSet(model, images, transform, n_views, start, config.eval_batch_size)


def training_labels(train: pd.DataFrame, config: AdaptConfig) -> np.ndarray:
    """The labels a step trains on: ``q``; or ``q`` min-max normalised over the whole *training* draw
    (``label_norm="minmax"``, the released protocol) or per distortion subset of it (``"subset-minmax"``), by
    :func:`clipiqa.data.readers.table.minmax_groups`: a set whose labels are all equal keeps them as they are.

    Evaluation always reads the table's own ``q``: the released code also min-maxes the whole test split, an
    increasing affine map that leaves the SRCC and PLCC it selects on unchanged."""
    q = train["q"].to_numpy(dtype=float)
    if config.label_norm == "minmax":
        return minmax_groups(q)
    if config.label_norm != "subset-minmax":
        return q
    has_groups = "distortion" in train and train["distortion"].notna().any()
    return minmax_groups(q, train["distortion"].astype(str).to_numpy() if has_groups else None)
