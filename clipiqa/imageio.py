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

Reason codes (``ImageLoadError.reason``): see :data:`REASONS`.
"""

from __future__ import annotations

import glob
import os
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "IMAGE_EXTENSIONS",
    "REASONS",
    "ImageLoadError",
    "ScanResult",
    "Skipped",
    "SkippedFilesWarning",
    "hard_pixel_limit",
    "list_images",
    "load_image",
    "load_rgb_array",
    "readable_extensions",
    "scan_images",
]

PathLike = Union[str, os.PathLike]

DEFAULT_MAX_PIXELS: int = 64_000_000
"""Largest number of pixels the decoder may hold in memory (see the module docstring)."""

DEFAULT_MAX_SIDE: int = 2048
"""Images with a longer side are reduced to this size while loading."""

_NOT_PHOTOS = frozenset({"MPEG"})
"""Formats Pillow identifies but cannot decode to pixels (video)."""


def readable_extensions() -> frozenset[str]:
    """File extensions (lower case, with the dot) of every format the installed Pillow can decode.

    Asked of Pillow at call time (``Image.registered_extensions()`` restricted to formats with an
    open plugin), so AVIF, JPEG 2000, QOI ... count when this Pillow has them, and so does a
    plugin registered later (``pillow_heif.register_heif_opener()`` adds ``.heic``). Left out:
    write-only formats (PDF), stub formats that need an external handler (HDF5, GRIB, BUFR,
    WMF), EPS without Ghostscript, and video (MPEG).
    """
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and _decodable(fmt))


def _decodable(fmt: str) -> bool:
    if fmt in _NOT_PHOTOS:
        return False
    factory = Image.OPEN[fmt][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        return False
    if fmt == "EPS":
        from PIL import EpsImagePlugin
        return bool(EpsImagePlugin.has_ghostscript())
    return True


IMAGE_EXTENSIONS: tuple[str, ...] = tuple(sorted(readable_extensions()))
"""The :func:`readable_extensions` of this Pillow at import time (folder scans ask again at call time)."""

REASONS: dict[str, str] = {
    "missing": "the file does not exist",
    "empty": "the file is empty (0 bytes)",
    "not_an_image": "the file is not an image in a format Pillow can read",
    "truncated": "the file is truncated (the image data ends early)",
    "corrupt": "the image data is corrupt",
    "too_large": "the image has too many pixels",
    "unsupported": "the image's pixel format cannot be converted to RGB",
    "unreadable": "the file cannot be read",
    "not_a_file": "the path is not a regular file (a folder, a named pipe, a socket or a device)",
}
"""Every ``ImageLoadError.reason`` code with its meaning."""

_ADVICE: dict[str, str] = {
    "missing": "check the path",
    "empty": "re-export or remove it",
    "not_an_image": "remove it or convert it to JPEG or PNG",
    "truncated": "re-export or remove it",
    "corrupt": "re-export or remove it",
    "too_large": "downscale it first or raise max_pixels (clipiqa score --max-pixels N)",
    "unsupported": "convert it to an 8-bit RGB JPEG or PNG",
    "unreadable": "check that it is a readable file",
    "not_a_file": "give the path of an image file",
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
                    out = _to_rgb(path, _apply_orientation(im))
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


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe, FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def _not_a_file(path: PathLike, mode: int) -> ImageLoadError:
    kind = _file_kind(mode)
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
        from PIL import JpegImagePlugin
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
    from PIL import JpegImagePlugin
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


@dataclass(frozen=True)
class Skipped:
    """A path a folder scan left out, and why.

    ``reason`` is one of :data:`SKIP_REASONS`; ``detail`` says it in words (the extension, what kind of
    file it is, the folder a symlink loops back to, the operating system's error).
    """

    path: str
    reason: str
    detail: str = ""


SKIP_REASONS: dict[str, str] = {
    "unsupported_format": "not a format the installed Pillow can read",
    "not_a_file": "not a regular file",
    "broken_symlink": "a symbolic link whose target does not exist",
    "symlink_loop": "a symbolic link to a folder that contains it (a loop)",
    "already_scanned": "a folder already scanned under another path (through a symbolic link)",
    "unreadable_folder": "a folder that cannot be read",
    "unreadable": "an entry that cannot be examined",
}
"""Every :class:`Skipped` reason with its meaning."""


class SkippedFilesWarning(UserWarning):
    """A folder scan left files or folders out; the message lists them and why."""


@dataclass
class ScanResult:
    """What :func:`scan_images` found: the image paths, and everything it left out with the reason."""

    images: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def describe(self, limit: int = 5) -> list[str]:
        """One line per skip reason (with its count and the first ``limit`` paths), for people."""
        groups: dict[str, list[Skipped]] = {}
        for item in self.skipped:
            groups.setdefault(item.reason, []).append(item)
        lines = []
        for reason, items in groups.items():
            shown = "; ".join(f"{i.path} ({i.detail})" if i.detail else i.path for i in items[:limit])
            more = f"; and {len(items) - limit} more" if len(items) > limit else ""
            lines.append(f"{len(items)} {SKIP_REASONS.get(reason, reason)}: {shown}{more}")
        return lines


def scan_images(paths: PathLike | Iterable[PathLike], recursive: bool = True) -> ScanResult:
    """Expand files, folders and glob patterns into image paths, and say what was left out.

    * A folder contributes the regular files inside it (and below it when ``recursive``) whose
      extension is one of :func:`readable_extensions`, compared case-insensitively, sorted.
      Everything else inside it is reported in ``skipped``: other extensions
      (``unsupported_format``), named pipes, sockets and devices (``not_a_file``), symbolic links
      that loop back to a folder being scanned (``symlink_loop``) or reach a folder scanned
      already (``already_scanned``), and folders that cannot be read (``unreadable_folder``).
      Symbolic links to folders are followed; a broken symbolic link with an image extension is
      kept (it gets an error row downstream). Nothing is opened, so a named pipe cannot block.
    * A file named explicitly is always kept, whatever its extension, and so is a path that does
      not exist: a bad or missing file then gets an error row downstream instead of silently
      disappearing.
    * A path containing ``*``, ``?`` or ``[`` that does not exist is expanded as a glob pattern
      (matches sorted; a pattern matching nothing is kept so it is reported).

    Duplicates are removed, keeping the first occurrence; otherwise the order of ``paths`` is kept.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = ScanResult()
    seen: set[str] = set()
    extensions = readable_extensions()
    for entry in paths:
        for p in _expand(os.fspath(entry), recursive, extensions, result.skipped):
            key = os.path.normpath(p)
            if key not in seen:
                seen.add(key)
                result.images.append(p)
    return result


def list_images(paths: PathLike | Iterable[PathLike], recursive: bool = True) -> list[str]:
    """The image paths of :func:`scan_images`; when the scan left anything out, a
    :class:`SkippedFilesWarning` lists what and why (use :func:`scan_images` to get the list itself)."""
    result = scan_images(paths, recursive)
    if result.skipped:
        lines = "\n  ".join(result.describe())
        warnings.warn(SkippedFilesWarning(f"skipped {len(result.skipped)} path(s) while listing images:\n  {lines}"),
                      stacklevel=2)
    return result.images


def _expand(entry: str, recursive: bool, extensions: frozenset[str], skipped: list[Skipped]) -> list[str]:
    """Expand one user-given path (file, folder, or glob pattern)."""
    if os.path.isdir(entry):
        return _images_in_folder(entry, recursive, extensions, skipped)
    if not os.path.lexists(entry) and any(c in entry for c in "*?["):
        matches = sorted(glob.glob(entry, recursive=recursive))
        if matches:
            return [f for m in matches
                    for f in (_images_in_folder(m, recursive, extensions, skipped) if os.path.isdir(m) else [m])]
    return [entry]


def _images_in_folder(folder: str, recursive: bool, extensions: frozenset[str],
                      skipped: list[Skipped]) -> list[str]:
    """Image files in ``folder`` (and below when recursive), sorted; what is left out goes to ``skipped``."""
    found: list[str] = []
    try:
        st = os.stat(folder)
    except OSError as exc:
        skipped.append(Skipped(folder, "unreadable_folder", exc.strerror or str(exc)))
        return found
    visited = {(st.st_dev, st.st_ino): folder}
    stack = [(folder, ((st.st_dev, st.st_ino),))]
    while stack:
        current, ancestors = stack.pop()
        subfolders = _scan_one_folder(current, extensions, found, skipped)
        if not recursive:
            continue
        # real folders claim their place before symbolic links to them (so a link is what gets skipped)
        for sub in sorted(subfolders, key=os.path.islink):
            try:
                sst = os.stat(sub)
            except OSError as exc:
                skipped.append(Skipped(sub, "unreadable_folder", exc.strerror or str(exc)))
                continue
            key = (sst.st_dev, sst.st_ino)
            if key in ancestors:
                skipped.append(Skipped(sub, "symlink_loop", f"it leads back to {visited[key]}"))
            elif key in visited:
                skipped.append(Skipped(sub, "already_scanned", f"the same folder as {visited[key]}"))
            else:
                visited[key] = sub
                stack.append((sub, ancestors + (key,)))
    return sorted(found)


def _scan_one_folder(folder: str, extensions: frozenset[str], found: list[str],
                     skipped: list[Skipped]) -> list[str]:
    """Sort one folder's entries into ``found`` / ``skipped``; return its subfolders (sorted)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(Skipped(folder, "unreadable_folder", exc.strerror or str(exc)))
        return []
    subfolders = []
    for e in entries:
        ext = os.path.splitext(e.name)[1].lower()
        try:
            if e.is_dir():
                subfolders.append(e.path)
            elif e.is_file():
                if ext in extensions:
                    found.append(e.path)
                else:
                    skipped.append(Skipped(e.path, "unsupported_format",
                                           f"extension {ext}" if ext else "no extension"))
            elif e.is_symlink() and not os.path.exists(e.path):
                if ext in extensions:
                    found.append(e.path)  # kept: it gets a "missing" error row, never silently dropped
                else:
                    skipped.append(Skipped(e.path, "broken_symlink", "its target does not exist"))
            else:
                skipped.append(Skipped(e.path, "not_a_file", _file_kind(e.stat().st_mode)))
        except OSError as exc:
            skipped.append(Skipped(e.path, "unreadable", exc.strerror or str(exc)))
    return subfolders
