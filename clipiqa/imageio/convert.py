"""Any Pillow pixel mode to 8-bit RGB (:func:`to_rgb`).

* ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``HSV`` ... go through Pillow's converters
  (CMYK uses Pillow's plain formula; embedded ICC profiles are not applied).
* Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La`` and ``P``/``L``/``RGB`` with a
  ``transparency`` key) is **composited on white**: a fully transparent pixel becomes
  (255, 255, 255). CLIP sees what a document viewer on a white page would show.
* 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``...) is scaled by 255/65535 (i.e. divided
  by 257), never clipped.
* ``I`` (32-bit integer) is scaled according to the range its values occupy: kept as is
  when all values lie in [0, 255], divided by 257 when they lie in [0, 65535], otherwise
  min-max scaled to [0, 255].
* ``F`` (32-bit float) is multiplied by 255 when all values lie in [0, 1], kept when they
  lie in [0, 255], otherwise min-max scaled. NaN becomes 0.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ImageLoadError, PathLike


_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def to_rgb(path: PathLike, im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _ALPHA_MODES or (mode in {"P", "L", "RGB", "1"} and "transparency" in im.info):
        return _composite_on_white(im.convert("RGBA"))
    if mode.startswith("I;16"):
        return _grey_to_rgb(np.asarray(im).astype(np.float32) / 257.0)
    if mode == "I":
        return _grey_to_rgb(_scale_int(np.asarray(im)))
    if mode == "F":
        return _grey_to_rgb(_scale_float(np.asarray(im)))
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageLoadError(path, "unsupported",
                             f"pixel mode {mode!r} cannot be converted to RGB") from exc


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    """Composite an RGBA image over an opaque white background."""
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _scale_int(a: np.ndarray) -> np.ndarray:
    """Map 32-bit integer grey values to [0, 255] judged from the range they occupy."""
    a = a.astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo >= 0 and hi <= 255:
        return a
    if lo >= 0 and hi <= 65535:
        return a / 257.0
    return _minmax(a, lo, hi)


def _scale_float(a: np.ndarray) -> np.ndarray:
    """Map float grey values to [0, 255]: [0,1] data x255, [0,255] kept, else min-max."""
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1:
        return a * 255.0
    if lo >= 0 and hi <= 255:
        return a
    return _minmax(a, lo, hi)


def _minmax(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linearly map [lo, hi] to [0, 255] (a constant image maps to 0)."""
    if hi <= lo:
        return np.zeros_like(a)
    return (a - lo) * (255.0 / (hi - lo))


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    """Round a float grey array in [0, 255] to uint8 and replicate it to RGB."""
    g = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(g[:, :, None], 3, axis=2))
