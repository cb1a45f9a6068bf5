"""The common table every reader returns, and the mapping of raw MOS/DMOS to ``q`` in [0, 1] (higher =
better) from a declared range and direction (:func:`normalize_scores`, :func:`per_subset_minmax`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .specs import DatasetSpec


COMMON_COLUMNS: tuple[str, ...] = ("path", "mos", "q", "mos_std", "content_id", "distortion", "level")


def normalize_scores(mos: Any, score_range: Sequence[float], higher_better: bool = True) -> Any:
    """Map raw scores to q in [0, 1], higher = better, from a declared range and direction.

    ``q = (mos - lo) / (hi - lo)``, inverted when lower scores are better, then clipped to
    [0, 1]. NaN stays NaN. Returns a float for a scalar, a Series for a Series and an ndarray
    otherwise. This is deliberately *not* a min-max of the data, so that a test set is mapped
    the same way whatever it contains.
    """
    lo, hi = (float(v) for v in score_range)
    if not hi > lo:
        raise ValueError(f"score_range must be (lo, hi) with hi > lo, got {tuple(score_range)}")
    values = np.asarray(mos, dtype=float)
    q = (values - lo) / (hi - lo)
    if not higher_better:
        q = 1.0 - q
    q = np.clip(q, 0.0, 1.0)
    if isinstance(mos, pd.Series):
        return pd.Series(q, index=mos.index, name="q")
    if q.ndim == 0:
        return float(q)
    return q


def _table_direction(df: pd.DataFrame, score: str) -> bool | None:
    """Whether higher ``score`` is better, read from the table itself: the sign of the rank
    correlation between its ``q`` (higher = better) and ``score``; None when it cannot tell."""
    if "q" not in df.columns or score not in df.columns:
        return None
    rho = pd.to_numeric(df["q"], errors="coerce").corr(pd.to_numeric(df[score], errors="coerce"),
                                                       method="spearman")
    return None if rho is None or not np.isfinite(rho) or rho == 0 else bool(rho > 0)


def minmax_groups(values: Any, groups: Any = None, keep: Any = None) -> np.ndarray:
    """Min-max normalise ``values`` to [0, 1] within each group of ``groups`` (all together when None).

    The one min-max of the package: the released code's label normalisation, per distortion subset or over a
    whole draw. A group whose values are all equal has no range to stretch; it keeps ``keep`` there (default:
    its own values), never a made-up 0.5: a set of clean references at q = 1.0 stays at 1.0, since mapping it to
    the middle would teach that a pristine image is mediocre. NaN values stay NaN and do not set a range.
    """
    values = np.asarray(values, dtype=float)
    keep = values if keep is None else np.asarray(keep, dtype=float)
    if keep.shape != values.shape:
        raise ValueError(f"keep has shape {keep.shape}, values {values.shape}; give one keep value per value")
    labels = np.zeros(len(values), dtype=int) if groups is None else \
        pd.factorize(pd.Series(np.asarray(groups, dtype=object)).where(lambda g: g.notna(), "<none>"))[0]
    out = keep.copy()
    for g in np.unique(labels):
        mask = labels == g
        group = values[mask]
        if not np.isfinite(group).any():
            continue
        lo, hi = np.nanmin(group), np.nanmax(group)
        if hi > lo:
            out[mask] = (group - lo) / (hi - lo)
    return out


def per_subset_minmax(df: pd.DataFrame, by: str = "distortion", score: str = "mos",
                      higher_better: bool | None = None) -> pd.DataFrame:
    """Recompute ``q`` by min-max normalising ``score`` within each ``by`` group (:func:`minmax_groups`).

    This reproduces an option of the method's released code, which normalises each subset
    separately. It makes ``q`` depend on what else is in the table, so use it only on training
    data and **never on test data**; the default mapping is :func:`normalize_scores`. The direction
    is ``higher_better`` when given, else read from the table's own ``q`` against ``score`` (so it
    survives CSV round trips, merges and concats, which drop ``attrs``), else
    ``df.attrs["higher_better"]``; a table that says none of these is a ``ValueError``. A group with
    a single distinct score keeps its ``q`` (or, without a ``q`` column, the mapping of
    ``attrs["score_range"]``). Returns a copy; ``attrs["q_mapping"]`` records what was done.
    """
    if by not in df.columns:
        raise KeyError(f"column {by!r} not in table (columns: {', '.join(df.columns)})")
    if higher_better is None:
        higher_better = _table_direction(df, score)
    if higher_better is None:
        higher_better = df.attrs.get("higher_better")
    if higher_better is None:
        raise ValueError(f"cannot tell whether higher {score!r} is better: the table has no usable 'q' "
                         "column and no attrs['higher_better']; pass higher_better=True or False")
    values = df[score].to_numpy(dtype=float)
    if "q" in df.columns:
        keep = df["q"].to_numpy(dtype=float)
    elif "score_range" in df.attrs:
        keep = normalize_scores(values, df.attrs["score_range"], bool(higher_better))
    else:
        keep = np.full(len(df), np.nan)  # a single-valued group without q or a declared range: no honest value
    out = df.copy()
    # lower-is-better scores: the min-max of -score is 1 - the min-max of score
    out["q"] = np.clip(minmax_groups(values if higher_better else -values, out[by], keep=keep), 0.0, 1.0)
    out.attrs = dict(df.attrs)
    out.attrs["q_mapping"] = f"per-subset min-max by {by!r} (released-code option; never on test data)"
    return out


def common_table(paths: Sequence[str], mos: Sequence[float], *, score_range: Sequence[float],
                  higher_better: bool, content_id: Sequence[str],
                  mos_std: Sequence[float] | None = None,
                  distortion: Sequence[str | None] | None = None,
                  level: Sequence[float] | None = None) -> pd.DataFrame:
    """Assemble the common table (without attrs) from per-image sequences."""
    n = len(paths)
    mos_arr = np.asarray(mos, dtype=float)
    std_arr = np.full(n, np.nan) if mos_std is None else np.asarray(mos_std, dtype=float)
    dist = [None] * n if distortion is None else [None if d is None else str(d) for d in distortion]
    df = pd.DataFrame({
        "path": pd.Series(list(paths), dtype=object),
        "mos": mos_arr,
        "q": normalize_scores(mos_arr, score_range, higher_better),
        "mos_std": std_arr,
        "content_id": pd.Series([str(c) for c in content_id], dtype=object),
        "distortion": pd.Series(dist, dtype=object),
        "level": _level_column(level, n),
    })
    return df


def _level_column(level: Sequence[float] | None, n: int) -> pd.Series:
    """int64 levels when all are known, else float64 with NaN."""
    if level is None:
        return pd.Series(np.full(n, np.nan))
    arr = np.asarray(level, dtype=float)
    if n and not np.isnan(arr).any():
        return pd.Series(arr.astype(np.int64))
    return pd.Series(arr)


def set_attrs(df: pd.DataFrame, spec: DatasetSpec, root: Path, labels: Path, *,
               score_range: Sequence[float] | None = None, score_column: str | None = None,
               higher_better: bool | None = None, synthetic: bool | None = None,
               dataset: str | None = None) -> pd.DataFrame:
    """Fill ``df.attrs`` with the dataset metadata."""
    df.attrs = {
        "dataset": dataset or spec.name,
        "score_range": tuple(float(v) for v in (score_range or spec.score_range)),
        "higher_better": spec.higher_better if higher_better is None else bool(higher_better),
        "synthetic": spec.synthetic if synthetic is None else bool(synthetic),
        "score_column": score_column or spec.score_column,
        "root": os.path.abspath(root),
        "labels_file": os.path.abspath(labels),
    }
    return df
