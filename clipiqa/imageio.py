"""One image loader for every path in clipiqa (datasets, CLI, widgets).

Images from users are messy. :func:`load_image` gives each kind a defined outcome:
either an 8-bit RGB :class:`PIL.Image.Image`, or an :class:`ImageLoadError` that names
the file, says what is wrong in words a user can act on, and carries a short
machine-friendly ``reason`` code.

Conversions (all to 8-bit RGB):

* EXIF orientation is applied (the pixels are rotated/flipped as a viewer shows them).
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
* Multi-frame files (GIF, TIFF) give their first frame.

Size limits:

* ``max_pixels``: an image whose *header* declares more pixels is refused with reason
  ``"too_large"`` before any pixel is decoded (decompression-bomb protection). Pillow's
  own hard limit (``2 * Image.MAX_IMAGE_PIXELS``) still applies above that; Pillow's
  global settings are never modified.
* ``max_side``: larger images are reduced so that the longest side is ``max_side``.
  JPEGs are decoded at reduced scale (``Image.draft``) first, so memory stays bounded;
  the final reduction uses Lanczos filtering.

Errors are never hidden: truncated files are errors (this module relies on Pillow's
default ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` and never sets it; code that sets it
to ``True`` globally disables that detection for every library in the process).

Reason codes (``ImageLoadError.reason``): see :data:`REASONS`.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "IMAGE_EXTENSIONS",
    "REASONS",
    "ImageLoadError",
    "list_images",
    "load_image",
    "load_rgb_array",
]

PathLike = Union[str, os.PathLike]

DEFAULT_MAX_PIXELS: int = 64_000_000
"""Largest number of pixels (width x height, from the file header) that is decoded."""

DEFAULT_MAX_SIDE: int = 2048
"""Images with a longer side are reduced to this size while loading."""

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
)
"""File extensions (lower case) that :func:`list_images` picks up inside folders."""

REASONS: dict[str, str] = {
    "missing": "the file does not exist",
    "empty": "the file is empty (0 bytes)",
    "not_an_image": "the file is not an image in a format Pillow can read",
    "truncated": "the file is truncated (the image data ends early)",
    "corrupt": "the image data is corrupt",
    "too_large": "the image has too many pixels",
    "unsupported": "the image's pixel format cannot be converted to RGB",
    "unreadable": "the file cannot be read",
}
"""Every ``ImageLoadError.reason`` code with its meaning."""

_ADVICE: dict[str, str] = {
    "missing": "check the path",
    "empty": "re-export or remove it",
    "not_an_image": "remove it or convert it to JPEG or PNG",
    "truncated": "re-export or remove it",
    "corrupt": "re-export or remove it",
    "too_large": "downscale it first or raise max_pixels",
    "unsupported": "convert it to an 8-bit RGB JPEG or PNG",
    "unreadable": "check that it is a readable file",
}


class ImageLoadError(ValueError):
    """An image file could not be turned into an RGB image.

    Attributes:
        path: the file, as given.
        reason: a short code, one of :data:`REASONS` (``"truncated"``, ``"too_large"`` ...).
        message: the full text, naming the file and saying what to do.
    """

    def __init__(self, path: PathLike, reason: str, detail: str | None = None,
                 message: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        if message is None:
            what = detail or REASONS.get(reason, reason)
            advice = _ADVICE.get(reason, "re-export or remove it")
            message = f"cannot read {self.path}: {what}; {advice}"
        self.message = message
        super().__init__(message)

    def __reduce__(self):
        """Keep path/reason when the error crosses process boundaries (pickling)."""
        return (self.__class__, (self.path, self.reason, self.detail, self.message))


# --------------------------------------------------------------------------- loading


def load_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """Load any image file as an 8-bit RGB :class:`PIL.Image.Image`.

    Args:
        path: the image file.
        max_pixels: refuse images whose header declares more pixels (``None``: no own
            limit; Pillow's hard decompression-bomb limit still applies).
        max_side: reduce larger images so the longest side equals this (``None``: keep).

    Returns:
        A fully decoded RGB image, detached from the file, EXIF orientation applied.

    Raises:
        ImageLoadError: with ``reason`` in :data:`REASONS`; the message names the file.
    """
    _check_file(path)
    fmt = "image"
    try:
        with warnings.catch_warnings():
            # We do our own size check below; silence Pillow's bomb *warning* locally.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format or fmt
                _check_size(path, im.size, max_pixels)
                _draft_jpeg(im, max_side)
                im.load()
                out = _to_rgb(path, _apply_orientation(im))
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "not_an_image",
                             "not a recognised image (is it a text or other file with an "
                             "image extension?)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, "too_large",
                             f"the image declares more pixels than Pillow's hard limit "
                             f"({exc}) (a huge photo or a decompression bomb)") from exc
    except MemoryError as exc:
        raise ImageLoadError(path, "too_large", "not enough memory to decode it") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise _decode_error(path, fmt, exc) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
        raise ImageLoadError(path, "corrupt", f"the image data is corrupt ({exc})") from exc
    return _limit_side(out, max_side)


def load_rgb_array(path: PathLike, **kwargs) -> np.ndarray:
    """Load an image (see :func:`load_image`) as a ``uint8`` array of shape H x W x 3."""
    return np.asarray(load_image(path, **kwargs), dtype=np.uint8).copy()


def _check_file(path: PathLike) -> None:
    """Raise for missing, non-regular, unreadable or empty files."""
    p = Path(path)
    try:
        if not p.exists():
            raise ImageLoadError(path, "missing")
        if p.is_dir():
            raise ImageLoadError(path, "unreadable", "it is a folder, not a file")
        if p.stat().st_size == 0:
            raise ImageLoadError(path, "empty")
    except OSError as exc:
        raise ImageLoadError(path, "unreadable", f"the file cannot be read ({exc})") from exc
    if not os.access(p, os.R_OK):
        raise ImageLoadError(path, "unreadable", "no permission to read the file")


def _check_size(path: PathLike, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse an image from its header size, before decoding (decompression bombs)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageLoadError(
            path, "too_large",
            f"the image declares {w}x{h} = {w * h:,} pixels, more than the limit of "
            f"{int(max_pixels):,} (a huge photo or a decompression bomb)")


def _draft_jpeg(im: Image.Image, max_side: int | None) -> None:
    """Ask the JPEG decoder for a power-of-two reduced decode no smaller than needed."""
    if max_side is None or im.format != "JPEG":
        return
    w, h = im.size
    if max(w, h) <= max_side:
        return
    scale = max_side / max(w, h)
    im.draft(None, (max(1, int(np.ceil(w * scale))), max(1, int(np.ceil(h * scale)))))


def _apply_orientation(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - broken EXIF must not make a good photo unreadable
        return im.copy()


def _decode_error(path: PathLike, fmt: str, exc: BaseException) -> ImageLoadError:
    """Classify a Pillow decode failure as truncated / corrupt / unreadable."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "truncated" in low or isinstance(exc, EOFError):
        return ImageLoadError(path, "truncated",
                              f"the file is truncated (the {fmt} data ends early: {text})")
    if isinstance(exc, (PermissionError, IsADirectoryError)):
        return ImageLoadError(path, "unreadable", f"the file cannot be read ({text})")
    return ImageLoadError(path, "corrupt", f"the {fmt} data is corrupt ({text})")


# ------------------------------------------------------------------ mode conversion

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _to_rgb(path: PathLike, im: Image.Image) -> Image.Image:
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


def _limit_side(im: Image.Image, max_side: int | None) -> Image.Image:
    """Reduce the image (Lanczos) so that its longest side is at most ``max_side``."""
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return im


# -------------------------------------------------------------------------- listing


def list_images(paths: PathLike | Iterable[PathLike], recursive: bool = True) -> list[str]:
    """Expand files, folders and glob patterns into a list of image paths.

    * A folder contributes the files inside it (and below it when ``recursive``) whose
      extension is in :data:`IMAGE_EXTENSIONS`, compared case-insensitively, sorted.
    * A file named explicitly is always kept, whatever its extension, and so is a path
      that does not exist: a bad or missing file then gets an error row downstream
      instead of silently disappearing.
    * A path containing ``*``, ``?`` or ``[`` that does not exist is expanded as a glob
      pattern (matches sorted; a pattern matching nothing is kept so it is reported).

    Duplicates are removed, keeping the first occurrence; otherwise the order of
    ``paths`` is kept.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    seen: set[str] = set()
    for entry in paths:
        for p in _expand(os.fspath(entry), recursive):
            key = os.path.normpath(p)
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def _expand(entry: str, recursive: bool) -> list[str]:
    """Expand one user-given path (file, folder, or glob pattern)."""
    if os.path.isdir(entry):
        return _images_in_folder(entry, recursive)
    if not os.path.exists(entry) and any(c in entry for c in "*?["):
        matches = sorted(glob.glob(entry, recursive=recursive))
        if matches:
            return [f for m in matches for f in _expand_match(m, recursive)]
    return [entry]


def _expand_match(path: str, recursive: bool) -> list[str]:
    """A glob match: folders are expanded, files kept only with an image extension."""
    if os.path.isdir(path):
        return _images_in_folder(path, recursive)
    return [path]


def _images_in_folder(folder: str, recursive: bool) -> list[str]:
    """All files with an image extension in ``folder`` (and below when recursive), sorted."""
    found: list[str] = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            found.extend(os.path.join(root, f) for f in files if _has_image_ext(f))
    else:
        with os.scandir(folder) as it:
            found.extend(e.path for e in it if e.is_file() and _has_image_ext(e.name))
    return sorted(found)


def _has_image_ext(name: str) -> bool:
    """True when the file name ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
