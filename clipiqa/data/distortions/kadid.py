"""The KADID-10k style distortion functions, seven categories: blur, noise, compression, colour,
brightness, spatial, sharpness/contrast. Each is ``fn(x, param, rng) -> y`` on float32 H x W x 3 in [0, 1];
their levels and descriptions are in :mod:`.table`."""

from __future__ import annotations

import numpy as np
from PIL import Image, features
from scipy import ndimage

from .pixels import (convolve, disk_kernel, line_kernel, luma, n_items, pil_roundtrip, standard_normal,
                     to_uint8)

JPEG2000_AVAILABLE: bool = bool(features.check("jpg_2000"))
"""Whether Pillow can encode JPEG 2000 here (else ``jpeg2000`` uses its fallback)."""


# ---------------------------------------------------------------------------- blur


def gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")


def lens_blur(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform disk (pillbox) blur of ``radius`` pixels."""
    return convolve(x, disk_kernel(radius))


def motion_blur(x: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Linear motion blur of ``length`` pixels in a random direction."""
    angle = rng.uniform(0.0, 180.0)
    return convolve(x, line_kernel(length, angle))


# --------------------------------------------------------------------------- noise


def white_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, independent per RGB channel, std ``sigma``."""
    return x + sigma * standard_normal(rng, x.shape)


_RGB2YCC = np.array([[0.299, 0.587, 0.114],
                     [-0.168736, -0.331264, 0.5],
                     [0.5, -0.418688, -0.081312]], np.float32)
_YCC2RGB = np.linalg.inv(_RGB2YCC).astype(np.float32)


def colour_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise in YCbCr: std ``sigma`` on Cb and Cr, ``sigma / 3`` on Y."""
    ycc = x @ _RGB2YCC.T
    scale = np.array([sigma / 3, sigma, sigma], np.float32)
    return (ycc + standard_normal(rng, x.shape) * scale) @ _YCC2RGB.T


def impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: a fraction ``amount`` of pixels set to black or white."""
    h, w = x.shape[:2]
    hit = rng.random((h, w)) < amount
    salt = rng.random((h, w)) < 0.5
    return np.where(hit[..., None], salt[..., None].astype(np.float32), x)


def multiplicative_noise(x: np.ndarray, sigma: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Speckle: ``x * (1 + sigma * n)`` with standard normal ``n``."""
    return x * (1.0 + sigma * standard_normal(rng, x.shape))


# --------------------------------------------------------------------- compression


def jpeg(x: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression with Pillow at ``quality`` (4:2:0 chroma subsampling)."""
    return pil_roundtrip(x, "JPEG", quality=int(quality), subsampling=2)


def jpeg2000(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG 2000 compression (OpenJPEG via Pillow) at compression ``ratio``:1."""
    h, w = x.shape[:2]
    if JPEG2000_AVAILABLE:
        resolutions = int(max(1, min(6, np.floor(np.log2(max(1, min(h, w)))) + 1)))
        try:
            return pil_roundtrip(x, "JPEG2000", quality_mode="rates",
                                  quality_layers=[float(ratio)], irreversible=True,
                                  num_resolutions=resolutions)
        except (OSError, ValueError):
            pass  # tiny or unusual sizes: use the fallback below
    return _resample_loss(x, np.sqrt(ratio / 12.0))


def _resample_loss(x: np.ndarray, factor: float) -> np.ndarray:
    """Lanczos downsampling by ``factor`` and back (JPEG 2000 fallback)."""
    h, w = x.shape[:2]
    im = Image.fromarray(to_uint8(x))
    small = im.resize((max(1, round(w / factor)), max(1, round(h / factor))),
                      Image.Resampling.LANCZOS)
    return np.asarray(small.resize((w, h), Image.Resampling.LANCZOS),
                      dtype=np.float32) / 255.0


# -------------------------------------------------------------------------- colour


def desaturate(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Blend towards grey (luma): ``amount`` 1 is fully grey."""
    y = luma(x)
    return y + (x - y) * (1.0 - amount)


def saturate(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Scale the chroma (distance from luma) by ``1 + amount``."""
    y = luma(x)
    return y + (x - y) * (1.0 + amount)


def colour_quantisation(x: np.ndarray, colours: int, rng: np.random.Generator) -> np.ndarray:
    """Median-cut palette of ``colours`` colours, no dithering."""
    im = Image.fromarray(to_uint8(x))
    q = im.quantize(colors=int(colours), method=Image.Quantize.MEDIANCUT,
                    dither=Image.Dither.NONE)
    return np.asarray(q.convert("RGB"), dtype=np.float32) / 255.0


def _shift(channel: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a 2-D array by (dx, dy) pixels, repeating the edge."""
    h, w = channel.shape
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return channel[ys[:, None], xs[None, :]]


def colour_shift(x: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Channel misregistration: red moved ``pixels`` right and down, blue left and up."""
    d = int(pixels)
    return np.stack([_shift(x[..., 0], d, d // 2), x[..., 1], _shift(x[..., 2], -d, -(d // 2))],
                    axis=-1)


# ---------------------------------------------------------------------- brightness


def brighten(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Brighten with the tone curve ``x ** (1 / gamma)``."""
    return np.power(x, 1.0 / gamma)


def darken(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Darken with the tone curve ``x ** gamma``."""
    return np.power(x, gamma)


def mean_shift(x: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``shift`` to every value, upwards for dark images and downwards for bright ones."""
    return x + (shift if float(x.mean()) < 0.5 else -shift)


# ------------------------------------------------------------------------- spatial


def jitter(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Move each pixel by a random offset of up to ``radius`` pixels in x and y."""
    h, w = x.shape[:2]
    u = rng.uniform(-1.0, 1.0, size=(2, h, w))
    dy, dx = np.rint(u * radius).astype(int)
    ys = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    return x[ys, xs]


def pixelate(x: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    """Average ``block`` x ``block`` cells (box filter) and show them as flat squares."""
    h, w = x.shape[:2]
    im = Image.fromarray(to_uint8(x))
    small = im.resize((max(1, round(w / block)), max(1, round(h / block))),
                      Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST), np.float32) / 255.0


def _patch_size(h: int, w: int, divisor: int, largest: int) -> int:
    """Side of square patches for an H x W image."""
    return int(np.clip(min(h, w) // divisor, 2, largest))


def non_eccentricity_patch(x: np.ndarray, fraction: float,
                            rng: np.random.Generator) -> np.ndarray:
    """Copy small patches from nearby places; about ``fraction`` of the area is replaced."""
    h, w = x.shape[:2]
    p = min(_patch_size(h, w, 16, 16), h, w)
    n_max = n_items(0.5, p * p, h, w)  # same draws at every level: nested levels
    dst = rng.integers(0, [max(1, h - p + 1), max(1, w - p + 1)], size=(n_max, 2))
    off = rng.integers(-2 * p, 2 * p + 1, size=(n_max, 2))
    src = np.clip(dst + off, 0, [h - p, w - p])
    out = x.copy()
    for (dy, dx), (sy, sx) in zip(dst[: n_items(fraction, p * p, h, w)], src):
        out[dy:dy + p, dx:dx + p] = x[sy:sy + p, sx:sx + p]
    return out


def colour_block(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Paste uniformly coloured random squares covering about ``fraction`` of the area."""
    h, w = x.shape[:2]
    p = min(_patch_size(h, w, 12, 32), h, w)
    n_max = n_items(0.25, p * p, h, w)
    pos = rng.integers(0, [max(1, h - p + 1), max(1, w - p + 1)], size=(n_max, 2))
    colours = rng.random((n_max, 3), dtype=np.float32)
    out = x.copy()
    for (y, xx), c in zip(pos[: n_items(fraction, p * p, h, w)], colours):
        out[y:y + p, xx:xx + p] = c
    return out


# -------------------------------------------------------------- sharpness/contrast


def sharpen(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Over-sharpening by unsharp masking (Gaussian sigma 1.5) with gain ``amount``."""
    blurred = ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0), mode="reflect")
    return x + amount * (x - blurred)


def contrast_decrease(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Pull every value towards the image mean by ``amount`` (1 = flat grey)."""
    m = float(x.mean())
    return m + (x - m) * (1.0 - amount)


def contrast_increase(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Push values away from the image mean by a factor ``1 + amount`` (clipped)."""
    m = float(x.mean())
    return m + (x - m) * (1.0 + amount)
