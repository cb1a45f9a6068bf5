""":func:`apply_distortion`: validate the arguments, run one type at one level on a uint8 image, keep the
pixels outside the mask unchanged."""

from __future__ import annotations

import numpy as np

from .pixels import to_uint8
from .spec import Distortion, RngLike
from .table import DISTORTIONS


def apply_distortion(image: np.ndarray, name: str, level: int, rng: RngLike = None,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """Distort an image.

    Args:
        image: ``uint8`` array H x W x 3.
        name: a key of :data:`DISTORTIONS`.
        level: severity 1 (mild) .. 5 (strong).
        rng: a ``numpy.random.Generator`` (used and advanced), a seed, or ``None``
            (fresh entropy). Types without randomness ignore it.
        mask: optional bool H x W; where False the output equals ``image`` exactly.

    Returns:
        The distorted image, ``uint8`` H x W x 3.

    Raises:
        ValueError: unknown name, level outside 1..5, or wrong image/mask shape or dtype.
    """
    dist = _lookup(name)
    level = _check_level(level)
    _check_image(image)
    mask = _check_mask(mask, image.shape[:2])
    gen = np.random.default_rng(rng)
    x = image.astype(np.float32) / np.float32(255.0)
    out = to_uint8(np.asarray(dist.fn(x, dist.levels[level - 1], gen), dtype=np.float32))
    if mask is not None:
        out = np.where(mask[..., None], out, image)
    return out


def _lookup(name: str) -> Distortion:
    """The registry entry for ``name``, or a ValueError listing the valid names."""
    try:
        return DISTORTIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown distortion {name!r}; valid names: "
                         f"{', '.join(sorted(DISTORTIONS))}") from None


def _check_level(level: int) -> int:
    """Validate a severity level (an integer 1..5)."""
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)) \
            or not 1 <= int(level) <= 5:
        raise ValueError(f"level must be an integer from 1 to 5, got {level!r}")
    return int(level)


def _check_image(image: np.ndarray) -> None:
    """Validate a uint8 H x W x 3 image."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be a uint8 array of shape H x W x 3, "
                         f"got shape {shape} dtype {dtype}")


def _check_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """Validate a mask of shape H x W and return it as bool."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask must have shape {tuple(shape)} (H x W), got {mask.shape}")
    return mask.astype(bool, copy=False)
