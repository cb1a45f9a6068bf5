"""Baselines for the evaluation protocol (docs/design.md, 'Evaluation protocol') that need no prompt learning.

- ``clip_features`` + ``ridge_probe``: a ridge regression on frozen CLIP image features (the linear probe);
- ``classical_table`` + ``classical_ridge``: a CLIP-free check that the task is learnable at all, a ridge on
  BRISQUE's 36 natural-scene statistics (:mod:`clipiqa.brisque`). If this ridge beats a CLIP method on the same
  split, the CLIP method has not learned what hand-made statistics already capture. The table also holds a
  handful of simpler statistics (``classical_features``: sharpness, noise, contrast, colourfulness, blockiness,
  exposure) for inspection; the ridge leaves them out because on the demo set's blur/noise/JPEG severities they
  ranked clearly worse than BRISQUE and adding them lowered BRISQUE's correlation (README, benchmark section).

All statistics are computed on the 8-bit image as given (no resizing), on a 0-255 scale.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from .brisque import BRISQUE_FEATURES, brisque_features
from .imageio import load_image
from .inference import autocast_for, evaluating

__all__ = [
    "CLASSICAL_FEATURES", "RIDGE_ALPHAS", "classical_features", "classical_table", "classical_ridge",
    "clip_features", "ridge_probe",
]

RIDGE_ALPHAS: np.ndarray = np.logspace(-4, 4, 17)
"""Default ridge penalty grid (chosen by efficient leave-one-out cross-validation)."""

CLASSICAL_FEATURES: tuple[str, ...] = (
    "sharpness", "noise", "contrast", "colourfulness", "blockiness", "brightness", "clipped_dark",
    "clipped_bright",
)
"""Names (and order) of the statistics returned by :func:`classical_features`."""

_LOG_FEATURES = ("sharpness", "noise", "blockiness")  # heavy-tailed: log1p before the ridge
_BLOCK = 8


# ------------------------------------------------------------------------------------------ CLIP features
def clip_features(model, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                  images: Sequence | None = None) -> np.ndarray:
    """Frozen CLIP image features ``[N, D]`` (adapters off, L2-normalised, float32) of image files.

    Runs under bf16 autocast on CUDA (as :func:`clipiqa.scoring.score_files` does), full precision on CPU.
    ``images``: already loaded PIL images in ``paths`` order (skips reading the files).
    A file that cannot be read raises :class:`clipiqa.imageio.ImageLoadError` (the protocol's tables list
    readable images only).
    """
    paths = [os.fspath(p) for p in paths]
    if images is not None and len(images) != len(paths):
        raise ValueError(f"got {len(images)} images for {len(paths)} paths")
    out = []
    with evaluating(model), model.adapters_off():  # adapters off: the backbone's own preprocessing
        preprocess = model.preprocess
        for start in range(0, len(paths), batch_size):
            chunk = images[start:start + batch_size] if images is not None else \
                [load_image(p) for p in paths[start:start + batch_size]]
            batch = torch.stack([preprocess(im) for im in chunk]).to(model.device)
            with autocast_for(model.device):
                features = model.encode_image(batch)
            out.append(F.normalize(features.float(), dim=-1).cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def ridge_probe(train_feats: np.ndarray, train_q: Sequence[float], test_feats: np.ndarray,
                alpha: float | None = None, standardize: bool = False) -> np.ndarray:
    """Fit a ridge regression ``features -> q`` on the training images and predict the test images.

    alpha: a fixed penalty, or None to pick one from :data:`RIDGE_ALPHAS` by efficient leave-one-out
    cross-validation (``sklearn.linear_model.RidgeCV``).
    standardize: z-score each feature with the training mean and std first (for features on unlike scales).
    """
    # scikit-learn is imported here: about a second to import, paid only by the ridge arms
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(train_feats, dtype=np.float64)
    y = np.asarray(train_q, dtype=np.float64).reshape(-1)
    x_test = np.asarray(test_feats, dtype=np.float64)
    if x.ndim != 2 or x_test.ndim != 2 or x.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be 2-D with the same width; got {x.shape} and {x_test.shape}")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} training feature rows but {len(y)} labels")
    if len(x) < 2:
        raise ValueError(f"a ridge probe needs at least 2 training images, got {len(x)}")
    reg = Ridge(alpha=float(alpha)) if alpha is not None else RidgeCV(alphas=RIDGE_ALPHAS)
    steps = [StandardScaler(), reg] if standardize else [reg]
    return make_pipeline(*steps).fit(x, y).predict(x_test)


# ------------------------------------------------------------------------------------------ classical
def _grey(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an RGB (or grey) image as float64 on 0-255."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        return x
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: high for crisp edges, low for blurred images."""
    return float(ndimage.laplace(grey, mode="reflect").var())


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's fast noise estimate: the standard deviation of Gaussian noise, in grey levels.

    Convolves with the difference of two Laplacians (which cancels smooth structure) and scales the mean
    absolute response: ``sigma = sqrt(pi / 2) * mean(|I * M|) / 6``.
    """
    if min(grey.shape) < 3:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = ndimage.convolve(grey, kernel, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * np.abs(response).mean() / 6.0)


def rms_contrast(grey: np.ndarray) -> float:
    """RMS contrast: the standard deviation of the luma scaled to [0, 1]."""
    return float((grey / 255.0).std())


def colourfulness(image: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness ``sigma_rgyb + 0.3 * mu_rgyb`` (0 for a grey image)."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        return 0.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def blockiness(grey: np.ndarray, block: int = _BLOCK) -> float:
    """Mean absolute step across 8x8 block boundaries divided by the mean step inside blocks.

    About 1 for a natural image; block-based compression (JPEG at low quality) raises it. The grid is
    assumed to start at the top-left pixel, as JPEG's does. 1.0 when the image is too small to tell.
    """
    ratios = []
    for diffs in (np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0)).T):
        # diffs[:, j] is the step between columns j and j + 1; boundaries sit at j = 7, 15, ...
        boundary = np.zeros(diffs.shape[1], dtype=bool)
        boundary[block - 1::block] = True
        if boundary.sum() == 0 or (~boundary).sum() == 0:
            continue
        inside = diffs[:, ~boundary].mean()
        ratios.append((diffs[:, boundary].mean() + 1e-3) / (inside + 1e-3))
    return float(np.mean(ratios)) if ratios else 1.0


def classical_features(image: np.ndarray) -> dict[str, float]:
    """A handful of classical quality statistics of one ``uint8`` image (H x W x 3, or H x W grey).

    Returns (see :data:`CLASSICAL_FEATURES`):
    ``sharpness`` (variance of the Laplacian of the luma), ``noise`` (Immerkaer sigma, grey levels),
    ``contrast`` (RMS contrast of the luma, 0-0.5), ``colourfulness`` (Hasler-Suesstrunk),
    ``blockiness`` (8x8 boundary / interior step ratio, ~1 for no blocking), ``brightness`` (mean luma, 0-1),
    ``clipped_dark`` / ``clipped_bright`` (fraction of pixels with luma <= 2 / >= 253: exposure clipping).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3) or min(arr.shape[:2]) < 2:
        raise ValueError(f"expected an H x W x 3 (or H x W) image of at least 2x2 pixels; got shape {arr.shape}")
    grey = _grey(arr)
    return {
        "sharpness": sharpness(grey),
        "noise": noise_sigma(grey),
        "contrast": rms_contrast(grey),
        "colourfulness": colourfulness(arr),
        "blockiness": blockiness(grey),
        "brightness": float(grey.mean() / 255.0),
        "clipped_dark": float((grey <= 2.0).mean()),
        "clipped_bright": float((grey >= 253.0).mean()),
    }


def classical_table(paths: Iterable[str | os.PathLike], images: Sequence | None = None) -> pd.DataFrame:
    """One row per image file, in input order: ``path``, then :func:`classical_features`, then the 36
    :func:`clipiqa.brisque.brisque_features` (columns :data:`CLASSICAL_FEATURES` + ``BRISQUE_FEATURES``).

    ``images``: already loaded PIL images or arrays in ``paths`` order (skips reading the files).
    """
    paths = [os.fspath(p) for p in paths]
    rows = []
    for i, path in enumerate(paths):
        image = np.asarray(images[i] if images is not None else load_image(path), dtype=np.uint8)
        rows.append({"path": path, **classical_features(image),
                     **dict(zip(BRISQUE_FEATURES, brisque_features(image).tolist()))})
    return pd.DataFrame(rows, columns=["path", *CLASSICAL_FEATURES, *BRISQUE_FEATURES])


def classical_design(table: pd.DataFrame) -> np.ndarray:
    """Feature matrix for the ridge: the :data:`clipiqa.brisque.BRISQUE_FEATURES` columns, heavy-tailed statistics
    through ``log1p``. A BRISQUE fit that is undefined (a flat image: no texture to fit) enters as 0, so one flat image
    cannot stop the fit; a table without some column is a ``KeyError`` naming it."""
    missing = [c for c in BRISQUE_FEATURES if c not in table.columns]
    if missing:
        raise KeyError(f"classical table lacks column(s) {missing}; build it with clipiqa.baselines.classical_table")
    cols = [np.log1p(np.maximum(table[c].to_numpy(np.float64), 0.0)) if c in _LOG_FEATURES
            else table[c].to_numpy(np.float64) for c in BRISQUE_FEATURES]
    return np.nan_to_num(np.column_stack(cols), nan=0.0, posinf=0.0, neginf=0.0)


def classical_ridge(train_table: pd.DataFrame, train_q: Sequence[float], test_table: pd.DataFrame,
                    alpha: float | None = None) -> np.ndarray:
    """The CLIP-free "is the task learnable at all" check: standardised BRISQUE statistics -> ridge
    (leave-one-out alpha unless ``alpha`` is given) -> q.

    ``train_table`` / ``test_table`` come from :func:`classical_table`.
    """
    return ridge_probe(classical_design(train_table), train_q, classical_design(test_table), alpha=alpha,
                       standardize=True)
