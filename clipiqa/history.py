"""The record of a training run (few-shot ``adapt`` or ``meta_pretrain``) and the error a run raises when it
diverges: one history type and one divergence error for both loops."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import pandas as pd

__all__ = ["History", "DivergedError"]


@dataclass
class History:
    """What happened: one row per step and per evaluation, and the selection outcome.

    Both loops fill the common part (``steps``, ``evals``, ``config``, ``trainable``, ``stopped``, ``note``,
    ``seconds``); each loop leaves the other's fields at their defaults.

    ``adapt``: ``selected_epoch`` is the epoch whose state was kept; ``diverged`` (step, epoch, reason, and which
    parameters were restored: ``restored_epoch``, ``restored_after_step``) is set when training diverged;
    ``qgr_lam`` is the QGR strength the run trained with (0.0 when QGR was off) and, for ``lam="auto"``,
    ``qgr_lam_cv`` how it was chosen (mean inner-CV SRCC per grid value, folds, the descent guard).

    ``meta_pretrain``: ``task_starts`` holds a hash of the parameters at the start of every task visit; every step
    and evaluation row has ``rel_move = |theta - theta0| / |theta0|`` (theta0: the parameters at the start of the
    run) and ``rel_move`` here is the value at the end. ``outer`` is the outer optimizer actually used;
    ``holdout_excluded`` counts, per held-out task, the images left out of its scoring because training tasks hold
    them too; ``best_*`` is the selection on held-out source tasks. ``note`` says what to know before using the
    result (released loop, barely moved, ...).
    """

    # both loops
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    trainable: list[str] = field(default_factory=list)
    stopped: bool = False
    note: str = ""
    seconds: float = 0.0
    # adapt
    selected_epoch: int | None = None
    diverged: dict | None = None  # step, epoch, reason, and which parameters were restored (restored_after_step)
    qgr_lam: float | None = None  # the QGR strength the run trained with (0.0 = QGR off), chosen or given
    qgr_lam_cv: dict = field(default_factory=dict)  # lam="auto": inner-CV score per grid value, folds, guard
    # meta_pretrain
    task_starts: list[dict] = field(default_factory=list)
    train_tasks: list[str] = field(default_factory=list)
    holdout_tasks: list[str] = field(default_factory=list)
    initial_hash: str = ""
    outer: dict = field(default_factory=dict)
    holdout_excluded: dict = field(default_factory=dict)
    rel_move: float | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    best_meta_step: int | None = None
    resumed_from: int | None = None

    def qgr_record(self) -> dict:
        """What a checkpoint card records about QGR: the strength used and, when it was chosen, how."""
        return {"lam": self.qgr_lam, **({"auto": self.qgr_lam_cv} if self.qgr_lam_cv else {})}

    def steps_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.steps)

    def evals_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals)

    def to_frame(self) -> pd.DataFrame:
        """Steps and evaluations in time order (meta pre-training's ``history.csv`` table)."""
        frame = pd.DataFrame(self.steps + self.evals)
        if frame.empty:
            return frame
        key = "meta_step" if "meta_step" in frame else "step"
        return frame.sort_values(key, kind="mergesort").reset_index(drop=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "History":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class DivergedError(RuntimeError):
    """A non-finite loss, gradient or parameter; ``history`` holds what happened up to it.

    ``adapt`` has restored in place the last good parameters (``history.diverged`` says which: the start of the
    last epoch that trained finitely, or the initial ones, checked to score finitely); ``meta_pretrain`` has reset
    the model to the last meta parameters. A single step (``train_step``) raises it with an empty History: its
    caller restores the parameters."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history
