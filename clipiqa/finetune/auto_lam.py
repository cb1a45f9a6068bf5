"""Automatic QGR strength (``QGRConfig(lam="auto")``): the strength a run trains with, chosen from its labelled
images alone.

Why: the released strength (lam = 5) reverses the quality step on a tensor whenever cos(g_q, g_s) > 1/sqrt(5), and
how often that happens depends on the backbone and the data; a fixed strength cannot suit every run, and the test
labels must never be the judge. The rule:

1. split the labelled images into ``auto_folds`` folds by content (every image of a reference content in one
   fold, so a fold never scores a content it trained on; by image when no content groups several images), from a
   seeded permutation of the sorted groups;
2. for each strength in ``auto_grid`` (0, i.e. plain fine-tuning, always among them) and each fold: train a copy of
   the model on the other folds with the run's own recipe and budget (fixed budget, no selection; a plateau
   schedule becomes constant since nothing is evaluated) and the descent guard on, and score the held-out fold by
   SRCC;
3. keep the strength with the highest mean SRCC over the folds (folds where SRCC is undefined are left out);
   ties go to the smaller strength, so QGR must earn its place against plain fine-tuning.

The cost is ``len(auto_grid) * auto_folds`` extra training runs on about ``(k-1)/k`` of the images (12 with the
defaults), each at the run's own budget. The test split is never an input here: the function takes the labelled
table only.
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd

from ..data.splits import has_content_groups
from ..inference import predict_pil
from ..imageio import load_image
from ..metrics import srcc
from .config import AdaptConfig

__all__ = ["content_folds", "choose_lam"]

_FOLD_STREAM = 7  # a random stream of its own: the folds do not share draws with few-shot draws or hold-outs


def content_folds(labelled: pd.DataFrame, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (fit, held-out) row-position pairs that keep every content in one fold (by image when no content
    groups several rows, as :func:`clipiqa.data.splits.has_content_groups` decides); fewer folds when there are
    fewer groups. Deterministic from ``seed`` and the set of groups."""
    if has_content_groups(labelled):
        ids = labelled["content_id"]
        keys = np.where(ids.isna(), "image:" + labelled["path"].astype(str), "content:" + ids.astype(str))
    else:
        keys = ("image:" + labelled["path"].astype(str)).to_numpy()
    groups = sorted(set(keys.tolist()))
    k = min(k, len(groups))
    if k < 2:
        return []
    order = np.random.default_rng((int(seed), _FOLD_STREAM)).permutation(len(groups))
    fold_of = {groups[g]: pos % k for pos, g in enumerate(order)}
    fold = np.array([fold_of[key] for key in keys.tolist()])
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def _inner_config(config: AdaptConfig, lam: float) -> AdaptConfig:
    """The run's recipe at strength ``lam`` (guard kept), fixed budget, no evaluation."""
    schedule = "constant" if config.lr_schedule == "plateau" else config.lr_schedule
    return replace(config, qgr=replace(config.qgr, lam=float(lam), enabled=True), selection="fixed",
                   select_initial=False, lr_schedule=schedule)


def choose_lam(model, labelled: pd.DataFrame, config: AdaptConfig, *, images: list | None = None,
               stop: Callable[[], bool] | None = None) -> tuple[float, dict]:
    """The strength to train with, and the record of how it was chosen (see the module docstring for the rule).

    ``model`` is copied for every inner run and left untouched; ``labelled`` holds the run's labelled images only
    (``path``, ``q``, optional ``content_id``); ``images``: preloaded PIL images in ``labelled`` order. Returns
    ``(lam, record)`` with ``record = {"scores": {lam: mean SRCC or None}, "fold_scores": ..., "folds": k,
    "min_descent": kappa, "rule": ...}``. With fewer than two content groups no fold can be held out: the
    strength is 0 (plain fine-tuning) and the record says why.
    """
    from .loop import adapt  # the loop calls this module: import at use

    qgr = config.qgr
    labelled = labelled.reset_index(drop=True)
    grid = [float(v) for v in qgr.auto_grid]
    record = {"grid": grid, "min_descent": float(qgr.min_descent), "folds": 0, "scores": {}, "fold_scores": {},
              "rule": "content-grouped inner CV on the labelled images, mean SRCC, ties to the smaller lam"}
    folds = [(fit, held) for fit, held in content_folds(labelled, qgr.auto_folds, config.seed)
             if len(fit) >= 2 and len(held) >= 3]
    if not folds:
        record["note"] = (f"too few labelled contents for an inner split ({len(labelled)} images): lam = 0 "
                          "(plain fine-tuning)")
        return 0.0, record
    record["folds"] = len(folds)
    if images is None:
        images = [load_image(p) for p in labelled["path"]]
    per_lam: dict[float, list[float]] = {lam: [] for lam in grid}
    for fit, held in folds:
        fit_table, fit_images = labelled.iloc[fit].reset_index(drop=True), [images[i] for i in fit]
        target = labelled["q"].to_numpy(dtype=float)[held]
        for lam in grid:
            inner = copy.deepcopy(model)
            adapt(inner, fit_table, _inner_config(config, lam), images=fit_images, stop=stop)
            pred = predict_pil(inner, [images[i] for i in held], batch_size=config.eval_batch_size,
                               amp=config.amp)
            per_lam[lam].append(float(srcc(pred.margin.numpy(), target)))
            del inner
    best, best_score = 0.0, -math.inf
    for lam in sorted(grid):
        finite = [s for s in per_lam[lam] if math.isfinite(s)]
        score = float(np.mean(finite)) if finite else None
        record["scores"][str(lam)] = score
        record["fold_scores"][str(lam)] = per_lam[lam]
        if score is not None and score > best_score:  # strict: ties keep the smaller strength
            best, best_score = lam, score
    return best, record
