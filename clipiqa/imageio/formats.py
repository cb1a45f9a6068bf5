"""Which files count as images: the extensions the installed Pillow can decode (asked at call time), and
what a path that is not a regular file is, in words."""

from __future__ import annotations

import stat

from PIL import EpsImagePlugin, Image, ImageFile


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
        return bool(EpsImagePlugin.has_ghostscript())
    return True


IMAGE_EXTENSIONS: tuple[str, ...] = tuple(sorted(readable_extensions()))
"""The :func:`readable_extensions` of this Pillow at import time (folder scans ask again at call time)."""


def file_kind(mode: int) -> str:
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
