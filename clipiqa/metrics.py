r"""Evaluation metrics for image quality prediction (docs/design.md, 'Evaluation protocol').

Pure numpy/scipy functions. Inputs may be any array-like (lists, numpy arrays, torch tensors); they are
flattened to 1-D float64.

Conventions (the same in every function):

* NaN or infinite values in ``pred`` or ``target`` raise ``ValueError`` (a silent NaN would hide a broken
  prediction); arrays of different lengths raise ``ValueError``.
* Fewer than 3 pairs: correlations return ``nan`` (a correlation of 2 points is always +-1 and means
  nothing). This keeps bootstrap and per-split loops running; check ``n`` in :func:`correlations`.
* A constant ``pred`` or ``target``: correlations return ``nan`` (undefined), without a warning.
* ``rmse`` without a fit is defined for any ``n >= 1``; with the logistic fit it follows the rules of the
  fit below.

The 4-parameter logistic mapping (VQEG practice) fitted from ``pred`` to ``target`` before PLCC/RMSE:

.. math::

    f(x) = \frac{\beta_1 - \beta_2}{1 + \exp\!\big(-(x - \beta_3) / |\beta_4|\big)} + \beta_2

fitted by least squares (``scipy.optimize.curve_fit``) from :math:`\beta_1 = \max(target)`,
:math:`\beta_2 = \min(target)`, :math:`\beta_3 = \mathrm{mean}(pred)`, :math:`\beta_4 = \mathrm{std}(pred)`.
The mapping is monotone but may come out decreasing (as in the standard protocol), so PLCC after the fit
is not sign-aware: read it next to SRCC. If the fit fails (no convergence, non-finite result, degenerate
mapping, fewer than 5 points) the raw predictions are used and a :class:`LogisticFitWarning` is issued.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional, Union

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "LogisticFitWarning",
    "logistic4",
    "fit_logistic4",
    "srcc",
    "krcc",
    "plcc",
    "rmse",
    "correlations",
    "bootstrap_ci",
    "chance_band",
    "summarize",
]

_MIN_N = 3
_MIN_N_FIT = 5
_FITS = (None, "logistic4")


class LogisticFitWarning(RuntimeWarning):
    """The 4-parameter logistic fit failed; raw predictions were used instead."""


# --------------------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------------------


def _to_1d(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(str(i) for i in idx[:5]) + (", ..." if idx.size > 5 else "")
        raise ValueError(
            f"{name} contains {idx.size} NaN/infinite value(s) (at index {shown}); remove or fix them before "
            "computing metrics"
        )
    return arr


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _to_1d(pred, "pred")
    t = _to_1d(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same number of values; got {p.size} and {t.size}")
    return p, t


def _check_fit(fit: Optional[str]) -> None:
    if fit not in _FITS:
        raise ValueError(f"fit={fit!r} is not allowed; use None or 'logistic4'")


def _is_constant(x: np.ndarray) -> bool:
    return x.size == 0 or bool(np.all(x == x[0]))


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of 2-D arrays ``[m, n]``; ``nan`` for rows where either is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    num = np.einsum("ij,ij->i", a, b)
    den = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < _MIN_N or _is_constant(a) or _is_constant(b):
        return float("nan")
    return float(_pearson_rows(a[None, :], b[None, :])[0])


# --------------------------------------------------------------------------------------------------------------
# logistic mapping
# --------------------------------------------------------------------------------------------------------------


def logistic4(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    r"""The 4-parameter logistic :math:`f(x) = (\beta_1 - \beta_2)\,\sigma((x - \beta_3)/|\beta_4|) + \beta_2`.

    :math:`\sigma` is the logistic sigmoid (``scipy.special.expit``, overflow-free); :math:`|\beta_4|` is floored
    at 1e-12 so that a collapsing slope cannot divide by zero.
    """
    x = np.asarray(x, dtype=np.float64)
    scale = max(abs(float(b4)), 1e-12)
    return (b1 - b2) * special.expit((x - b3) / scale) + b2


def fit_logistic4(pred: Any, target: Any) -> tuple[Optional[np.ndarray], np.ndarray]:
    """Fit :func:`logistic4` from ``pred`` to ``target``.

    Returns:
        ``(params, mapped)``: the fitted ``(b1, b2, b3, b4)`` and ``f(pred)``; on failure ``(None, pred)`` and a
        :class:`LogisticFitWarning` saying why. A constant ``pred`` or ``target`` is not fitted (``(None, pred)``,
        no warning): every correlation is then ``nan`` anyway.
    """
    p, t = _pair(pred, target)
    params, mapped, reason = _fit_logistic4(p, t)
    if reason:
        warnings.warn(f"4-parameter logistic fit failed ({reason}); using raw predictions", LogisticFitWarning,
                      stacklevel=2)
    return params, mapped


def _fit_logistic4(p: np.ndarray, t: np.ndarray) -> tuple[Optional[np.ndarray], np.ndarray, str]:
    """Fit without warning; returns ``(params, mapped, reason)`` with ``reason == ''`` on success or no-op."""
    if _is_constant(p) or _is_constant(t):
        return None, p, ""
    if p.size < _MIN_N_FIT:
        return None, p, f"needs at least {_MIN_N_FIT} points, got {p.size}"
    sd = float(np.std(p))
    p0 = [float(np.max(t)), float(np.min(t)), float(np.mean(p)), sd if sd > 0 else 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = optimize.curve_fit(logistic4, p, t, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError, TypeError, np.linalg.LinAlgError) as exc:
        return None, p, f"{type(exc).__name__}: {exc}"
    mapped = logistic4(p, *params)
    if not np.all(np.isfinite(params)) or not np.all(np.isfinite(mapped)):
        return None, p, "non-finite parameters"
    if _is_constant(mapped):
        return None, p, "the fitted mapping is constant"
    return np.asarray(params, dtype=np.float64), mapped, ""


# --------------------------------------------------------------------------------------------------------------
# point metrics
# --------------------------------------------------------------------------------------------------------------


def srcc(pred: Any, target: Any) -> float:
    r"""Spearman rank correlation: Pearson correlation of the average ranks (ties share their mean rank).

    .. math:: \mathrm{SRCC} = \mathrm{corr}(\mathrm{rank}(pred), \mathrm{rank}(target))

    Equals ``scipy.stats.spearmanr(pred, target).statistic``. ``nan`` for n < 3 or constant input.
    """
    p, t = _pair(pred, target)
    if p.size < _MIN_N:
        return float("nan")
    return _pearson(stats.rankdata(p), stats.rankdata(t))


def krcc(pred: Any, target: Any) -> float:
    r"""Kendall rank correlation, tau-b (tie-corrected), as ``scipy.stats.kendalltau``'s default.

    .. math:: \tau_b = \frac{P - Q}{\sqrt{(P + Q + T_x)(P + Q + T_y)}}

    with P concordant pairs, Q discordant pairs, :math:`T_x` / :math:`T_y` pairs tied only in pred / only in
    target. ``nan`` for n < 3 or constant input.
    """
    p, t = _pair(pred, target)
    if p.size < _MIN_N or _is_constant(p) or _is_constant(t):
        return float("nan")
    return float(stats.kendalltau(p, t).statistic)


def plcc(pred: Any, target: Any, fit: Optional[str] = None) -> float:
    r"""Pearson linear correlation, raw (``fit=None``) or after the 4-parameter logistic fit (``"logistic4"``).

    .. math:: \mathrm{PLCC} = \frac{\sum_i (x_i - \bar x)(y_i - \bar y)}
        {\sqrt{\sum_i (x_i - \bar x)^2 \sum_i (y_i - \bar y)^2}}, \qquad x = pred \text{ or } f(pred)

    ``nan`` for n < 3 or constant input.
    """
    _check_fit(fit)
    p, t = _pair(pred, target)
    if p.size < _MIN_N or _is_constant(p) or _is_constant(t):
        return float("nan")
    if fit == "logistic4":
        _params, p, reason = _fit_logistic4(p, t)
        if reason:
            warnings.warn(f"4-parameter logistic fit failed ({reason}); PLCC uses raw predictions",
                          LogisticFitWarning, stacklevel=2)
    return _pearson(p, t)


def rmse(pred: Any, target: Any, fit: Optional[str] = None) -> float:
    r"""Root mean squared error :math:`\sqrt{\frac{1}{n}\sum_i (x_i - y_i)^2}`, ``x = pred`` or ``f(pred)``.

    Raw RMSE (``fit=None``) only makes sense when pred and target share a scale (e.g. both in [0, 1]); it is
    defined for any n >= 1 (``nan`` for n = 0). With ``fit="logistic4"`` the predictions are first mapped
    to the target scale; a constant pred or target then gives ``nan`` (no mapping can be fitted), n < 3 gives
    ``nan`` and a failed fit falls back to raw with a :class:`LogisticFitWarning`.
    """
    _check_fit(fit)
    p, t = _pair(pred, target)
    if p.size == 0:
        return float("nan")
    if fit == "logistic4":
        if p.size < _MIN_N or _is_constant(p) or _is_constant(t):
            return float("nan")
        _params, p, reason = _fit_logistic4(p, t)
        if reason:
            warnings.warn(f"4-parameter logistic fit failed ({reason}); RMSE uses raw predictions",
                          LogisticFitWarning, stacklevel=2)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def correlations(pred: Any, target: Any) -> dict:
    """All point metrics at once (the logistic mapping is fitted once and shared).

    Returns:
        dict with ``srcc``, ``krcc``, ``plcc`` (raw), ``plcc_logistic``, ``rmse`` (raw, same scale assumed),
        ``rmse_logistic`` (after the fit) and ``n`` (number of pairs).
    """
    p, t = _pair(pred, target)
    n = int(p.size)
    out = {"srcc": srcc(p, t), "krcc": krcc(p, t), "plcc": plcc(p, t)}
    if n >= _MIN_N and not (_is_constant(p) or _is_constant(t)):
        _params, mapped, reason = _fit_logistic4(p, t)
        if reason:
            warnings.warn(f"4-parameter logistic fit failed ({reason}); plcc_logistic/rmse_logistic use raw "
                          "predictions", LogisticFitWarning, stacklevel=2)
        out["plcc_logistic"] = _pearson(mapped, t)
        out["rmse_logistic"] = float(np.sqrt(np.mean((mapped - t) ** 2)))
    else:
        out["plcc_logistic"] = float("nan")
        out["rmse_logistic"] = float("nan")
    out["rmse"] = rmse(p, t)
    out["n"] = n
    return {k: out[k] for k in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic", "n")}


# --------------------------------------------------------------------------------------------------------------
# uncertainty
# --------------------------------------------------------------------------------------------------------------

_VECTORISED = ("srcc", "plcc", "rmse")
_LOOPED: dict = {
    "krcc": lambda p, t: krcc(p, t),
    "plcc_logistic": lambda p, t: plcc(p, t, fit="logistic4"),
    "rmse_logistic": lambda p, t: rmse(p, t, fit="logistic4"),
}


def bootstrap_ci(
    pred: Any,
    target: Any,
    metric: Union[str, Callable[[np.ndarray, np.ndarray], float]] = "srcc",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    r"""Percentile bootstrap confidence interval of a metric.

    Draws ``n_boot`` resamples of the n (pred, target) pairs with replacement (``numpy.random.default_rng(seed)``,
    so the result is deterministic for a given seed), computes the metric on each, and returns the
    :math:`\alpha/2` and :math:`1 - \alpha/2` percentiles. Resamples where the metric is undefined (``nan``,
    e.g. all drawn predictions equal) are dropped; if all are, ``(nan, nan)``.

    Args:
        metric: ``"srcc"``, ``"plcc"``, ``"rmse"`` (vectorised over resamples), ``"krcc"``, ``"plcc_logistic"``,
            ``"rmse_logistic"`` (looped; logistic-fit fallbacks are summarised in one warning), or a callable
            ``f(pred, target) -> float``.
        n_boot: number of resamples (>= 1).
        alpha: 1 - confidence level, in (0, 1).
        seed: random seed.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` for n < 3.
    """
    p, t = _pair(pred, target)
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
        raise ValueError(f"n_boot={n_boot!r} is not allowed; use an integer >= 1")
    if not (0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha={alpha!r} is not allowed; use a number in (0, 1)")
    if callable(metric):
        func: Optional[Callable] = metric
    elif metric in _VECTORISED:
        func = None
    elif metric in _LOOPED:
        func = _LOOPED[metric]
    else:
        allowed = ", ".join(repr(m) for m in _VECTORISED + tuple(_LOOPED))
        raise ValueError(f"metric={metric!r} is not allowed; use one of {allowed} or a callable")
    n = p.size
    if n < _MIN_N:
        return float("nan"), float("nan")

    rng = np.random.default_rng(seed)
    values = np.empty(n_boot, dtype=np.float64)
    if func is None:
        chunk = max(1, 2_000_000 // n)  # bound memory to a few 2e6-element arrays
        for start in range(0, n_boot, chunk):
            m = min(chunk, n_boot - start)
            idx = rng.integers(0, n, size=(m, n))
            bp, bt = p[idx], t[idx]
            if metric == "srcc":
                values[start:start + m] = _pearson_rows(stats.rankdata(bp, axis=1), stats.rankdata(bt, axis=1))
            elif metric == "plcc":
                values[start:start + m] = _pearson_rows(bp, bt)
            else:  # rmse
                values[start:start + m] = np.sqrt(np.mean((bp - bt) ** 2, axis=1))
    else:
        n_fallback = 0
        for b in range(n_boot):
            idx = rng.integers(0, n, size=n)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", LogisticFitWarning)
                v = func(p[idx], t[idx])
            n_fallback += sum(1 for w in caught if issubclass(w.category, LogisticFitWarning))
            for w in caught:
                if not issubclass(w.category, LogisticFitWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            values[b] = float(v)
        if n_fallback:
            warnings.warn(f"the logistic fit fell back to raw predictions in {n_fallback} of {n_boot} resamples",
                          LogisticFitWarning, stacklevel=2)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def chance_band(n: int, alpha: float = 0.05) -> float:
    r"""Half-width of the (1 - alpha) band of a random predictor's SRCC on n images.

    Under independence SRCC is approximately normal with standard deviation :math:`1/\sqrt{n-1}`, so

    .. math:: h = z_{1-\alpha/2} / \sqrt{n - 1}

    e.g. ``chance_band(90) = 1.96 / sqrt(89) = 0.208``: an SRCC within +-h of 0 is indistinguishable from chance.

    Raises:
        ValueError: n < 2 or alpha outside (0, 1).
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n={n!r} is not allowed; use an integer >= 2")
    if not (0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha={alpha!r} is not allowed; use a number in (0, 1)")
    return float(stats.norm.ppf(1.0 - alpha / 2.0) / math.sqrt(int(n) - 1))


def summarize(values: Any, skipna: bool = True) -> dict:
    """Mean, median, standard deviation and count of per-split results.

    ``std`` uses ddof = 1 when n > 1, else 0. With ``skipna`` (default) NaN entries (e.g. an undefined
    correlation on one split) are left out and ``n`` counts the values used; otherwise any NaN makes mean,
    median and std NaN. An empty input gives NaNs and ``n = 0``.

    Returns:
        ``{"mean": float, "median": float, "std": float, "n": int}``
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().double().numpy()
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if skipna:
        v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": float("nan"), "median": float("nan"), "std": float("nan"), "n": 0}
    return {
        "mean": float(np.mean(v)),
        "median": float(np.median(v)),
        "std": float(np.std(v, ddof=1)) if n > 1 else 0.0,
        "n": n,
    }
