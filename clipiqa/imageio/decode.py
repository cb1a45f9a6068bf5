"""Decoding one image file with defined outcomes: :func:`load_image` gives an 8-bit RGB image (EXIF
orientation applied, first frame of multi-frame files, pixel modes converted by :mod:`.convert`) or an
:class:`ImageLoadError`.

Size limits (decompression bombs and huge photos):

* ``max_pixels`` bounds the pixels the decoder must hold in memory, judged from the file
  header before any pixel is decoded; a larger image is refused with reason ``"too_large"``.
  For a baseline JPEG that :func:`load_image` decodes at reduced scale (``Image.draft``,
  used when ``max_side`` asks for a smaller image) that is the reduced size, so a 108-MP
  phone photo decodes at 1/4 scale and is accepted with the defaults; for a progressive
  JPEG it is the full declared size (libjpeg keeps every DCT coefficient of a progressive
  file, whatever the output scale); for every other format it is the declared size.
* Above that, the **hard limit** is Pillow's own decompression-bomb limit,
  ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 MP), read at call time. A ``max_pixels``
  above it (or ``None``) acts as the hard limit, so no value makes decoding unsafe: a
  900-MP PNG bomb is refused undecoded whatever ``max_pixels`` says. A JPEG whose header
  declares more than the hard limit (a 200-MP phone photo) is still read when its
  reduced-scale decode fits, by opening it with Pillow's JPEG plugin directly (Pillow's
  open-time check counts the declared size). Pillow's global settings are never modified.
* ``max_side``: larger images are reduced so that the longest side is ``max_side``; the
  final reduction uses Lanczos filtering.

Files that are not regular files (folders, named pipes, sockets, devices) are refused
with reason ``"not_a_file"``, naming what they are; a named pipe is never opened for
blocking reads, so it cannot hang a scan or a loader.

Errors are never hidden: truncated files are errors (this module relies on Pillow's
default ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` and never sets it; code that sets it
to ``True`` globally disables that detection for every library in the process).
"""

from __future__ import annotations

import os
import stat
import warnings
from typing import IO

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from .convert import to_rgb
from .errors import ImageLoadError, PathLike
from .formats import file_kind


DEFAULT_MAX_PIXELS: int = 64_000_000
"""Largest number of pixels the decoder may hold in memory (see the module docstring)."""

DEFAULT_MAX_SIDE: int = 2048
"""Images with a longer side are reduced to this size while loading."""


def load_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """Load any image file as an 8-bit RGB :class:`PIL.Image.Image`.

    Args:
        path: the image file.
        max_pixels: refuse images for which the decoder would hold more pixels in memory (the
            reduced size for a baseline JPEG decoded in draft mode, else the declared size);
            ``None``, or a value above Pillow's hard limit, means Pillow's hard limit
            (see :func:`hard_pixel_limit` and the module docstring).
        max_side: reduce larger images so the longest side equals this (``None``: keep).

    Returns:
        A fully decoded RGB image, detached from the file, EXIF orientation applied.

    Raises:
        ImageLoadError: with ``reason`` in :data:`REASONS`; the message names the file.
    """
    fmt = "image"
    with _open_regular_file(path) as fp:
        try:
            with warnings.catch_warnings():
                # We do our own size check below; silence Pillow's bomb *warning* locally.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with _open_image(path, fp) as im:
                    fmt = im.format or fmt
                    declared = im.size
                    _draft_jpeg(im, max_side)
                    _check_size(path, im, declared, max_pixels)
                    im.load()
                    out = to_rgb(path, _apply_orientation(im))
        except ImageLoadError:
            raise
        except UnidentifiedImageError as exc:
            raise ImageLoadError(path, "not_an_image",
                                 "not a recognised image (is it a text or other file with an "
                                 "image extension?)") from exc
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(path, "too_large",
                                 f"the image has more pixels than Pillow's safety limit ({exc}) (a "
                                 f"huge photo or a decompression bomb); max_pixels cannot raise that "
                                 f"limit") from exc
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


def hard_pixel_limit() -> int | None:
    """Pillow's decompression-bomb error limit, ``2 * Image.MAX_IMAGE_PIXELS`` (None: switched off by the
    program), read at call time."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def _not_a_file(path: PathLike, mode: int) -> ImageLoadError:
    kind = file_kind(mode)
    detail = f"it is {kind}, not an image file" if kind.startswith("a ") else f"it is {kind}"
    return ImageLoadError(path, "not_a_file", detail)


def _open_regular_file(path: PathLike) -> IO[bytes]:
    """Open ``path`` for reading if it is a non-empty regular file; raise a named error otherwise.

    The path is checked with ``stat`` before it is opened (a device or pipe is never opened) and
    opened with ``O_NONBLOCK`` then checked again with ``fstat``, so a file swapped for a named
    pipe in between cannot block either.
    """
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        if os.path.lexists(name):
            raise ImageLoadError(path, "missing", "it is a symbolic link whose target does not exist") from None
        raise ImageLoadError(path, "missing") from None
    except OSError as exc:
        raise ImageLoadError(path, "unreadable", f"the file cannot be read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_file(path, st.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except PermissionError as exc:
        raise ImageLoadError(path, "unreadable", "no permission to read the file") from exc
    except OSError as exc:
        raise ImageLoadError(path, "unreadable", f"the file cannot be read ({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_a_file(path, st.st_mode)
        if st.st_size == 0:
            raise ImageLoadError(path, "empty")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_image(path: PathLike, fp: IO[bytes]) -> Image.Image:
    """``Image.open``; a JPEG that Pillow refuses at open time for its declared size is opened with the
    JPEG plugin directly, so that its reduced-scale decode can be judged by :func:`_check_size`."""
    try:
        return Image.open(fp)
    except Image.DecompressionBombError:
        fp.seek(0)
        if fp.read(3) != b"\xff\xd8\xff":
            raise
        fp.seek(0)
        return JpegImagePlugin.jpeg_factory(fp)


def _held_pixels(im: Image.Image, declared: tuple[int, int]) -> tuple[int, str]:
    """Pixels the decoder holds in memory for ``im`` (after any draft), and why, in words."""
    w, h = declared
    if _is_jpeg(im):
        if im.info.get("progressive") or im.info.get("progression"):
            return w * h, "a progressive JPEG keeps every DCT coefficient while decoding"
        dw, dh = im.size
        if (dw, dh) != (w, h):
            return dw * dh, f"decoded at reduced scale as {dw}x{dh}"
    return w * h, ""


def _check_size(path: PathLike, im: Image.Image, declared: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse an image from its header size, before decoding (decompression bombs, see the module docstring)."""
    w, h = declared
    held, why = _held_pixels(im, declared)
    hard = hard_pixel_limit()
    what = f"the image declares {w}x{h} = {w * h:,} pixels"
    if held != w * h or why:
        what += f"; decoding it holds {held:,} pixels in memory ({why})"
    if max_pixels is not None and held > max_pixels and (hard is None or max_pixels <= hard):
        raise ImageLoadError(
            path, "too_large",
            f"{what}, more than the limit of {int(max_pixels):,} (a huge photo or a decompression bomb)")
    if hard is not None and held > hard:
        raise ImageLoadError(
            path, "too_large",
            f"{what}, more than Pillow's safety limit of {hard:,} (a huge photo or a decompression bomb), "
            "which max_pixels cannot raise",
            message=f"cannot read {path}: {what}, more than Pillow's safety limit of {hard:,} (a huge photo "
                    "or a decompression bomb), which max_pixels cannot raise; downscale it first"
                    + ("" if not _is_jpeg(im) else " or let it load at reduced size (max_side)"))


def _is_jpeg(im: Image.Image) -> bool:
    return isinstance(im, JpegImagePlugin.JpegImageFile)


def _draft_jpeg(im: Image.Image, max_side: int | None) -> None:
    """Ask the JPEG decoder for a power-of-two reduced decode no smaller than needed (MPO included)."""
    if max_side is None or not _is_jpeg(im):
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


def _limit_side(im: Image.Image, max_side: int | None) -> Image.Image:
    """Reduce the image (Lanczos) so that its longest side is at most ``max_side``."""
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return im
