"""What every set of images clipiqa makes itself shares (the embedded demo set, the synthetic meta tasks, the
lesson toy's weights): where its cache lives, which distortion types a caller may ask for, square reference
images, and PNG files written so that a crash never leaves half a file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from .distortions import DISTORTIONS

__all__ = ["cache_root", "resolve_types", "square", "write_png"]


def cache_root() -> Path:
    """``$CLIPIQA_CACHE``, else ``~/.cache/clipiqa``: the folder under which generated sets and weights go."""
    return Path(os.environ.get("CLIPIQA_CACHE") or Path.home() / ".cache" / "clipiqa")


def resolve_types(types: str | Iterable[str] | None, default: Iterable[str]) -> list[str]:
    """Distortion type names, checked and deduplicated in order: None gives ``default``, ``"all"`` every type
    (:data:`clipiqa.data.distortions.DISTORTIONS`), one name a list of it. An unknown name, or none at all, is
    refused with the valid names."""
    if types is None:
        return list(default)
    if isinstance(types, str):
        return list(DISTORTIONS) if types == "all" else resolve_types([types], default)
    names = list(dict.fromkeys(types))
    unknown = [t for t in names if t not in DISTORTIONS]
    if unknown or not names:
        raise ValueError(f"unknown distortion types {unknown}; valid: {', '.join(sorted(DISTORTIONS))} (or 'all')")
    return names


def square(img: np.ndarray, size: int) -> np.ndarray:
    """The centre square of an image (its first three channels, as uint8) resized to ``size`` x ``size``
    (Lanczos); a fresh, writable array."""
    img = np.ascontiguousarray(np.asarray(img)[..., :3]).astype(np.uint8, copy=False)
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(img[top:top + s, left:left + s])
    if s != size:
        im = im.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.array(im, dtype=np.uint8)


def write_png(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write ``img`` as a PNG at ``path`` through a temporary file and a rename, so that the file is either
    complete or absent; returns the path. (No fsync: a lost file of a generated set is simply made again.)"""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(img).save(f, "PNG", compress_level=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
