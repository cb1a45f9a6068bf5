"""The record of a training run and the error a run raises when it diverges.

:class:`History` is what every run records (steps, evaluations, settings, the trainable tensors, stopped or not,
the note, the seconds); :class:`AdaptHistory` adds what few-shot ``adapt`` decides (the selected epoch, a
divergence, the QGR strength) and :class:`MetaHistory` what ``meta_pretrain`` decides (the tasks, the movement of
the meta parameters, the selection on held-out source tasks). Both loops raise the one :class:`DivergedError`.

``History.from_dict`` reads any of the three back, including the files written before the record was split (one
class holding both loops' fields, each loop leaving the other's at their defaults): it returns the class whose
own fields the file fills.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Mapping

import pandas as pd

__all__ = ["History", "AdaptHistory", "MetaHistory", "DivergedError"]


@dataclass
class History:
    """What happened in a run: one row per step and per evaluation, and how the run ended.

    ``config`` is the run's settings, ``trainable`` the names of the tensors it trained, ``stopped`` whether a stop
    request ended it early, ``note`` what to know before using the result (``; ``-separated), ``seconds`` its wall
    time. The loops return the subclasses :class:`AdaptHistory` and :class:`MetaHistory`.
    """

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    trainable: list[str] = field(default_factory=list)
    stopped: bool = False
    note: str = ""
    seconds: float = 0.0

    def add_note(self, text: str) -> None:
        """Append ``text`` to ``note`` (``; ``-separated); empty text adds nothing."""
        self.note = "; ".join(filter(None, [self.note, text]))

    def steps_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.steps)

    def evals_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals)

    def to_frame(self) -> pd.DataFrame:
        """Steps and evaluations in time order (the ``history.csv`` table): by ``meta_step`` when the rows have
        one, else by ``step``."""
        frame = pd.DataFrame(self.steps + self.evals)
        if frame.empty:
            return frame
        key = "meta_step" if "meta_step" in frame else "step"
        return frame.sort_values(key, kind="mergesort").reset_index(drop=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "History":
        """The record ``data`` holds (fields it does not know are ignored, missing ones take their defaults).

        Called on :class:`History` itself, it returns the subclass whose own fields ``data`` fills: a file of
        the single record both loops once shared reads back as the loop's own class."""
        target = _kind_of(data) if cls is History else cls
        return target(**{f.name: data[f.name] for f in fields(target) if f.name in data})


@dataclass
class AdaptHistory(History):
    """The record of few-shot ``adapt``.

    ``selected_epoch``: the epoch whose state was kept (0: the initial state, with ``select_initial``).
    ``diverged``: set when training diverged: step, epoch, reason, and which parameters were restored
    (``restored_epoch``, ``restored_after_step``). ``qgr_lam``: the QGR strength the run trained with (0.0 when
    QGR was off), given or chosen; for ``lam="auto"``, ``qgr_lam_cv`` says how it was chosen (mean inner-CV SRCC
    per grid value, folds, the descent guard).
    """

    selected_epoch: int | None = None
    diverged: dict | None = None
    qgr_lam: float | None = None
    qgr_lam_cv: dict = field(default_factory=dict)

    def qgr_record(self) -> dict:
        """What a checkpoint card records about QGR: the strength used and, when it was chosen, how."""
        return {"lam": self.qgr_lam, **({"auto": self.qgr_lam_cv} if self.qgr_lam_cv else {})}


@dataclass
class MetaHistory(History):
    """The record of ``meta_pretrain``.

    ``train_tasks`` / ``holdout_tasks``: the task names on each side; ``holdout_excluded`` counts, per held-out
    task, the images left out of its scoring because training tasks hold them too. ``task_starts``: a hash of the
    parameters at the start of every task visit. ``initial_hash``: the parameters at the start of the run
    (theta0). Every step and evaluation row has ``rel_move = |theta - theta0| / |theta0|``; ``rel_move`` here is
    its value at the end. ``outer``: the outer optimizer actually used. ``best_score``, ``best_epoch``,
    ``best_meta_step``: the selection on held-out source tasks. ``resumed_from``: the meta step a resumed run
    continued from.
    """

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


def _own_fields(kind: type) -> list:
    common = {f.name for f in fields(History)}
    return [f for f in fields(kind) if f.name not in common]


def _default(f) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _kind_of(data: Mapping[str, Any]) -> type:
    """The record class ``data`` was written from: the subclass whose own fields hold a value other than their
    default; else the one whose own fields are present at all; else :class:`History`."""
    for test in (lambda f: f.name in data and data[f.name] != _default(f), lambda f: f.name in data):
        kinds = [kind for kind in (AdaptHistory, MetaHistory) if any(test(f) for f in _own_fields(kind))]
        if len(kinds) == 1:
            return kinds[0]
    return History


class DivergedError(RuntimeError):
    """A non-finite loss, gradient or parameter; ``history`` holds what happened up to it.

    ``adapt`` has restored in place the last good parameters (``history.diverged`` says which: the start of the
    last epoch that trained finitely, or the initial ones, checked to score finitely); ``meta_pretrain`` has reset
    the model to the last meta parameters. A single step (``train_step``) raises it with an empty History: its
    caller restores the parameters."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history
