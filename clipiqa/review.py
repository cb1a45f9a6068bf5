"""What a person looks at after a score: the images in score order, prediction against label, the worst misses.

Tables in, tables out (no plotting here: :mod:`clipiqa.plots` draws them):

* :func:`gallery_picks`: a few images spread evenly over the score order, worst to best;
* :func:`fit_summary`: SRCC, n and chance band of a prediction against its labels (a scatter's title);
* :func:`worst_predictions`: the images whose predicted rank is furthest from their label's rank;
* :func:`level_summary`: mean, SD and n of a score per distortion type and level (notebook 01's line plot).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from .metrics import chance_band, srcc

__all__ = ["Fit", "fit_summary", "gallery_picks", "level_summary", "worst_predictions"]


def gallery_picks(table: pd.DataFrame, score: str = "score", k: int = 12) -> pd.DataFrame:
    """``k`` rows of ``table`` at evenly spaced places of the ``score`` order, worst (lowest) first; all rows when
    there are at most ``k``. Adds ``rank`` (1 = lowest score) and ``n`` (rows ranked). Rows without a score are
    left out; ties keep the table's order."""
    scored = table[table[score].notna()].sort_values(score, kind="stable").reset_index(drop=True)
    n = len(scored)
    places = np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(int)) if n else np.array([], int)
    return scored.iloc[places].assign(rank=places + 1, n=n).reset_index(drop=True)


class Fit(NamedTuple):
    """How a prediction ranks against its labels."""

    srcc: float
    n: int
    band: float  # 95 % chance band of SRCC at this n (NaN below 3 images)

    def title(self) -> str:
        """``SRCC 0.81 (n = 80; chance band ±0.22)``."""
        band = f"; chance band ±{self.band:.2f}" if np.isfinite(self.band) else ""
        return f"SRCC {self.srcc:.2f} (n = {self.n}{band})"


def fit_summary(pred, label) -> Fit:
    """SRCC of ``pred`` against ``label`` (pairs with a missing value left out), their number and chance band."""
    pred, label = np.asarray(pred, dtype=float), np.asarray(label, dtype=float)
    keep = np.isfinite(pred) & np.isfinite(label)
    n = int(keep.sum())
    rho = float(srcc(pred[keep], label[keep])) if n >= 3 else float("nan")
    return Fit(rho, n, float(chance_band(n)) if n >= 3 else float("nan"))


def worst_predictions(table: pd.DataFrame, pred: str = "pred", label: str = "q", k: int = 6) -> pd.DataFrame:
    """The ``k`` rows whose rank by ``pred`` is furthest from their rank by ``label``, largest error first.

    Adds ``label_rank`` and ``pred_rank`` (1 = lowest, ties share their mean rank), ``rank_error``
    (``pred_rank - label_rank``: positive = ranked better than its label says) and ``n``. Rank errors, not value
    errors: SRCC only counts the order, and a CLIP arm's prediction (a logit margin) is not on the label's scale."""
    rows = table[table[pred].notna() & table[label].notna()].copy()
    rows["label_rank"] = rows[label].rank(method="average")
    rows["pred_rank"] = rows[pred].rank(method="average")
    rows["rank_error"] = rows["pred_rank"] - rows["label_rank"]
    rows["n"] = len(rows)
    order = rows["rank_error"].abs().sort_values(ascending=False, kind="stable").index
    return rows.loc[order].head(k).reset_index(drop=True)


def level_summary(table: pd.DataFrame, value: str = "score", group: str = "distortion",
                  level: str = "level") -> pd.DataFrame:
    """One row per (``group``, ``level``): ``mean``, ``sd`` (NaN for one image) and ``n`` of ``value``."""
    out = table.groupby([group, level], sort=True)[value].agg(mean="mean", sd="std", n="size").reset_index()
    out["n"] = out["n"].astype(int)
    return out
