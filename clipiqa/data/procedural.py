"""Procedural images: textures, shapes and patterns drawn from a seed, for the ``lesson`` model.

Each kind is a pure function ``draw(rng, size) -> uint8 size x size x 3``; the same generator state gives the
same image. Everything is drawn at twice the size and box-downsampled, so edges are sharp but anti-aliased:
a clean procedural image is a *clean* image (no aliasing that a model could mistake for a distortion).
Every kind sits on a random two-colour gradient background, so no kind is flat (where blur would be invisible).

Use :func:`procedural_image`::

    img = procedural_image("stripes", seed=3, size=256)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["KINDS", "PHRASES", "procedural_image"]

Draw = Callable[[np.random.Generator, int], np.ndarray]


# ----------------------------------------------------------------------------- helpers
def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random saturated-ish RGB colours in [0, 1] (float32 n x 3)."""
    hue = rng.random(n)
    sat = rng.uniform(0.35, 1.0, n)
    val = rng.uniform(0.25, 1.0, n)
    k = (np.arange(3)[None, :] * (1 / 3) + hue[:, None]) % 1.0
    ramp = np.clip(np.abs(k * 6 - 3) - 1, 0, 1)  # hue -> rgb
    return (val[:, None] * (1 - sat[:, None] + sat[:, None] * ramp)).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1), each size x size (y, x)."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(t, t, indexing="ij")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear gradient between two random colours in a random direction (float32 size x size x 3)."""
    y, x = _grid(size)
    a = rng.uniform(0, 2 * np.pi)
    t = np.cos(a) * x + np.sin(a) * y
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = _colours(rng, 2)
    return c0 + (c1 - c0) * t[..., None]


def _mix(bg: np.ndarray, colour: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Paint ``colour`` over ``bg`` where the (float, 0..1) ``mask`` is on."""
    return bg * (1 - mask[..., None]) + colour * mask[..., None]


def _finish(x: np.ndarray, size: int) -> np.ndarray:
    """Float image at 2x size -> uint8 at ``size`` (box downsampling = 2x2 supersampling)."""
    u8 = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(u8).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def _pil_canvas(rng: np.random.Generator, big: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    bg = np.clip(np.rint(_background(rng, big) * 255), 0, 255).astype(np.uint8)
    im = Image.fromarray(bg)
    return im, ImageDraw.Draw(im)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(round(v * 255)) for v in c)
    return r, g, b


# ------------------------------------------------------------------------------- kinds
def _stripes(rng: np.random.Generator, big: int) -> np.ndarray:
    y, x = _grid(big)
    a = rng.uniform(0, np.pi)
    period = rng.uniform(0.04, 0.15)
    phase = (np.cos(a) * x + np.sin(a) * y) / period
    mask = ((phase % 1.0) < rng.uniform(0.3, 0.7)).astype(np.float32)
    return _mix(_background(rng, big), _colours(rng, 1)[0], mask)


def _checkerboard(rng: np.random.Generator, big: int) -> np.ndarray:
    y, x = _grid(big)
    a = rng.uniform(0, np.pi / 2)
    cell = rng.uniform(0.05, 0.16)
    u = (np.cos(a) * x + np.sin(a) * y) / cell
    v = (-np.sin(a) * x + np.cos(a) * y) / cell
    mask = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    return _mix(_background(rng, big), _colours(rng, 1)[0], mask)


def _circles(rng: np.random.Generator, big: int) -> np.ndarray:
    im, draw = _pil_canvas(rng, big)
    n = int(rng.integers(6, 20))
    for c, (cx, cy), r in zip(_colours(rng, n), rng.random((n, 2)) * big, rng.uniform(0.03, 0.16, n) * big):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgb(c))
    return np.asarray(im, dtype=np.float32) / 255.0


def _polygons(rng: np.random.Generator, big: int) -> np.ndarray:
    im, draw = _pil_canvas(rng, big)
    n = int(rng.integers(5, 14))
    for c in _colours(rng, n):
        centre = rng.random(2) * big
        k = int(rng.integers(3, 6))
        pts = centre + (rng.random((k, 2)) - 0.5) * rng.uniform(0.15, 0.45) * big
        draw.polygon([tuple(p) for p in pts], fill=_rgb(c))
    return np.asarray(im, dtype=np.float32) / 255.0


def _clouds(rng: np.random.Generator, big: int) -> np.ndarray:
    """Fractal value noise: octaves of bicubically upsampled random grids (fine octaves keep detail)."""
    field = np.zeros((big, big), np.float32)
    amp, total = 1.0, 0.0
    for cells in (4, 8, 16, 32, 64):
        small = Image.fromarray(rng.random((cells, cells)).astype(np.float32), mode="F")
        field += amp * np.asarray(small.resize((big, big), Image.Resampling.BICUBIC), dtype=np.float32)
        total += amp
        amp *= 0.6
    field = (field / total - field.min() / total)
    field = field / max(float(field.max()), 1e-6)
    c0, c1 = _colours(rng, 2)
    return c0 + (c1 - c0) * field[..., None]


def _bricks(rng: np.random.Generator, big: int) -> np.ndarray:
    y, x = _grid(big)
    h = rng.uniform(0.05, 0.12)
    w = h * rng.uniform(1.8, 3.0)
    mortar = rng.uniform(0.08, 0.18)
    row = np.floor(y / h)
    u = (x / w + 0.5 * (row % 2)) % 1.0
    v = (y / h) % 1.0
    joint = ((u < mortar * h / w) | (v < mortar)).astype(np.float32)
    brick_colour, mortar_colour = _colours(rng, 2)
    shade = 0.85 + 0.3 * rng.random(int(1 / h) + 3)[row.astype(int)]
    base = brick_colour * shade[..., None]
    return _mix(base, mortar_colour, joint)


def _dots(rng: np.random.Generator, big: int) -> np.ndarray:
    y, x = _grid(big)
    step = rng.uniform(0.05, 0.14)
    r = step * rng.uniform(0.2, 0.42)
    dy = (y / step) % 1.0 - 0.5
    dx = ((x / step) + 0.5 * (np.floor(y / step) % 2)) % 1.0 - 0.5
    mask = ((dx * dx + dy * dy) * step * step < r * r).astype(np.float32)
    return _mix(_background(rng, big), _colours(rng, 1)[0], mask)


def _waves(rng: np.random.Generator, big: int) -> np.ndarray:
    y, x = _grid(big)
    f1, f2 = rng.uniform(6, 20), rng.uniform(2, 6)
    amp = rng.uniform(0.02, 0.08)
    t = np.sin(2 * np.pi * (f1 * (y + amp * np.sin(2 * np.pi * f2 * x))))
    mask = (t > rng.uniform(-0.3, 0.3)).astype(np.float32)
    return _mix(_background(rng, big), _colours(rng, 1)[0], mask)


def _grid_lines(rng: np.random.Generator, big: int) -> np.ndarray:
    y, x = _grid(big)
    step = rng.uniform(0.06, 0.15)
    width = step * rng.uniform(0.06, 0.18)
    mask = (((x % step) < width) | ((y % step) < width)).astype(np.float32)
    return _mix(_background(rng, big), _colours(rng, 1)[0], mask)


def _scribbles(rng: np.random.Generator, big: int) -> np.ndarray:
    """Dark short strokes in rows on a light page, like handwriting seen from afar."""
    page = np.full((big, big, 3), rng.uniform(0.8, 1.0), np.float32)
    im = Image.fromarray(np.clip(np.rint(page * 255), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    ink = _rgb(_colours(rng, 1)[0] * 0.35)
    line_h = big * rng.uniform(0.05, 0.09)
    y = line_h
    while y < big - line_h / 2:
        x = big * 0.06
        while x < big * 0.94:
            n = int(rng.integers(3, 7))
            pts = [(x + i * line_h * 0.3, y + rng.uniform(-0.3, 0.3) * line_h) for i in range(n)]
            draw.line(pts, fill=ink, width=max(2, int(line_h * 0.12)))
            x += n * line_h * 0.3 + line_h * 0.4
        y += line_h * 1.4
    return np.asarray(im, dtype=np.float32) / 255.0


def _rings(rng: np.random.Generator, big: int) -> np.ndarray:
    y, x = _grid(big)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    period = rng.uniform(0.03, 0.1)
    r = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    mask = (((r / period) % 1.0) < 0.5).astype(np.float32)
    return _mix(_background(rng, big), _colours(rng, 1)[0], mask)


def _mosaic(rng: np.random.Generator, big: int) -> np.ndarray:
    """Voronoi cells of random colours with dark borders."""
    n = int(rng.integers(12, 40))
    seeds = rng.random((n, 2)).astype(np.float32)
    colours = _colours(rng, n)
    y, x = _grid(big)
    d = (y[..., None] - seeds[:, 0]) ** 2 + (x[..., None] - seeds[:, 1]) ** 2
    part = np.partition(d, 1, axis=-1)
    nearest = d.argmin(axis=-1)
    border = (np.sqrt(part[..., 1]) - np.sqrt(part[..., 0])) < 0.006
    return _mix(colours[nearest], np.zeros(3, np.float32), border.astype(np.float32))


KINDS: dict[str, Draw] = {
    "stripes": _stripes, "checkerboard": _checkerboard, "circles": _circles, "polygons": _polygons,
    "clouds": _clouds, "bricks": _bricks, "dots": _dots, "waves": _waves, "grid": _grid_lines,
    "scribbles": _scribbles, "rings": _rings, "mosaic": _mosaic,
}
"""Kind name -> drawing function ``draw(rng, size_2x) -> float32 image in [0, 1]``."""

PHRASES: dict[str, str] = {
    "stripes": "a stripe pattern", "checkerboard": "a checkerboard", "circles": "colored circles",
    "polygons": "colored shapes", "clouds": "clouds", "bricks": "a brick wall", "dots": "polka dots",
    "waves": "a wave pattern", "grid": "a grid", "scribbles": "a page of handwriting",
    "rings": "concentric rings", "mosaic": "a cell mosaic",
}
"""What a caption calls each kind ("a sharp clean photo of <phrase>")."""


def procedural_image(kind: str, seed: int | np.random.Generator, size: int = 256) -> np.ndarray:
    """One procedural image of ``kind`` (uint8 ``size`` x ``size`` x 3), deterministic from ``seed``."""
    if kind not in KINDS:
        raise ValueError(f"unknown procedural kind {kind!r}; valid: {', '.join(KINDS)}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size={size!r} is not allowed; use an integer of at least 8 pixels")
    rng = np.random.default_rng(seed)
    return _finish(np.asarray(KINDS[kind](rng, 2 * int(size)), dtype=np.float32), int(size))
