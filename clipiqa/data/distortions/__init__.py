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

Layout: ``spec`` (:class:`Distortion`, categories, levels), ``pixels`` (shared pixel helpers), the two
families of functions ``kadid`` (seven KADID-style categories, with :data:`JPEG2000_AVAILABLE`) and ``plant``,
``table`` (:data:`DISTORTIONS`: every type's function, levels and description) and ``apply``
(:func:`apply_distortion`).
"""

from __future__ import annotations

from .apply import apply_distortion
from .kadid import JPEG2000_AVAILABLE
from .spec import CATEGORIES, LEVELS, Distortion
from .table import DISTORTIONS, list_distortions

__all__ = [
    "CATEGORIES",
    "DISTORTIONS",
    "JPEG2000_AVAILABLE",
    "LEVELS",
    "Distortion",
    "apply_distortion",
    "list_distortions",
]
