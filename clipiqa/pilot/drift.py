"""Drift of a line's recent images against a reference window: on the margins and on the image embeddings.

Two complementary tests, both pure functions:
- margins: the two-sample Kolmogorov-Smirnov test (scipy), sensitive to any change in the distribution of the
  model's quality margin (the line got worse, or the model's scale moved);
- embeddings: the maximum mean discrepancy (MMD, Gretton et al. 2012) with a Gaussian kernel whose bandwidth is
  the median pairwise distance of the pooled sample, with a permutation p-value. It sees changes in *what* the
  camera shows (new product, new lighting) even when the margins look alike.

A window is "drifted" when either p-value falls below ``alpha``. With small windows neither test has power, so
:func:`drift_report` says when a window is too small to judge rather than report "no drift".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

MIN_WINDOW = 8
"""Fewer images than this in either window: no test is run (the report says why)."""


def ks_drift(reference: np.ndarray, recent: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic and p-value of the margins."""
    result = stats.ks_2samp(np.asarray(reference, float), np.asarray(recent, float))
    return float(result.statistic), float(result.pvalue)


def _sq_dists(x: np.ndarray) -> np.ndarray:
    sq = np.sum(x * x, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def mmd2_unbiased(kernel: np.ndarray, n: int) -> float:
    """Unbiased MMD² from the pooled kernel matrix whose first ``n`` rows are sample X, the rest sample Y."""
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    m = kernel.shape[0] - n
    sum_xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sum_xx + sum_yy - 2 * kxy.mean())


def mmd_drift(reference: np.ndarray, recent: np.ndarray, n_permutations: int = 500,
              seed: int = 0) -> tuple[float, float]:
    """MMD² between two embedding samples (rows) and its permutation p-value ``(1 + #{perm >= obs}) / (1 + P)``."""
    x, y = np.asarray(reference, np.float64), np.asarray(recent, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"embeddings must be two [n, d] arrays of one width; got {x.shape} and {y.shape}")
    pooled = np.concatenate([x, y])
    d2 = _sq_dists(pooled)
    off = d2[~np.eye(len(pooled), dtype=bool)]
    bandwidth2 = float(np.median(off)) if np.median(off) > 0 else 1.0
    kernel = np.exp(-d2 / bandwidth2)
    n = len(x)
    observed = mmd2_unbiased(kernel, n)
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(n_permutations):
        p = rng.permutation(len(pooled))
        exceed += mmd2_unbiased(kernel[np.ix_(p, p)], n) >= observed
    return observed, (1 + exceed) / (1 + n_permutations)


@dataclass(frozen=True)
class DriftReport:
    """One window's drift verdict. ``drifted`` is None when the windows were too small to test."""

    n_reference: int
    n_recent: int
    ks_statistic: float
    ks_pvalue: float
    mmd2: float
    mmd_pvalue: float
    alpha: float
    drifted: bool | None
    reason: str

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def drift_report(ref_margins, recent_margins, ref_embeddings=None, recent_embeddings=None, *, alpha: float = 0.01,
                 n_permutations: int = 500, seed: int = 0) -> DriftReport:
    """Test the recent window against the reference on margins (KS) and, when given, embeddings (MMD)."""
    n_ref, n_new = len(ref_margins), len(recent_margins)
    nan = math.nan
    if min(n_ref, n_new) < MIN_WINDOW:
        return DriftReport(n_ref, n_new, nan, nan, nan, nan, alpha, None,
                           f"too few images to test drift ({n_ref} reference, {n_new} recent; at least {MIN_WINDOW} "
                           "each)")
    ks, ks_p = ks_drift(np.asarray(ref_margins), np.asarray(recent_margins))
    mmd2, mmd_p = nan, nan
    if ref_embeddings is not None and recent_embeddings is not None:
        mmd2, mmd_p = mmd_drift(np.asarray(ref_embeddings), np.asarray(recent_embeddings), n_permutations, seed)
    hits = [name for name, p in (("margins (KS)", ks_p), ("embeddings (MMD)", mmd_p)) if p == p and p < alpha]
    reason = (f"drift in {' and '.join(hits)} at alpha {alpha}" if hits
              else f"no drift detected at alpha {alpha}")
    return DriftReport(n_ref, n_new, ks, ks_p, mmd2, mmd_p, alpha, bool(hits), reason)
