"""Pixel helpers shared by the distortion families: luma, approximate sRGB <-> linear light, uint8
rounding, convolution with disk and line kernels, noise samples and Pillow encode/decode round trips."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import signal


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_GAMMA = 2.2


def luma(x: np.ndarray) -> np.ndarray:
    """BT.601 luma, H x W x 1."""
    return (x @ _LUMA)[..., None]


def to_linear(x: np.ndarray) -> np.ndarray:
    """Approximate sRGB decoding (power 2.2)."""
    return np.power(np.clip(x, 0.0, 1.0), _GAMMA)


def from_linear(x: np.ndarray) -> np.ndarray:
    """Approximate sRGB encoding (power 1/2.2), clipping to [0, 1] first."""
    return np.power(np.clip(x, 0.0, 1.0), 1.0 / _GAMMA)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 with rounding."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with an odd-sized 2-D kernel (reflect padding, FFT)."""
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="symmetric")
    out = signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))
    return out.astype(np.float32)


def disk_kernel(radius: float, rim_weight: float = 0.0) -> np.ndarray:
    """Anti-aliased disk (4x4 supersampled); ``rim_weight`` > 0 brightens the rim."""
    half = int(np.ceil(radius))
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    grid = np.arange(-half, half + 1)
    yy = (grid[:, None, None, None] + sub[None, None, :, None])
    xx = (grid[None, :, None, None] + sub[None, None, None, :])
    r = np.sqrt(yy ** 2 + xx ** 2)
    inside = r <= max(radius, 0.5)
    weight = 1.0 + rim_weight * (r / max(radius, 0.5)) ** 2
    k = (inside * weight).mean(axis=(2, 3))
    return (k / k.sum()).astype(np.float32)


def line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Anti-aliased straight line of ``length`` pixels at ``angle_deg`` (bilinear splats)."""
    half = int(np.ceil(length / 2)) + 1
    size = 2 * half + 1
    t = np.linspace(-length / 2, length / 2, max(2, int(np.ceil(length * 4))))
    a = np.deg2rad(angle_deg)
    xs, ys = half + t * np.cos(a), half - t * np.sin(a)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    k = np.zeros((size, size), np.float64)
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                      (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(k, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), w)
    return (k / k.sum()).astype(np.float32)


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 samples."""
    return rng.standard_normal(shape, dtype=np.float32)


def pil_roundtrip(x: np.ndarray, fmt: str, **save_kw) -> np.ndarray:
    """Encode with Pillow in ``fmt`` and decode again; returns float32 in [0, 1]."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buf, fmt, **save_kw)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def n_items(fraction: float, item_area: float, h: int, w: int) -> int:
    """How many items of ``item_area`` pixels cover ``fraction`` of an H x W image."""
    return max(1, int(round(fraction * h * w / item_area)))
