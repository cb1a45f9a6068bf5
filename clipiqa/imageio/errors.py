"""The one error of image loading: :class:`ImageLoadError` names the file, says what is wrong in words a
user can act on, and carries a short ``reason`` code (every code in :data:`REASONS`)."""

from __future__ import annotations

import os
from typing import Union


PathLike = Union[str, os.PathLike]


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
