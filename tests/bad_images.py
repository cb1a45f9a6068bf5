"""Write one file of each messy-image kind into a folder (a test helper).

``write_bad_images(folder)`` returns ``{name: (path, expected)}`` with ``expected`` either
``"ok"`` (clipiqa.imageio.load_image returns an RGB image) or ``"error"`` (it raises
ImageLoadError). :data:`EXPECTED_REASONS` gives the reason code for every error kind and
:data:`EXPECTED_SIZES` the (width, height) of every ok kind as loaded with default settings.

The EXIF-rotated JPEG stores a 64 x 32 (w x h) image, blue with a red block in its
stored top-left corner and EXIF orientation 6 ("rotate 90 degrees clockwise to view"):
loaded correctly it is 32 x 64 with the red block in the top-right corner.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["EXPECTED_REASONS", "EXPECTED_SIZES", "EXIF_STORED_SIZE", "write_bad_images"]

EXIF_STORED_SIZE = (64, 32)
"""(width, height) of the EXIF-rotated JPEG as stored in the file."""

BOMB_SIZE = (10_000, 10_000)
"""Declared size of ``bomb_png``: above clipiqa's 64 MP limit, below Pillow's own limit."""

HUGE_BOMB_SIZE = (30_000, 30_000)
"""Declared size of ``huge_bomb_png``: above Pillow's hard limit as well."""

EXPECTED_REASONS: dict[str, str] = {
    "truncated_jpeg": "truncated",
    "truncated_png": "truncated",
    "empty_jpg": "empty",
    "text_named_jpg": "not_an_image",
    "bomb_png": "too_large",
    "huge_bomb_png": "too_large",
}

EXPECTED_SIZES: dict[str, tuple[int, int]] = {
    "cmyk_jpeg": (40, 30),
    "png_16bit": (256, 16),
    "rgba_png": (40, 30),
    "grey_l_png": (40, 30),
    "palette_png": (40, 30),
    "palette_transparent_png": (40, 30),
    "la_png": (40, 30),
    "bilevel_1_png": (40, 30),
    "mode_i_tiff": (256, 16),
    "mode_f_tiff": (40, 30),
    "exif_rotated_jpeg": (32, 64),
    "good_photo_jpg": (451, 300),
    "good_photo_png": (600, 400),
}


def write_bad_images(folder: str | Path) -> dict[str, tuple[str, str]]:
    """Write every messy-image kind into ``folder``; return ``{name: (path, "ok"|"error")}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writers = {
        "truncated_jpeg": ("truncated.jpg", _truncated_jpeg),
        "truncated_png": ("truncated.png", _truncated_png),
        "empty_jpg": ("empty.jpg", lambda p: p.write_bytes(b"")),
        "text_named_jpg": ("notes.jpg", lambda p: p.write_text("this is not an image\n")),
        "bomb_png": ("bomb.png", lambda p: _write_bomb_png(p, BOMB_SIZE)),
        "huge_bomb_png": ("huge_bomb.png", lambda p: _write_bomb_png(p, HUGE_BOMB_SIZE)),
        "cmyk_jpeg": ("cmyk.jpg", _cmyk_jpeg),
        "png_16bit": ("grey16.png", lambda p: _ramp16().save(p)),
        "rgba_png": ("rgba.png", lambda p: _rgba().save(p)),
        "grey_l_png": ("grey.png", lambda p: Image.fromarray(_pattern()[:, :, 0]).save(p)),
        "palette_png": ("palette.png", lambda p: _palette().save(p)),
        "palette_transparent_png": ("palette_transparent.png",
                                    lambda p: _palette().save(p, transparency=0)),
        "la_png": ("la.png", lambda p: _rgba().convert("LA").save(p)),
        "bilevel_1_png": ("bilevel.png",
                          lambda p: Image.fromarray(_pattern()[:, :, 0] > 127).save(p)),
        "mode_i_tiff": ("int32.tif", lambda p: _ramp_i().save(p)),
        "mode_f_tiff": ("float.tif", _float_tiff),
        "exif_rotated_jpeg": ("rotated.jpg", _exif_rotated_jpeg),
        "good_photo_jpg": ("photo.jpg", lambda p: _photo("chelsea").save(p, quality=92)),
        "good_photo_png": ("photo.png", lambda p: _photo("coffee").save(p)),
    }
    written: dict[str, tuple[str, str]] = {}
    for name, (filename, write) in writers.items():
        path = folder / filename
        write(path)
        written[name] = (str(path), "error" if name in EXPECTED_REASONS else "ok")
    return written


# ------------------------------------------------------------------------ contents


def _pattern() -> np.ndarray:
    """A 30 x 40 RGB test pattern with gradients (height 30, width 40)."""
    y, x = np.mgrid[0:30, 0:40]
    return np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.uint8)


def _photo(name: str) -> Image.Image:
    """A real photograph bundled with scikit-image (synthetic fallback if unavailable)."""
    try:
        import skimage.data

        return Image.fromarray(getattr(skimage.data, name)())
    except Exception:  # noqa: BLE001 - only the size matters to the tests then
        size = (451, 300) if name == "chelsea" else (600, 400)
        rng = np.random.default_rng(0)
        return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    """Encode an image as JPEG in memory."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _truncated_jpeg(path: Path) -> None:
    """A real photo's JPEG cut at 40 % of its length."""
    data = _jpeg_bytes(_photo("chelsea"), quality=90)
    path.write_bytes(data[: int(len(data) * 0.4)])


def _truncated_png(path: Path) -> None:
    """A PNG cut in the middle of its image data."""
    buf = io.BytesIO()
    _photo("coffee").save(buf, "PNG")
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])


def _cmyk_jpeg(path: Path) -> None:
    """Pure cyan in CMYK (loads as RGB about (0, 255, 255))."""
    Image.new("CMYK", (40, 30), (255, 0, 0, 0)).save(path, "JPEG", quality=95)


def _ramp16() -> Image.Image:
    """16-bit greyscale (mode I;16), 256 x 16, values 0..65535 rising left to right."""
    row = np.linspace(0, 65535, 256).round().astype(np.uint16)
    return Image.fromarray(np.tile(row, (16, 1)))


def _ramp_i() -> Image.Image:
    """32-bit integer (mode I), 256 x 16, values 0..65535 rising left to right."""
    row = np.linspace(0, 65535, 256).round().astype(np.int32)
    return Image.fromarray(np.tile(row, (16, 1)))


def _float_tiff(path: Path) -> None:
    """32-bit float (mode F) with values in [0, 1] rising left to right."""
    row = np.linspace(0.0, 1.0, 40, dtype=np.float32)
    Image.fromarray(np.tile(row, (30, 1))).save(path)


def _rgba() -> Image.Image:
    """Red, with its left half fully transparent and right half opaque."""
    a = np.zeros((30, 40, 4), np.uint8)
    a[..., 0] = 255
    a[:, 20:, 3] = 255
    return Image.fromarray(a)


def _palette() -> Image.Image:
    """A palette image: index 0 (black) on the left half, index 1 (green) on the right."""
    idx = np.zeros((30, 40), np.uint8)
    idx[:, 20:] = 1
    im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))
    return im


def _exif_rotated_jpeg(path: Path) -> None:
    """Blue 64 x 32 image, red block in the stored top-left corner, EXIF orientation 6."""
    w, h = EXIF_STORED_SIZE
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 2] = 255
    a[: h // 2, : w // 4] = (255, 0, 0)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    im.save(path, "JPEG", quality=95, exif=exif.tobytes())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _write_bomb_png(path: Path, size: tuple[int, int]) -> None:
    """A valid 1-bit PNG of huge declared size whose data compresses to a few hundred KB.

    Written chunk by chunk, so making it needs little memory; decoding it would need
    width x height bytes, which is what the loader must refuse to do.
    """
    w, h = size
    row = bytes(1 + (w + 7) // 8)  # filter byte 0 + all-black bits
    comp = zlib.compressobj(9)
    rows_per_block = max(1, (1 << 20) // len(row))
    block = row * rows_per_block
    parts = []
    for start in range(0, h, rows_per_block):
        n = min(rows_per_block, h - start)
        parts.append(comp.compress(block if n == rows_per_block else row * n))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1-bit greyscale
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", ihdr))
        f.write(_png_chunk(b"IDAT", b"".join(parts)))
        f.write(_png_chunk(b"IEND", b""))
