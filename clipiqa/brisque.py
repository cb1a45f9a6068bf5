"""BRISQUE natural-scene statistics (Mittal, Moorthy and Bovik, "No-reference image quality assessment in the
spatial domain", IEEE TIP 2012), written from the paper with numpy/scipy.

Why: a pristine photograph, once each pixel is normalised by its local mean and contrast (the MSCN coefficients),
has a near-Gaussian, unit-variance histogram, and the products of neighbouring coefficients follow a narrow,
symmetric law. Blur makes both peakier, noise flattens them, compression and exposure change their spread and
symmetry. Fitting a generalized Gaussian (GGD) to the coefficients and an asymmetric one (AGGD) to the four
neighbour products, at the full and the half scale, turns an image into 36 numbers that a ridge regression can map
to quality: the CLIP-free baseline that a learned CLIP method has to beat.

Layout of the 36 features (:data:`BRISQUE_FEATURES`), per scale ``s1`` (as given) and ``s2`` (half size):
``mscn_shape``, ``mscn_var`` (GGD of the coefficients), then for each neighbour product ``h`` (horizontal),
``v`` (vertical), ``d1`` (main diagonal), ``d2`` (anti-diagonal): ``shape``, ``mean``, ``lvar``, ``rvar`` (AGGD).

Choices the paper leaves open, stated here: the luma is Rec. 601 on 0-255; the local mean and deviation use a
7x7 Gaussian window with sigma 7/6 (edges mirrored) and the stabilising constant C = 1; the half scale is the
mean of each 2x2 block (a low-pass and a factor-2 decimation); shapes are found by solving the moment ratio
equation with a bracketing root finder, clipped to [0.05, 20] when the sample lies outside that range.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize
from scipy.special import gammaln

__all__ = ["BRISQUE_FEATURES", "brisque_features", "mscn", "fit_ggd", "fit_aggd", "ggd_ratio"]

_SHAPE_RANGE = (0.05, 20.0)
_PAIRS = ("h", "v", "d1", "d2")
BRISQUE_FEATURES: tuple[str, ...] = tuple(
    f"s{scale}_{name}" for scale in (1, 2)
    for name in ("mscn_shape", "mscn_var", *(f"{p}_{k}" for p in _PAIRS for k in ("shape", "mean", "lvar", "rvar"))))
"""Names (and order) of the 36 values returned by :func:`brisque_features`."""


def ggd_ratio(shape: float | np.ndarray) -> float | np.ndarray:
    """``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))``: ``E|x|^2 / E[x^2]`` of a generalized Gaussian with shape ``a``.

    It rises monotonically from 0 (a -> 0) through 2/pi (a = 2, the Gaussian) towards 3/4 (a -> inf), so a sample's
    moment ratio identifies the shape."""
    a = np.asarray(shape, dtype=np.float64)
    return np.exp(2 * gammaln(2 / a) - gammaln(1 / a) - gammaln(3 / a))


def _solve_shape(ratio: float) -> float:
    """The shape whose :func:`ggd_ratio` equals ``ratio`` (clipped to the bracket when outside its range)."""
    lo, hi = _SHAPE_RANGE
    if not np.isfinite(ratio):
        return float("nan")
    f = lambda a: float(ggd_ratio(a)) - ratio  # noqa: E731 - a one-line root-finding target
    if f(lo) >= 0:
        return lo
    if f(hi) <= 0:
        return hi
    return float(optimize.brentq(f, lo, hi, xtol=1e-8))


def fit_ggd(x: np.ndarray) -> tuple[float, float]:
    """Moment-matching fit of a zero-mean generalized Gaussian: ``(shape, variance)``.

    The shape solves ``ggd_ratio(shape) = mean(|x|)^2 / mean(x^2)``; the variance is ``mean(x^2)``. An all-zero
    sample (a flat image) gives ``(nan, 0)``."""
    x = np.asarray(x, dtype=np.float64).ravel()
    var = float(np.mean(x * x)) if x.size else float("nan")
    if not var > 0:
        return float("nan"), var
    return _solve_shape(float(np.mean(np.abs(x))) ** 2 / var), var


def fit_aggd(x: np.ndarray) -> tuple[float, float, float, float]:
    """Moment-matching fit of an asymmetric generalized Gaussian: ``(shape, mean, left_var, right_var)``.

    ``left_var`` / ``right_var`` are the mean squares of the negative / positive values; with
    ``g = sqrt(left_var / right_var)`` the shape solves
    ``ggd_ratio(shape) = r (g^3 + 1)(g + 1) / (g^2 + 1)^2`` with ``r = mean(|x|)^2 / mean(x^2)``, and the mean is
    ``(beta_r - beta_l) Gamma(2/a) / Gamma(1/a)`` with ``beta = sqrt(var Gamma(1/a) / Gamma(3/a))`` per side.
    A side with no values gets variance 0 (and the shape and mean are then NaN)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    left, right = x[x < 0], x[x > 0]
    lvar = float(np.mean(left * left)) if left.size else 0.0
    rvar = float(np.mean(right * right)) if right.size else 0.0
    if not (lvar > 0 and rvar > 0):
        return float("nan"), float("nan"), lvar, rvar
    g = np.sqrt(lvar / rvar)
    r = float(np.mean(np.abs(x))) ** 2 / float(np.mean(x * x))
    shape = _solve_shape(r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2)
    scale = np.exp(0.5 * (gammaln(1 / shape) - gammaln(3 / shape)))
    mean = (np.sqrt(rvar) - np.sqrt(lvar)) * scale * np.exp(gammaln(2 / shape) - gammaln(1 / shape))
    return shape, float(mean), lvar, rvar


def _gaussian_taps(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """One axis of the normalised 7x7 Gaussian window: the window is the outer product of these taps, so two 1-D
    passes give the same local means as the 2-D window at 2 x 7 instead of 49 multiplications per pixel."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def _local_mean(x: np.ndarray) -> np.ndarray:
    taps = _gaussian_taps()
    return ndimage.correlate1d(ndimage.correlate1d(x, taps, axis=0, mode="reflect"), taps, axis=1, mode="reflect")


def mscn(grey: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients ``(I - mu) / (sigma + c)`` of a grey image (0-255), with
    ``mu`` and ``sigma`` the Gaussian-weighted local mean and deviation (7x7, sigma 7/6, mirrored edges)."""
    grey = np.asarray(grey, dtype=np.float64)
    mu = _local_mean(grey)
    var = _local_mean(grey * grey) - mu * mu
    return (grey - mu) / (np.sqrt(np.maximum(var, 0.0)) + c)


def _neighbour_products(m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Products of each coefficient with its right, lower, lower-right and lower-left neighbour."""
    return (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[:-1, 1:] * m[1:, :-1])


def _scale_features(grey: np.ndarray) -> list[float]:
    m = mscn(grey)
    out = list(fit_ggd(m))
    for product in _neighbour_products(m):
        out.extend(fit_aggd(product))
    return out


def _half(grey: np.ndarray) -> np.ndarray:
    """The 2x2-block mean (an odd last row or column is dropped)."""
    h, w = grey.shape[0] // 2 * 2, grey.shape[1] // 2 * 2
    g = grey[:h, :w]
    return 0.25 * (g[0::2, 0::2] + g[1::2, 0::2] + g[0::2, 1::2] + g[1::2, 1::2])


def _luma(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[2] == 4:
        x = x[..., :3]
    if x.ndim == 3 and x.shape[2] == 3:
        return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    if x.ndim == 2:
        return x
    raise ValueError(f"expected an H x W x 3 (or H x W) image; got shape {x.shape}")


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of one image (uint8 or float on 0-255; RGB, RGBA or grey), in the order of
    :data:`BRISQUE_FEATURES`. Needs at least 8x8 pixels (the half scale must hold a few neighbour pairs).
    A flat image (no texture at some scale) yields NaN shapes there: the caller decides how to impute."""
    grey = _luma(image)
    if min(grey.shape) < 8:
        raise ValueError(f"BRISQUE needs an image of at least 8x8 pixels; got {grey.shape[1]}x{grey.shape[0]}")
    return np.asarray(_scale_features(grey) + _scale_features(_half(grey)), dtype=np.float64)
