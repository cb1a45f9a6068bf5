"""One cache of decoded images by path, shared by the protocol (frozen features and classical statistics reuse
the decoded images of every split) and meta-training (task images are read again at every visit).

Least recently used images are dropped beyond ``max_images`` images or ``max_bytes`` bytes of RGB pixels
(either bound may be ``None``); a dropped image is simply read again on its next use, so a bound changes speed
and memory, never results.
"""
from __future__ import annotations

from typing import Iterable

from PIL import Image

from ..imageio import load_image


def rgb_bytes(image: Image.Image) -> int:
    """Memory of a decoded RGB image in bytes."""
    return image.width * image.height * 3


class ImageCache:
    """Decoded RGB images by path, least recently used dropped beyond the bounds."""

    def __init__(self, max_images: int | None = None, max_bytes: int | None = None):
        for name, value in (("max_images", max_images), ("max_bytes", max_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"ImageCache {name}={value!r}: use a whole number >= 0, or None for no bound")
        self.max_images = max_images
        self.max_bytes = max_bytes
        self._items: dict[str, Image.Image] = {}  # least recently used first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, paths: Iterable[str]) -> list[Image.Image]:
        """The decoded images of ``paths``, in order (read on a miss, kept while the bounds allow)."""
        out = []
        for path in paths:
            key = str(path)
            image = self._items.pop(key, None)
            if image is None:
                image = load_image(path)
            else:
                self._bytes -= rgb_bytes(image)
            self._items[key] = image  # most recent last
            self._bytes += rgb_bytes(image)
            out.append(image)
            self._shrink()
        return out

    def _shrink(self) -> None:
        while self._items and ((self.max_images is not None and len(self._items) > self.max_images)
                               or (self.max_bytes is not None and self._bytes > self.max_bytes)):
            dropped = self._items.pop(next(iter(self._items)))
            self._bytes -= rgb_bytes(dropped)
