"""Synthetic image distortions with five monotone severity levels.

Written for clipiqa on NumPy, SciPy and Pillow only. The KADID-10k style types cover
seven categories (blur, noise, compression, colour, brightness, spatial,
sharpness/contrast); the ``"plant"`` category holds types seen on factory and inspection
line cameras (conveyor motion blur, defocus, sensor noise, under-exposure, glare, dust,
vignetting, white-balance cast). "Plant" means an industrial plant here, not botany.

Use :func:`apply_distortion`::

    out = apply_distortion(image, "gaussian_blur", level=3, rng=0)

Conventions:

* ``image`` is ``uint8`` H x W x 3; the result has the same shape and dtype.
* ``level`` 1..5; severity grows with level: the mean PSNR against the reference, over the
  embedded demo photos at 128-256 px, strictly decreases with level for every type (the
  test suite checks this).
* Parameters are in pixels of the image given (as in KADID-10k, whose images are 512 x 384):
  apply distortions at about the resolution the model sees (224-512 px), not to 4000-px
  originals that are downscaled afterwards (which would hide blur and noise).
* Randomness comes only from ``rng`` (a ``numpy.random.Generator``, a seed, or ``None``): the
  same generator state gives the same output. Random types draw the same random numbers at
  every level, so with the same seed the levels are nested (level 3 is level 2 made worse,
  same spot positions, same noise pattern).
* ``mask`` (bool H x W): pixels where the mask is False are returned exactly unchanged.
* ``jpeg2000`` uses Pillow's OpenJPEG encoder (``quality_mode="rates"``). If Pillow was
  built without OpenJPEG it falls back to a documented approximation (block-free
  resolution loss: Lanczos down- and up-sampling by ``sqrt(ratio / 12)``), flagged by
  :data:`JPEG2000_AVAILABLE`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np
from PIL import Image, features
from scipy import ndimage, signal

__all__ = [
    "CATEGORIES",
    "DISTORTIONS",
    "JPEG2000_AVAILABLE",
    "LEVELS",
    "Distortion",
    "apply_distortion",
    "list_distortions",
]

RngLike = Union[np.random.Generator, int, None]
DistortionFn = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]

CATEGORIES: tuple[str, ...] = (
    "blur", "noise", "compression", "colour", "brightness", "spatial",
    "sharpness_contrast", "plant",
)
"""Distortion categories; ``"plant"`` = factory / inspection-line imagery (not botanical)."""

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
"""Valid severity levels."""

JPEG2000_AVAILABLE: bool = bool(features.check("jpg_2000"))
"""Whether Pillow can encode JPEG 2000 here (else ``jpeg2000`` uses its fallback)."""


@dataclass(frozen=True)
class Distortion:
    """One distortion type.

    Attributes:
        name: registry key, e.g. ``"gaussian_blur"``.
        category: one of :data:`CATEGORIES`.
        plant: True for the factory / inspection-line types.
        description: one line for humans, naming the parameter that grows with level.
        fn: ``fn(x, param, rng) -> y`` on float32 H x W x 3 images in [0, 1].
        levels: the parameter used at levels 1..5.
        random: whether the output depends on ``rng``.
    """

    name: str
    category: str
    plant: bool
    description: str
    fn: DistortionFn = field(repr=False)
    levels: tuple = ()
    random: bool = False


# ------------------------------------------------------------------------- helpers

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_GAMMA = 2.2


def _luma(x: np.ndarray) -> np.ndarray:
    """BT.601 luma, H x W x 1."""
    return (x @ _LUMA)[..., None]


def _to_linear(x: np.ndarray) -> np.ndarray:
    """Approximate sRGB decoding (power 2.2)."""
    return np.power(np.clip(x, 0.0, 1.0), _GAMMA)


def _from_linear(x: np.ndarray) -> np.ndarray:
    """Approximate sRGB encoding (power 1/2.2), clipping to [0, 1] first."""
    return np.power(np.clip(x, 0.0, 1.0), 1.0 / _GAMMA)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 with rounding."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with an odd-sized 2-D kernel (reflect padding, FFT)."""
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="symmetric")
    out = signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))
    return out.astype(np.float32)


def _disk_kernel(radius: float, rim_weight: float = 0.0) -> np.ndarray:
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


def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
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


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 samples."""
    return rng.standard_normal(shape, dtype=np.float32)


def _pil_roundtrip(x: np.ndarray, fmt: str, **save_kw) -> np.ndarray:
    """Encode with Pillow in ``fmt`` and decode again; returns float32 in [0, 1]."""
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(x)).save(buf, fmt, **save_kw)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _n_items(fraction: float, item_area: float, h: int, w: int) -> int:
    """How many items of ``item_area`` pixels cover ``fraction`` of an H x W image."""
    return max(1, int(round(fraction * h * w / item_area)))


# ---------------------------------------------------------------------------- blur


def _gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")


def _lens_blur(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform disk (pillbox) blur of ``radius`` pixels."""
    return _convolve(x, _disk_kernel(radius))


def _motion_blur(x: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Linear motion blur of ``length`` pixels in a random direction."""
    angle = rng.uniform(0.0, 180.0)
    return _convolve(x, _line_kernel(length, angle))


# --------------------------------------------------------------------------- noise


def _white_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, independent per RGB channel, std ``sigma``."""
    return x + sigma * _normal(rng, x.shape)


_RGB2YCC = np.array([[0.299, 0.587, 0.114],
                     [-0.168736, -0.331264, 0.5],
                     [0.5, -0.418688, -0.081312]], np.float32)
_YCC2RGB = np.linalg.inv(_RGB2YCC).astype(np.float32)


def _colour_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise in YCbCr: std ``sigma`` on Cb and Cr, ``sigma / 3`` on Y."""
    ycc = x @ _RGB2YCC.T
    scale = np.array([sigma / 3, sigma, sigma], np.float32)
    return (ycc + _normal(rng, x.shape) * scale) @ _YCC2RGB.T


def _impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: a fraction ``amount`` of pixels set to black or white."""
    h, w = x.shape[:2]
    hit = rng.random((h, w)) < amount
    salt = rng.random((h, w)) < 0.5
    return np.where(hit[..., None], salt[..., None].astype(np.float32), x)


def _multiplicative_noise(x: np.ndarray, sigma: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Speckle: ``x * (1 + sigma * n)`` with standard normal ``n``."""
    return x * (1.0 + sigma * _normal(rng, x.shape))


# --------------------------------------------------------------------- compression


def _jpeg(x: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression with Pillow at ``quality`` (4:2:0 chroma subsampling)."""
    return _pil_roundtrip(x, "JPEG", quality=int(quality), subsampling=2)


def _jpeg2000(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG 2000 compression (OpenJPEG via Pillow) at compression ``ratio``:1."""
    h, w = x.shape[:2]
    if JPEG2000_AVAILABLE:
        resolutions = int(max(1, min(6, np.floor(np.log2(max(1, min(h, w)))) + 1)))
        try:
            return _pil_roundtrip(x, "JPEG2000", quality_mode="rates",
                                  quality_layers=[float(ratio)], irreversible=True,
                                  num_resolutions=resolutions)
        except (OSError, ValueError):
            pass  # tiny or unusual sizes: use the fallback below
    return _resample_loss(x, np.sqrt(ratio / 12.0))


def _resample_loss(x: np.ndarray, factor: float) -> np.ndarray:
    """Lanczos downsampling by ``factor`` and back (JPEG 2000 fallback)."""
    h, w = x.shape[:2]
    im = Image.fromarray(_to_uint8(x))
    small = im.resize((max(1, round(w / factor)), max(1, round(h / factor))),
                      Image.Resampling.LANCZOS)
    return np.asarray(small.resize((w, h), Image.Resampling.LANCZOS),
                      dtype=np.float32) / 255.0


# -------------------------------------------------------------------------- colour


def _desaturate(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Blend towards grey (luma): ``amount`` 1 is fully grey."""
    y = _luma(x)
    return y + (x - y) * (1.0 - amount)


def _saturate(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Scale the chroma (distance from luma) by ``1 + amount``."""
    y = _luma(x)
    return y + (x - y) * (1.0 + amount)


def _colour_quantisation(x: np.ndarray, colours: int, rng: np.random.Generator) -> np.ndarray:
    """Median-cut palette of ``colours`` colours, no dithering."""
    im = Image.fromarray(_to_uint8(x))
    q = im.quantize(colors=int(colours), method=Image.Quantize.MEDIANCUT,
                    dither=Image.Dither.NONE)
    return np.asarray(q.convert("RGB"), dtype=np.float32) / 255.0


def _shift(channel: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a 2-D array by (dx, dy) pixels, repeating the edge."""
    h, w = channel.shape
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return channel[ys[:, None], xs[None, :]]


def _colour_shift(x: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Channel misregistration: red moved ``pixels`` right and down, blue left and up."""
    d = int(pixels)
    return np.stack([_shift(x[..., 0], d, d // 2), x[..., 1], _shift(x[..., 2], -d, -(d // 2))],
                    axis=-1)


# ---------------------------------------------------------------------- brightness


def _brighten(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Brighten with the tone curve ``x ** (1 / gamma)``."""
    return np.power(x, 1.0 / gamma)


def _darken(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """Darken with the tone curve ``x ** gamma``."""
    return np.power(x, gamma)


def _mean_shift(x: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``shift`` to every value, upwards for dark images and downwards for bright ones."""
    return x + (shift if float(x.mean()) < 0.5 else -shift)


# ------------------------------------------------------------------------- spatial


def _jitter(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Move each pixel by a random offset of up to ``radius`` pixels in x and y."""
    h, w = x.shape[:2]
    u = rng.uniform(-1.0, 1.0, size=(2, h, w))
    dy, dx = np.rint(u * radius).astype(int)
    ys = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    return x[ys, xs]


def _pixelate(x: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    """Average ``block`` x ``block`` cells (box filter) and show them as flat squares."""
    h, w = x.shape[:2]
    im = Image.fromarray(_to_uint8(x))
    small = im.resize((max(1, round(w / block)), max(1, round(h / block))),
                      Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST), np.float32) / 255.0


def _patch_size(h: int, w: int, divisor: int, largest: int) -> int:
    """Side of square patches for an H x W image."""
    return int(np.clip(min(h, w) // divisor, 2, largest))


def _non_eccentricity_patch(x: np.ndarray, fraction: float,
                            rng: np.random.Generator) -> np.ndarray:
    """Copy small patches from nearby places; about ``fraction`` of the area is replaced."""
    h, w = x.shape[:2]
    p = min(_patch_size(h, w, 16, 16), h, w)
    n_max = _n_items(0.5, p * p, h, w)  # same draws at every level: nested levels
    dst = rng.integers(0, [max(1, h - p + 1), max(1, w - p + 1)], size=(n_max, 2))
    off = rng.integers(-2 * p, 2 * p + 1, size=(n_max, 2))
    src = np.clip(dst + off, 0, [h - p, w - p])
    out = x.copy()
    for (dy, dx), (sy, sx) in zip(dst[: _n_items(fraction, p * p, h, w)], src):
        out[dy:dy + p, dx:dx + p] = x[sy:sy + p, sx:sx + p]
    return out


def _colour_block(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Paste uniformly coloured random squares covering about ``fraction`` of the area."""
    h, w = x.shape[:2]
    p = min(_patch_size(h, w, 12, 32), h, w)
    n_max = _n_items(0.25, p * p, h, w)
    pos = rng.integers(0, [max(1, h - p + 1), max(1, w - p + 1)], size=(n_max, 2))
    colours = rng.random((n_max, 3), dtype=np.float32)
    out = x.copy()
    for (y, xx), c in zip(pos[: _n_items(fraction, p * p, h, w)], colours):
        out[y:y + p, xx:xx + p] = c
    return out


# -------------------------------------------------------------- sharpness/contrast


def _sharpen(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Over-sharpening by unsharp masking (Gaussian sigma 1.5) with gain ``amount``."""
    blurred = ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0), mode="reflect")
    return x + amount * (x - blurred)


def _contrast_decrease(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Pull every value towards the image mean by ``amount`` (1 = flat grey)."""
    m = float(x.mean())
    return m + (x - m) * (1.0 - amount)


def _contrast_increase(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Push values away from the image mean by a factor ``1 + amount`` (clipped)."""
    m = float(x.mean())
    return m + (x - m) * (1.0 + amount)


# --------------------------------------------------------------------------- plant


def _conveyor_motion_blur(x: np.ndarray, length: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Motion blur of ``length`` pixels along the conveyor (horizontal, +-3 degrees)."""
    angle = float(np.clip(rng.normal(0.0, 1.5), -3.0, 3.0))
    return _convolve(x, _line_kernel(length, angle))


def _defocus(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus blur: disk PSF of ``radius`` pixels with a brighter rim (aberration)."""
    return _convolve(x, _disk_kernel(radius, rim_weight=1.0))


def _sensor_noise(x: np.ndarray, param: tuple[float, float],
                  rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian noise in linear light: (photons at white, read-noise std)."""
    photons, read = param
    lin = _to_linear(x)
    shot = rng.poisson(lin * photons).astype(np.float32) / photons
    return _from_linear(shot + read * _normal(rng, x.shape))


def _underexposure(x: np.ndarray, param: tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
    """Too little light: linear gain < 1, a noise floor of given std, 8-bit linear ADC."""
    gain, floor = param
    lin = _to_linear(x) * gain + floor * _normal(rng, x.shape)
    adc = np.rint(np.clip(lin, 0.0, 1.0) * 255.0) / 255.0  # shadows crushed in linear
    return _from_linear(adc)


def _radius_map(h: int, w: int, cy: float, cx: float) -> np.ndarray:
    """Distance of every pixel centre from (cy, cx), H x W."""
    yy = np.arange(h, dtype=np.float32)[:, None] - cy
    xx = np.arange(w, dtype=np.float32)[None, :] - cx
    return np.sqrt(yy * yy + xx * xx)


def _glare(x: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Specular glare: a bright blob (intensity, radius as a fraction of the short side)
    with a saturated core, screen-blended at a random place."""
    intensity, frac = param
    h, w = x.shape[:2]
    cy, cx = rng.uniform(0.2, 0.8) * (h - 1), rng.uniform(0.2, 0.8) * (w - 1)
    sigma = max(1.0, frac * min(h, w))
    r2 = _radius_map(h, w, cy, cx) ** 2
    blob = np.exp(-r2 / (2 * sigma ** 2)) + np.exp(-r2 / (2 * (0.25 * sigma) ** 2))
    light = np.clip(intensity * blob, 0.0, 1.0)[..., None]
    return 1.0 - (1.0 - x) * (1.0 - light)


_DUST_COLOUR = np.array([0.08, 0.07, 0.06], np.float32)


def _dust(x: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Dark soft spots (dust on the lens or window, small occlusions):
    (spots per 256 x 256 pixels, opacity)."""
    per_area, opacity = param
    h, w = x.shape[:2]
    n_max = max(1, int(round(32 * h * w / 65536)))
    n = max(1, int(round(per_area * h * w / 65536)))
    centres = rng.random((n_max, 2)) * [h, w]
    radii = np.maximum(1.0, rng.uniform(0.012, 0.04, n_max) * min(h, w))
    keep = np.ones((h, w), np.float32)  # product of (1 - alpha_i)
    for (cy, cx), r in zip(centres[:n], radii[:n]):
        _stamp_spot(keep, cy, cx, r, opacity)
    alpha = (1.0 - keep)[..., None]
    return x * (1.0 - alpha) + _DUST_COLOUR * alpha


def _stamp_spot(keep: np.ndarray, cy: float, cx: float, r: float, opacity: float) -> None:
    """Multiply ``keep`` by (1 - alpha) of one soft round spot, inside its bounding box."""
    h, w = keep.shape
    reach = r * 1.6 + 2
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    d = _radius_map(y1 - y0, x1 - x0, cy - y0, cx - x0)
    soft = 0.2 * r + 0.5
    alpha = opacity / (1.0 + np.exp((d - r) / soft))
    keep[y0:y1, x0:x1] *= 1.0 - alpha


def _vignetting(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Radial light falloff: gain ``1 - strength * rho**2.5`` (rho = 1 in the corners)."""
    h, w = x.shape[:2]
    rho = _radius_map(h, w, (h - 1) / 2, (w - 1) / 2)
    rho /= max(float(rho.max()), 1e-6)
    gain = 1.0 - strength * rho ** 2.5
    return x * gain[..., None]


_CASTS = np.array([[1.0, 0.15, -1.0],    # warm (tungsten)
                   [-1.0, -0.1, 1.0],    # cool (shade / LED)
                   [-0.6, 1.0, -0.6],    # green (fluorescent)
                   [0.7, -0.8, 0.7]],    # magenta
                  np.float32)


def _white_balance(x: np.ndarray, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """Wrong white balance: channel gains ``1 + magnitude * cast`` in linear light,
    cast drawn at random among warm, cool, green and magenta."""
    cast = _CASTS[rng.integers(len(_CASTS))]
    return _from_linear(_to_linear(x) * (1.0 + magnitude * cast))


# ------------------------------------------------------------------------ registry


def _d(name: str, category: str, fn: DistortionFn, levels: tuple, description: str,
       random: bool = False) -> Distortion:
    """Build a registry entry."""
    return Distortion(name=name, category=category, plant=category == "plant",
                      description=description, fn=fn, levels=levels, random=random)


_ALL: tuple[Distortion, ...] = (
    _d("gaussian_blur", "blur", _gaussian_blur, (0.6, 1.2, 2.0, 3.2, 5.0),
       "Gaussian blur; sigma in pixels"),
    _d("lens_blur", "blur", _lens_blur, (1.0, 2.0, 3.5, 5.5, 8.0),
       "uniform disk (lens) blur; radius in pixels"),
    _d("motion_blur", "blur", _motion_blur, (3, 6, 10, 15, 22),
       "linear motion blur in a random direction; length in pixels", random=True),
    _d("white_noise", "noise", _white_noise, (0.02, 0.04, 0.07, 0.11, 0.17),
       "additive Gaussian noise per RGB channel; std (0-1 scale)", random=True),
    _d("colour_noise", "noise", _colour_noise, (0.03, 0.06, 0.1, 0.15, 0.22),
       "Gaussian noise in YCbCr, mostly chroma; Cb/Cr std (Y gets a third)", random=True),
    _d("impulse_noise", "noise", _impulse_noise, (0.01, 0.03, 0.06, 0.1, 0.16),
       "salt-and-pepper noise; fraction of pixels hit", random=True),
    _d("multiplicative_noise", "noise", _multiplicative_noise,
       (0.06, 0.12, 0.2, 0.3, 0.45), "speckle x*(1+sigma*n); sigma", random=True),
    _d("jpeg", "compression", _jpeg, (40, 20, 11, 6, 2),
       "JPEG compression (Pillow); quality"),
    _d("jpeg2000", "compression", _jpeg2000, (12, 25, 50, 90, 150),
       "JPEG 2000 compression (Pillow/OpenJPEG); compression ratio"),
    _d("desaturate", "colour", _desaturate, (0.2, 0.4, 0.6, 0.8, 1.0),
       "colour saturation decrease; blend towards grey"),
    _d("saturate", "colour", _saturate, (0.4, 0.9, 1.6, 2.6, 4.0),
       "colour saturation increase; chroma gain - 1"),
    _d("colour_quantisation", "colour", _colour_quantisation, (64, 32, 16, 8, 4),
       "median-cut colour quantisation without dithering; number of colours"),
    _d("colour_shift", "colour", _colour_shift, (1, 2, 3, 5, 8),
       "red/blue channel misregistration; shift in pixels"),
    _d("brighten", "brightness", _brighten, (1.25, 1.5, 1.85, 2.3, 3.0),
       "brightening tone curve x**(1/gamma); gamma"),
    _d("darken", "brightness", _darken, (1.25, 1.5, 1.85, 2.3, 3.0),
       "darkening tone curve x**gamma; gamma"),
    _d("mean_shift", "brightness", _mean_shift, (0.05, 0.1, 0.15, 0.22, 0.3),
       "mean shift towards the side with more headroom; offset (0-1 scale)"),
    _d("jitter", "spatial", _jitter, (1, 2, 3, 4, 6),
       "random per-pixel displacement; radius in pixels", random=True),
    _d("pixelate", "spatial", _pixelate, (2, 3, 4, 6, 9),
       "pixelation; block size in pixels"),
    _d("non_eccentricity_patch", "spatial", _non_eccentricity_patch,
       (0.03, 0.07, 0.13, 0.22, 0.35),
       "small patches copied from nearby places; area fraction", random=True),
    _d("colour_block", "spatial", _colour_block, (0.01, 0.025, 0.05, 0.09, 0.15),
       "random uniformly coloured squares; area fraction", random=True),
    _d("sharpen", "sharpness_contrast", _sharpen, (0.8, 1.6, 2.8, 4.5, 7.0),
       "over-sharpening by unsharp masking; gain"),
    _d("contrast_decrease", "sharpness_contrast", _contrast_decrease,
       (0.15, 0.3, 0.45, 0.6, 0.75), "contrast decrease towards the mean; amount"),
    _d("contrast_increase", "sharpness_contrast", _contrast_increase,
       (0.3, 0.6, 1.0, 1.6, 2.4), "contrast increase away from the mean; gain - 1"),
    _d("conveyor_motion_blur", "plant", _conveyor_motion_blur, (4, 8, 13, 20, 30),
       "near-horizontal motion blur of parts on a conveyor; length in pixels", random=True),
    _d("defocus", "plant", _defocus, (1.5, 2.5, 4.0, 6.0, 9.0),
       "defocus with a bright-rimmed disk PSF; radius in pixels"),
    _d("sensor_noise", "plant", _sensor_noise,
       ((800, 0.002), (250, 0.004), (90, 0.007), (35, 0.012), (14, 0.02)),
       "Poisson-Gaussian sensor noise; (photons at white, read-noise std)", random=True),
    _d("underexposure", "plant", _underexposure,
       ((0.55, 0.003), (0.38, 0.005), (0.25, 0.008), (0.16, 0.012), (0.1, 0.018)),
       "under-exposure: linear gain, noise floor, 8-bit linear quantisation; "
       "(gain, noise std)", random=True),
    _d("glare", "plant", _glare,
       ((0.3, 0.12), (0.45, 0.17), (0.6, 0.22), (0.75, 0.28), (0.9, 0.35)),
       "specular glare blob at a random place; (intensity, radius / short side)",
       random=True),
    _d("dust", "plant", _dust,
       ((4, 0.45), (8, 0.55), (14, 0.65), (22, 0.75), (32, 0.85)),
       "dark soft dust spots / occlusions; (spots per 256x256 px, opacity)", random=True),
    _d("vignetting", "plant", _vignetting, (0.25, 0.4, 0.55, 0.7, 0.85),
       "radial light falloff towards the corners; corner light loss"),
    _d("white_balance", "plant", _white_balance, (0.06, 0.12, 0.2, 0.3, 0.42),
       "white-balance colour cast (warm/cool/green/magenta at random); gain offset",
       random=True),
)

DISTORTIONS: dict[str, Distortion] = {d.name: d for d in _ALL}
"""All distortion types by name."""


def list_distortions(category: str | None = None, plant: bool | None = None) -> list[str]:
    """Names of the distortion types, optionally only one category or only (non-)plant."""
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; valid: {', '.join(CATEGORIES)}")
    return [d.name for d in _ALL
            if (category is None or d.category == category)
            and (plant is None or d.plant == plant)]


# -------------------------------------------------------------------------- apply


def apply_distortion(image: np.ndarray, name: str, level: int, rng: RngLike = None,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """Distort an image.

    Args:
        image: ``uint8`` array H x W x 3.
        name: a key of :data:`DISTORTIONS`.
        level: severity 1 (mild) .. 5 (strong).
        rng: a ``numpy.random.Generator`` (used and advanced), a seed, or ``None``
            (fresh entropy). Types without randomness ignore it.
        mask: optional bool H x W; where False the output equals ``image`` exactly.

    Returns:
        The distorted image, ``uint8`` H x W x 3.

    Raises:
        ValueError: unknown name, level outside 1..5, or wrong image/mask shape or dtype.
    """
    dist = _lookup(name)
    level = _check_level(level)
    _check_image(image)
    mask = _check_mask(mask, image.shape[:2])
    gen = np.random.default_rng(rng)
    x = image.astype(np.float32) / np.float32(255.0)
    out = _to_uint8(np.asarray(dist.fn(x, dist.levels[level - 1], gen), dtype=np.float32))
    if mask is not None:
        out = np.where(mask[..., None], out, image)
    return out


def _lookup(name: str) -> Distortion:
    """The registry entry for ``name``, or a ValueError listing the valid names."""
    try:
        return DISTORTIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown distortion {name!r}; valid names: "
                         f"{', '.join(sorted(DISTORTIONS))}") from None


def _check_level(level: int) -> int:
    """Validate a severity level (an integer 1..5)."""
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)) \
            or not 1 <= int(level) <= 5:
        raise ValueError(f"level must be an integer from 1 to 5, got {level!r}")
    return int(level)


def _check_image(image: np.ndarray) -> None:
    """Validate a uint8 H x W x 3 image."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be a uint8 array of shape H x W x 3, "
                         f"got shape {shape} dtype {dtype}")


def _check_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """Validate a mask of shape H x W and return it as bool."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask must have shape {tuple(shape)} (H x W), got {mask.shape}")
    return mask.astype(bool, copy=False)
