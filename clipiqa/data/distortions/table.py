"""The table of distortion types: each type's function, category, parameter at levels 1..5 and one-line
description (:data:`DISTORTIONS`), and :func:`list_distortions`. A new type is one function in a family
module and one row here."""

from __future__ import annotations

from . import kadid
from . import plant as plant_family  # not `plant`: list_distortions has a parameter of that name
from .spec import CATEGORIES, Distortion, DistortionFn


def _d(name: str, category: str, fn: DistortionFn, levels: tuple, description: str,
       random: bool = False) -> Distortion:
    """Build a registry entry."""
    return Distortion(name=name, category=category, plant=category == "plant",
                      description=description, fn=fn, levels=levels, random=random)


_ALL: tuple[Distortion, ...] = (
    _d("gaussian_blur", "blur", kadid.gaussian_blur, (0.6, 1.2, 2.0, 3.2, 5.0),
       "Gaussian blur; sigma in pixels"),
    _d("lens_blur", "blur", kadid.lens_blur, (1.0, 2.0, 3.5, 5.5, 8.0),
       "uniform disk (lens) blur; radius in pixels"),
    _d("motion_blur", "blur", kadid.motion_blur, (3, 6, 10, 15, 22),
       "linear motion blur in a random direction; length in pixels", random=True),
    _d("white_noise", "noise", kadid.white_noise, (0.02, 0.04, 0.07, 0.11, 0.17),
       "additive Gaussian noise per RGB channel; std (0-1 scale)", random=True),
    _d("colour_noise", "noise", kadid.colour_noise, (0.03, 0.06, 0.1, 0.15, 0.22),
       "Gaussian noise in YCbCr, mostly chroma; Cb/Cr std (Y gets a third)", random=True),
    _d("impulse_noise", "noise", kadid.impulse_noise, (0.01, 0.03, 0.06, 0.1, 0.16),
       "salt-and-pepper noise; fraction of pixels hit", random=True),
    _d("multiplicative_noise", "noise", kadid.multiplicative_noise,
       (0.06, 0.12, 0.2, 0.3, 0.45), "speckle x*(1+sigma*n); sigma", random=True),
    _d("jpeg", "compression", kadid.jpeg, (40, 20, 11, 6, 2),
       "JPEG compression (Pillow); quality"),
    _d("jpeg2000", "compression", kadid.jpeg2000, (12, 25, 50, 90, 150),
       "JPEG 2000 compression (Pillow/OpenJPEG); compression ratio"),
    _d("desaturate", "colour", kadid.desaturate, (0.2, 0.4, 0.6, 0.8, 1.0),
       "colour saturation decrease; blend towards grey"),
    _d("saturate", "colour", kadid.saturate, (0.4, 0.9, 1.6, 2.6, 4.0),
       "colour saturation increase; chroma gain - 1"),
    _d("colour_quantisation", "colour", kadid.colour_quantisation, (64, 32, 16, 8, 4),
       "median-cut colour quantisation without dithering; number of colours"),
    _d("colour_shift", "colour", kadid.colour_shift, (1, 2, 3, 5, 8),
       "red/blue channel misregistration; shift in pixels"),
    _d("brighten", "brightness", kadid.brighten, (1.25, 1.5, 1.85, 2.3, 3.0),
       "brightening tone curve x**(1/gamma); gamma"),
    _d("darken", "brightness", kadid.darken, (1.25, 1.5, 1.85, 2.3, 3.0),
       "darkening tone curve x**gamma; gamma"),
    _d("mean_shift", "brightness", kadid.mean_shift, (0.05, 0.1, 0.15, 0.22, 0.3),
       "mean shift towards the side with more headroom; offset (0-1 scale)"),
    _d("jitter", "spatial", kadid.jitter, (1, 2, 3, 4, 6),
       "random per-pixel displacement; radius in pixels", random=True),
    _d("pixelate", "spatial", kadid.pixelate, (2, 3, 4, 6, 9),
       "pixelation; block size in pixels"),
    _d("non_eccentricity_patch", "spatial", kadid.non_eccentricity_patch,
       (0.03, 0.07, 0.13, 0.22, 0.35),
       "small patches copied from nearby places; area fraction", random=True),
    _d("colour_block", "spatial", kadid.colour_block, (0.01, 0.025, 0.05, 0.09, 0.15),
       "random uniformly coloured squares; area fraction", random=True),
    _d("sharpen", "sharpness_contrast", kadid.sharpen, (0.8, 1.6, 2.8, 4.5, 7.0),
       "over-sharpening by unsharp masking; gain"),
    _d("contrast_decrease", "sharpness_contrast", kadid.contrast_decrease,
       (0.15, 0.3, 0.45, 0.6, 0.75), "contrast decrease towards the mean; amount"),
    _d("contrast_increase", "sharpness_contrast", kadid.contrast_increase,
       (0.3, 0.6, 1.0, 1.6, 2.4), "contrast increase away from the mean; gain - 1"),
    _d("conveyor_motion_blur", "plant", plant_family.conveyor_motion_blur, (4, 8, 13, 20, 30),
       "near-horizontal motion blur of parts on a conveyor; length in pixels", random=True),
    _d("defocus", "plant", plant_family.defocus, (1.5, 2.5, 4.0, 6.0, 9.0),
       "defocus with a bright-rimmed disk PSF; radius in pixels"),
    _d("sensor_noise", "plant", plant_family.sensor_noise,
       ((800, 0.002), (250, 0.004), (90, 0.007), (35, 0.012), (14, 0.02)),
       "Poisson-Gaussian sensor noise; (photons at white, read-noise std)", random=True),
    _d("underexposure", "plant", plant_family.underexposure,
       ((0.55, 0.003), (0.38, 0.005), (0.25, 0.008), (0.16, 0.012), (0.1, 0.018)),
       "under-exposure: linear gain, noise floor, 8-bit linear quantisation; "
       "(gain, noise std)", random=True),
    _d("glare", "plant", plant_family.glare,
       ((0.3, 0.12), (0.45, 0.17), (0.6, 0.22), (0.75, 0.28), (0.9, 0.35)),
       "specular glare blob at a random place; (intensity, radius / short side)",
       random=True),
    _d("dust", "plant", plant_family.dust,
       ((4, 0.45), (8, 0.55), (14, 0.65), (22, 0.75), (32, 0.85)),
       "dark soft dust spots / occlusions; (spots per 256x256 px, opacity)", random=True),
    _d("vignetting", "plant", plant_family.vignetting, (0.25, 0.4, 0.55, 0.7, 0.85),
       "radial light falloff towards the corners; corner light loss"),
    _d("white_balance", "plant", plant_family.white_balance, (0.06, 0.12, 0.2, 0.3, 0.42),
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
