"""The ``"plant"`` distortion functions: what factory and inspection-line cameras see (conveyor motion
blur, defocus, sensor noise, under-exposure, glare, dust, vignetting, white-balance cast). "Plant" means an
industrial plant, not botany. Same ``fn(x, param, rng) -> y`` convention as :mod:`.kadid`."""

from __future__ import annotations

import numpy as np

from .pixels import convolve, disk_kernel, from_linear, line_kernel, standard_normal, to_linear


def conveyor_motion_blur(x: np.ndarray, length: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Motion blur of ``length`` pixels along the conveyor (horizontal, +-3 degrees)."""
    angle = float(np.clip(rng.normal(0.0, 1.5), -3.0, 3.0))
    return convolve(x, line_kernel(length, angle))


def defocus(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Out-of-focus blur: disk PSF of ``radius`` pixels with a brighter rim (aberration)."""
    return convolve(x, disk_kernel(radius, rim_weight=1.0))


def sensor_noise(x: np.ndarray, param: tuple[float, float],
                  rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian noise in linear light: (photons at white, read-noise std)."""
    photons, read = param
    lin = to_linear(x)
    shot = rng.poisson(lin * photons).astype(np.float32) / photons
    return from_linear(shot + read * standard_normal(rng, x.shape))


def underexposure(x: np.ndarray, param: tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
    """Too little light: linear gain < 1, a noise floor of given std, 8-bit linear ADC."""
    gain, floor = param
    lin = to_linear(x) * gain + floor * standard_normal(rng, x.shape)
    adc = np.rint(np.clip(lin, 0.0, 1.0) * 255.0) / 255.0  # shadows crushed in linear
    return from_linear(adc)


def _radius_map(h: int, w: int, cy: float, cx: float) -> np.ndarray:
    """Distance of every pixel centre from (cy, cx), H x W."""
    yy = np.arange(h, dtype=np.float32)[:, None] - cy
    xx = np.arange(w, dtype=np.float32)[None, :] - cx
    return np.sqrt(yy * yy + xx * xx)


def glare(x: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
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


def dust(x: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
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


def vignetting(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
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


def white_balance(x: np.ndarray, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """Wrong white balance: channel gains ``1 + magnitude * cast`` in linear light,
    cast drawn at random among warm, cool, green and magenta."""
    cast = _CASTS[rng.integers(len(_CASTS))]
    return from_linear(to_linear(x) * (1.0 + magnitude * cast))
