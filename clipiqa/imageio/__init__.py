"""One image loader for every path in clipiqa (datasets, CLI, widgets).

Images from users are messy. :func:`load_image` gives each kind a defined outcome:
either an 8-bit RGB :class:`PIL.Image.Image`, or an :class:`ImageLoadError` that names
the file, says what is wrong in words a user can act on, and carries a short
machine-friendly ``reason`` code (see :data:`REASONS`).

Layout: ``errors`` (:class:`ImageLoadError` and its reason codes), ``formats`` (which files are images, what a
non-regular file is), ``decode`` (:func:`load_image`: opening, pixel limits, EXIF orientation, size
reduction), ``convert`` (any pixel mode to 8-bit RGB), ``scan`` (files, folders and globs into image paths,
with what was left out and why). The package imports nothing outside Pillow and NumPy (a test loads it alone).
"""

from __future__ import annotations

from .decode import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, hard_pixel_limit, load_image, load_rgb_array
from .errors import REASONS, ImageLoadError, PathLike
from .formats import IMAGE_EXTENSIONS, readable_extensions
from .scan import SKIP_REASONS, ScanResult, Skipped, SkippedFilesWarning, list_images, scan_images

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "IMAGE_EXTENSIONS",
    "REASONS",
    "SKIP_REASONS",
    "ImageLoadError",
    "PathLike",
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
