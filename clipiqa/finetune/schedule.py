"""The learning rate of few-shot adaptation: warm-up, then constant, cosine or reduced on a plateau of the
selection metric."""
from __future__ import annotations

import math

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


class Plateau:
    """``lr_schedule="plateau"``: multiply the learning rate by ``factor`` after ``patience`` evaluations without a
    new best of the selection metric (like torch's ReduceLROnPlateau in "max" mode, threshold 0)."""

    def __init__(self, factor: float, patience: int):
        self.factor, self.patience = factor, patience
        self.best, self.waited, self.scale = -math.inf, 0, 1.0

    def update(self, value: float) -> float:
        """Record one evaluation; returns the current multiplier of the learning rate."""
        if math.isfinite(value) and value > self.best:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
            if self.waited >= self.patience:
                self.scale *= self.factor
                self.waited = 0
        return self.scale

