"""The learning rate of few-shot adaptation: warm-up, then constant, cosine or reduced on a plateau of the
selection metric; which epochs are evaluated; and the stopping rule (a plateau schedule ends training once its
rate falls below ``min_lr``)."""
from __future__ import annotations

import math
from typing import Iterable

from .config import AdaptConfig


def epoch_lr(config: AdaptConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based) before any plateau reduction: ``warmup_lr`` for the first
    ``warmup_epochs``, then ``lr`` (constant, plateau) or a cosine decay from ``lr`` towards 0 over the remaining
    epochs (the last epoch still gets a positive rate). A budget shorter than the warm-up (a smoke run of a recipe)
    keeps at least its last epoch at ``lr``."""
    warmup = min(config.warmup_epochs, config.epochs - 1)
    if epoch <= warmup:
        return float(config.warmup_lr)
    if config.lr_schedule != "cosine":
        return float(config.lr)
    span = config.epochs - warmup
    t = (epoch - 1 - warmup) / span if span > 0 else 0.0
    return float(config.lr * 0.5 * (1.0 + math.cos(math.pi * t)))


def evaluates_after(config: AdaptConfig, epoch: int) -> bool:
    """Whether the loop evaluates after ``epoch`` (1-based): every ``eval_every`` epochs, and after the last epoch
    of the budget so that a budget that is not a multiple of ``eval_every`` still has its final state among the
    candidates. (Epoch 0, before training, is evaluated when ``select_initial`` is set.) Fewer evaluations mean
    fewer candidates for a test-split oracle, hence a less optimistic pick: the released protocol evaluated every
    5 epochs."""
    return epoch % config.eval_every == 0 or epoch == config.epochs


class Plateau:
    """``lr_schedule="plateau"``: multiply the learning rate by ``factor`` once more than ``patience`` evaluations
    in a row brought no new best of the selection metric (like torch's ReduceLROnPlateau in "max" mode,
    threshold 0, no cooldown), but never at an evaluation of an epoch up to ``after`` (the released protocol: no
    cut in the first 10 epochs; the count keeps running meanwhile). The count restarts after each cut; a NaN
    score counts as no improvement."""

    def __init__(self, factor: float, patience: int, after: int = 0):
        self.factor, self.patience, self.after = factor, patience, after
        self.best, self.waited, self.scale = -math.inf, 0, 1.0

    def update(self, value: float, epoch: int | None = None) -> float:
        """Record the evaluation after ``epoch`` (None: no epoch condition); returns the current multiplier."""
        if math.isfinite(value) and value > self.best:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
            if self.waited > self.patience and (epoch is None or epoch > self.after):
                self.scale *= self.factor
                self.waited = 0
        return self.scale


def plateau_trace(evaluations: Iterable[tuple[int, float]], lr: float, factor: float, patience: int,
                  after: int = 0, min_lr: float = 0.0) -> list[dict]:
    """What the plateau schedule does with a sequence of ``(epoch, score)`` evaluations: one row per evaluation
    with the learning rate for the epochs that follow it (``lr``) and ``stop`` (True once that rate is below
    ``min_lr``; the loop ends training there, and later evaluations are not read). A pure replay of the rule
    :func:`clipiqa.finetune.adapt` applies, for checking schedules by hand."""
    plateau, rows = Plateau(factor, patience, after), []
    for epoch, score in evaluations:
        rate = lr * plateau.update(score, epoch)
        stop = min_lr > 0 and rate < min_lr
        rows.append({"epoch": epoch, "score": score, "lr": rate, "stop": stop})
        if stop:
            break
    return rows


class LearningRate:
    """The rate of every epoch of one run and its stopping rule: :func:`epoch_lr` times the :class:`Plateau`
    multiplier (``lr_schedule="plateau"`` watches the selection score of every evaluation), and training ends
    after an epoch once that multiplier has brought ``lr`` below ``min_lr`` (the released protocol's 5e-7)."""

    def __init__(self, config: AdaptConfig):
        self.config = config
        self.plateau = Plateau(config.plateau_factor, config.plateau_patience, config.plateau_after)

    def at(self, epoch: int) -> float:
        """The rate of ``epoch`` (1-based)."""
        return epoch_lr(self.config, epoch) * self.plateau.scale

    def observe(self, score: float, epoch: int) -> None:
        """The selection score of the evaluation after ``epoch`` (only a plateau schedule reads it)."""
        if self.config.lr_schedule == "plateau":
            self.plateau.update(score, epoch)

    def stop_reason(self, epoch: int) -> str:
        """Why training ends after ``epoch`` before its budget (the note to record), or '' to go on."""
        config, rate = self.config, self.config.lr * self.plateau.scale
        if config.min_lr > 0 and epoch < config.epochs and rate < config.min_lr:
            return (f"training ended after epoch {epoch} of {config.epochs}: the learning rate fell to {rate:.3g} "
                    f"< min_lr {config.min_lr:g}")
        return ""
