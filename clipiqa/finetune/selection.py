"""Evaluation and model selection of few-shot adaptation: the val/test sets scored after an epoch, the number
selection maximises, and the tracker that keeps the best state (or says why selection never ran)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data.transforms import eval_transform
from ..history import AdaptHistory
from ..imageio import load_image
from ..inference import predict_batches
from ..metrics import plcc, srcc
from .config import AdaptConfig
from .step import EncodedSet

SELECTION_KEYS = {"val": "val", "test-oracle": "test"}
"""The evaluation set each selection mode reads (``fixed`` reads none)."""


def predict_encoded(model, encoded: EncodedSet, batch_size: int, amp: bool | None = None):
    """Predictions (margin to rank by, p_high) of the first view of ``encoded``, through the one inference path
    (:func:`clipiqa.inference.predict_batches`: eval mode, encoder under bf16 autocast on CUDA by default, head in
    fp32)."""
    return predict_batches(model, encoded.inputs[:, 0].split(batch_size), start=encoded.start, amp=amp)


def selection_score(prediction, target: np.ndarray, metric: str) -> float:
    """The number model selection maximises: SRCC of the margins, or (``srcc+plcc``, the released code's) SRCC
    plus the PLCC of p_high. NaN when undefined (e.g. fewer than 3 images or constant predictions)."""
    value = srcc(prediction.margin.numpy(), target)
    if metric == "srcc+plcc":
        value += plcc(prediction.score.numpy(), target)
    return float(value)


def images_for(table: pd.DataFrame, preloaded: dict) -> list:
    """Images of ``table`` in row order, reusing preloaded ones and reading the rest."""
    return [preloaded[p] if p in preloaded else load_image(p) for p in table["path"]]


class Evaluation:
    """The sets scored after an epoch: ``val`` (a held-out part of the labelled images) and ``test`` (given for
    the test-oracle or to log test SRCC), each encoded once with one centre crop. Empty when neither is given."""

    def __init__(self, model, val: pd.DataFrame | None, test: pd.DataFrame | None, config: AdaptConfig,
                 start: int, preloaded: dict):
        self.model, self.config, self.val = model, config, val
        self.sets: dict[str, tuple[EncodedSet, np.ndarray]] = {}
        for name, table in (("val", val), ("test", test)):
            if table is not None and len(table):
                enc = EncodedSet(model, images_for(table, preloaded), eval_transform(model.transform_spec), 1,
                                 start, config.eval_batch_size, teacher=False)
                self.sets[name] = (enc, table["q"].to_numpy())

    def __bool__(self) -> bool:
        return bool(self.sets)

    def row(self, epoch: int, step: int, lr: float) -> dict[str, Any]:
        """SRCC and the selection score on every set, after ``epoch`` (``step`` steps done, learning rate ``lr``)."""
        row: dict[str, Any] = {"kind": "eval", "epoch": epoch, "step": step, "lr": lr}
        for name, (enc, target) in self.sets.items():
            prediction = predict_encoded(self.model, enc, self.config.eval_batch_size, self.config.amp)
            row[f"srcc_{name}"] = srcc(prediction.margin.numpy(), target)
            row[f"select_{name}"] = selection_score(prediction, target, self.config.selection_metric)
        return row

    def never_ran(self, key: str) -> str:
        """Why a val/test-oracle selection picked nothing (the last epoch's state is kept)."""
        if key not in self.sets:
            n = 0 if self.val is None else len(self.val)
            return f"{key} selection never ran: no {key} images ({n}); the last epoch's state is kept"
        n = len(self.sets[key][1])
        return (f"{key} selection never ran: the selection metric was undefined on every evaluation ({n} {key} "
                "image(s); SRCC needs at least 3 with distinct scores); the last epoch's state is kept")


class SelectionTracker:
    """Keeps the trainable state of the evaluation with the best selection score (``val`` or ``test-oracle``;
    strictly better only, so ties keep the earlier epoch; a NaN score never wins). ``fixed`` keeps nothing and the
    last state stands."""

    def __init__(self, mode: str):
        self.key = SELECTION_KEYS.get(mode)
        self.score, self.epoch, self.state = -math.inf, None, None

    def offer(self, row: dict, epoch: int, model) -> float | None:
        """Consider the state after ``epoch`` scored in ``row``; returns its selection score (None for
        ``fixed``)."""
        if not self.key:
            return None
        score = row[f"select_{self.key}"]
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {n: p.detach().clone() for n, p in model.adapter_parameters()}
        return score

    def conclude(self, model, history: AdaptHistory, last_epoch: int, evaluation: Evaluation) -> None:
        """Load the kept state into ``model`` and record ``selected_epoch``; without one the last epoch stands
        (and a selection that never ran says why in ``history.note``)."""
        if self.state is not None:
            with torch.no_grad():
                for n, p in model.adapter_parameters():
                    p.copy_(self.state[n])
            history.selected_epoch = self.epoch
            return
        history.selected_epoch = last_epoch if history.steps else None
        if self.key:
            history.add_note(evaluation.never_ran(self.key))
