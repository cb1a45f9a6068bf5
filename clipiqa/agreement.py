"""How much raters agree: the human ceiling a model can reach (docs/design.md, 'Labels and sessions').

Pure functions on a rating table (a ``pandas.DataFrame``, one row per rating, oldest first) with columns
``image``, ``rater``, ``score`` and optionally ``is_repeat`` (a blind repeat of an image the rater rated before).
:meth:`clipiqa.session.Session.ratings` gives such a table; any other source works the same.

Definitions (each one unit-tested against a hand computation):

* **label** of a rater for an image: their latest non-repeat rating of it (:func:`current_labels`).
* **MOS** of an image: the mean of its raters' labels; ``mos_std`` their sample standard deviation
  (``ddof=1``; NaN for a single rater); ``n_ratings`` the number of raters (:func:`mos_table`).
* **Inter-rater agreement** (:func:`split_half`): split the raters into two halves (sizes ``floor(k/2)`` and
  ``ceil(k/2)``); per image, average each half's labels; SRCC between the two half-means over the images both
  halves rated. Average that SRCC over the splits (every distinct split when there are at most ``max_splits``,
  else ``max_splits`` seeded random ones), then apply the **Spearman-Brown** correction for doubling the number
  of raters, ``2 r / (1 + r)``: the expected agreement of this panel's MOS with another panel's MOS of the
  same size — the ceiling for a model's SRCC against these labels. Needs at least 2 raters and 3 shared
  images.
* **Test-retest** (:func:`test_retest`): SRCC between each rater's label and their blind repeat of the same
  image, pooled over raters (the latest repeat when there are several). Needs 3 repeats.
* **Confidence intervals** (:func:`human_ceiling`): percentile bootstrap over images (split-half) or over
  repeat pairs (test-retest), seeded, so the same table gives the same interval.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

MAX_SPLITS = 200
BOOT_SPLITS = 50  # splits averaged inside each bootstrap resample (a seeded subset when there are more)


# ------------------------------------------------------------------------------------------------ tables
def _check(ratings: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("image", "rater", "score") if c not in ratings]
    if missing:
        raise ValueError(f"a rating table needs the columns image, rater, score (and optionally is_repeat); "
                         f"missing {missing} in {list(ratings.columns)}")
    if "is_repeat" not in ratings:
        ratings = ratings.assign(is_repeat=False)
    return ratings


def current_labels(ratings: pd.DataFrame) -> pd.DataFrame:
    """Each rater's label per image: their latest non-repeat rating (rows in time order). Columns
    ``image, rater, score``."""
    ratings = _check(ratings)
    first = ratings[~ratings["is_repeat"].astype(bool)]
    return first.drop_duplicates(["image", "rater"], keep="last")[["image", "rater", "score"]].reset_index(drop=True)


def score_stats(scores: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, sample std, n)`` of one image's labels; the std uses ``ddof=1`` and is NaN for one label."""
    n = len(scores)
    if not n:
        return float("nan"), float("nan"), 0
    mean = math.fsum(scores) / n
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else float("nan")
    return mean, std, n


def mos_by_image(labels: Iterable[tuple[Any, float]]) -> dict[Any, tuple[float, float, int]]:
    """``{image: (mos, mos_std, n_ratings)}`` from ``(image, label)`` pairs, one per rater (first-seen order)."""
    groups: dict[Any, list[float]] = {}
    for image, score in labels:
        groups.setdefault(image, []).append(float(score))
    return {image: score_stats(scores) for image, scores in groups.items()}


def mos_table(labels: pd.DataFrame) -> pd.DataFrame:
    """Per image (in order of first appearance): ``mos``, ``mos_std`` (ddof=1, NaN for one rating) and
    ``n_ratings`` from a table with one label per (image, rater) (see :func:`current_labels`; a table with
    several ratings per rater is reduced to their labels first)."""
    labels = _check(labels)
    if labels["is_repeat"].astype(bool).any() or labels.duplicated(["image", "rater"]).any():
        labels = current_labels(labels)
    stats = mos_by_image(zip(labels["image"], labels["score"]))
    return pd.DataFrame([(image, *row) for image, row in stats.items()],
                        columns=["image", "mos", "mos_std", "n_ratings"])


def retest_pairs(ratings: pd.DataFrame) -> pd.DataFrame:
    """``image, rater, first, repeat``: a rater's label of an image beside their latest blind repeat of it."""
    ratings = _check(ratings)
    rep = ratings[ratings["is_repeat"].astype(bool)].drop_duplicates(["image", "rater"], keep="last")
    first = current_labels(ratings)
    pairs = first.merge(rep[["image", "rater", "score"]], on=["image", "rater"], suffixes=("_first", "_repeat"))
    return pairs.rename(columns={"score_first": "first", "score_repeat": "repeat"})


# ------------------------------------------------------------------------------------------------ statistics
def spearman_brown(r: float, factor: float = 2.0) -> float:
    """Reliability of ``factor`` times as many raters: ``factor r / (1 + (factor - 1) r)``, kept in [-1, 1]."""
    if not np.isfinite(r):
        return float("nan")
    den = 1.0 + (factor - 1.0) * r
    if den <= 0:
        return -1.0
    return float(np.clip(factor * r / den, -1.0, 1.0))


def rater_splits(raters: list, max_splits: int = MAX_SPLITS, seed: int = 0) -> list[tuple[tuple, tuple]]:
    """Distinct splits of ``raters`` into halves ``(A, B)`` with ``len(A) = floor(k/2)``: all of them when there
    are at most ``max_splits``, else ``max_splits`` seeded random ones. With an even ``k``, (A, B) and (B, A)
    are one split."""
    raters = sorted(raters, key=str)
    k = len(raters)
    if k < 2:
        return []
    h = k // 2
    first = raters[0]
    if k % 2 == 0:
        count = math.comb(k - 1, h - 1)
        combos = (c for c in itertools.combinations(raters, h) if first in c)
    else:
        count = math.comb(k, h)
        combos = itertools.combinations(raters, h)
    if count <= max_splits:
        chosen = list(combos)
    else:
        rng = np.random.default_rng(seed)
        seen: set[tuple] = set()
        while len(seen) < max_splits:
            pick = tuple(sorted(rng.choice(k, size=h, replace=False).tolist()))
            if k % 2 == 0 and 0 not in pick:
                pick = tuple(sorted(set(range(k)) - set(pick)))
            seen.add(pick)
        chosen = [tuple(raters[i] for i in p) for p in sorted(seen)]
    return [(a, tuple(r for r in raters if r not in a)) for a in chosen]


def _rank_rows(x: np.ndarray) -> np.ndarray:
    from scipy import stats  # imported here: the label store needs MOS, not scipy (seconds to import)
    return stats.rankdata(x, axis=-1, nan_policy="omit")


def _srcc_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise SRCC of 2-D arrays, each row over the columns where both are finite (NaN below 3 or when a
    side is constant)."""
    valid = np.isfinite(a) & np.isfinite(b)
    ra = _rank_rows(np.where(valid, a, np.nan))
    rb = _rank_rows(np.where(valid, b, np.nan))
    n = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without valid pairs give NaN
        da = ra - np.nanmean(ra, axis=-1, keepdims=True)
        db = rb - np.nanmean(rb, axis=-1, keepdims=True)
        num = np.nansum(da * db, axis=-1)
        den = np.sqrt(np.nansum(da * da, axis=-1) * np.nansum(db * db, axis=-1))
        r = np.where((den > 0) & (n >= 3), num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def _half_means(labels: pd.DataFrame, splits: list[tuple[tuple, tuple]]) -> tuple[np.ndarray, np.ndarray]:
    """Per split and image: the mean label of half A and of half B (NaN where a half has no label)."""
    matrix = labels.pivot_table(index="image", columns="rater", values="score", aggfunc="last", sort=False)
    cols = {r: i for i, r in enumerate(matrix.columns)}
    m = matrix.to_numpy(dtype=float)
    ha = np.empty((len(splits), m.shape[0]))
    hb = np.empty_like(ha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a half without labels of an image: NaN
        for s, (a, b) in enumerate(splits):
            ha[s] = np.nanmean(m[:, [cols[r] for r in a]], axis=1)
            hb[s] = np.nanmean(m[:, [cols[r] for r in b]], axis=1)
    return ha, hb


def _split_half_value(ha: np.ndarray, hb: np.ndarray) -> tuple[float, float]:
    r = _srcc_rows(ha, hb)
    r = r[np.isfinite(r)]
    raw = float(r.mean()) if r.size else float("nan")
    return spearman_brown(raw), raw


def split_half(ratings: pd.DataFrame, max_splits: int = MAX_SPLITS, seed: int = 0) -> dict[str, Any]:
    """Inter-rater agreement (see the module docstring): ``srcc`` (Spearman-Brown corrected), ``raw`` (mean
    split-half SRCC before the correction), ``n_splits``, ``n_raters``, ``n_images`` (rated by 2+ raters)."""
    labels = current_labels(ratings)
    raters = list(pd.unique(labels["rater"]))
    shared = int((labels.groupby("image")["rater"].nunique() >= 2).sum()) if len(labels) else 0
    out = {"srcc": float("nan"), "raw": float("nan"), "n_splits": 0, "n_raters": len(raters), "n_images": shared}
    splits = rater_splits(raters, max_splits, seed)
    if not splits or shared < 3:
        return out
    ha, hb = _half_means(labels, splits)
    out["srcc"], out["raw"] = _split_half_value(ha, hb)
    out["n_splits"] = len(splits)
    return out


def test_retest(ratings: pd.DataFrame) -> dict[str, Any]:
    """SRCC between raters' labels and their blind repeats, pooled over raters: ``srcc``, ``n_pairs``."""
    pairs = retest_pairs(ratings)
    r = _srcc_rows(pairs["first"].to_numpy(float)[None], pairs["repeat"].to_numpy(float)[None])[0]
    return {"srcc": float(r), "n_pairs": len(pairs)}


test_retest.__test__ = False  # not a pytest test, despite its name


# ------------------------------------------------------------------------------------------------ ceiling
@dataclass(frozen=True)
class Ceiling:
    """The human ceiling of a rating table (see the module docstring); NaN where it cannot be computed."""

    n_images: int
    n_raters: int
    n_ratings: int
    split_half: float
    split_half_lo: float
    split_half_hi: float
    split_half_raw: float
    n_splits: int
    n_shared_images: int
    test_retest: float
    test_retest_lo: float
    test_retest_hi: float
    n_repeats: int

    @property
    def available(self) -> bool:
        """True when inter-rater agreement could be computed (2+ raters sharing 3+ images)."""
        return bool(np.isfinite(self.split_half))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """One plain-language paragraph."""
        if self.available:
            lines = [f"Your raters agree with each other at SRCC {self.split_half:.2f} (95% CI "
                     f"{self.split_half_lo:.2f} to {self.split_half_hi:.2f}; split-half, Spearman-Brown corrected; "
                     f"{self.n_raters} raters, {self.n_shared_images} images rated by two or more)."]
        else:
            lines = [f"No inter-rater agreement yet ({self.n_raters} rater(s), {self.n_shared_images} image(s) "
                     "rated by two or more; needs 2 raters and 3 shared images)."]
        if np.isfinite(self.test_retest):
            lines.append(f"Blind repeats agree with the first rating at SRCC {self.test_retest:.2f} (95% CI "
                         f"{self.test_retest_lo:.2f} to {self.test_retest_hi:.2f}; {self.n_repeats} repeats).")
        elif self.n_repeats:
            lines.append(f"{self.n_repeats} blind repeat(s) so far: test-retest needs 3.")
        return " ".join(lines)

    def __str__(self) -> str:
        return self.text()


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def split_half_ci(ratings: pd.DataFrame, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                  max_splits: int = BOOT_SPLITS) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`split_half` (corrected), resampling images with replacement; each
    resample averages over up to ``max_splits`` splits."""
    labels = current_labels(ratings)
    splits = rater_splits(list(pd.unique(labels["rater"])), max_splits, seed)
    if not splits:
        return float("nan"), float("nan")
    ha, hb = _half_means(labels, splits)
    n = ha.shape[1]
    if n < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        values[b] = _split_half_value(ha[:, idx], hb[:, idx])[0]
    return _percentiles(values, alpha)


def test_retest_ci(ratings: pd.DataFrame, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
                   ) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`test_retest`, resampling repeat pairs with replacement."""
    pairs = retest_pairs(ratings)
    n = len(pairs)
    if n < 3:
        return float("nan"), float("nan")
    first, repeat = pairs["first"].to_numpy(float), pairs["repeat"].to_numpy(float)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    return _percentiles(_srcc_rows(first[idx], repeat[idx]), alpha)


test_retest_ci.__test__ = False


def human_ceiling(ratings: pd.DataFrame, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                  max_splits: int = MAX_SPLITS) -> Ceiling:
    """Inter-rater (split-half, Spearman-Brown) and test-retest agreement with bootstrap CIs."""
    ratings = _check(ratings)
    labels = current_labels(ratings)
    sh = split_half(ratings, max_splits, seed)
    sh_lo, sh_hi = split_half_ci(ratings, n_boot, alpha, seed) if np.isfinite(sh["srcc"]) else (math.nan,) * 2
    tr = test_retest(ratings)
    tr_lo, tr_hi = test_retest_ci(ratings, n_boot, alpha, seed) if np.isfinite(tr["srcc"]) else (math.nan,) * 2
    return Ceiling(n_images=int(labels["image"].nunique()), n_raters=sh["n_raters"], n_ratings=len(ratings),
                   split_half=sh["srcc"], split_half_lo=sh_lo, split_half_hi=sh_hi, split_half_raw=sh["raw"],
                   n_splits=sh["n_splits"], n_shared_images=sh["n_images"], test_retest=tr["srcc"],
                   test_retest_lo=tr_lo, test_retest_hi=tr_hi, n_repeats=tr["n_pairs"])


__all__ = ["current_labels", "score_stats", "mos_by_image", "mos_table", "retest_pairs", "spearman_brown",
           "rater_splits", "split_half", "split_half_ci", "test_retest", "test_retest_ci", "human_ceiling", "Ceiling"]
