"""What a distortion type is (:class:`Distortion`), its categories and its five severity levels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np


RngLike = Union[np.random.Generator, int, None]
DistortionFn = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]

CATEGORIES: tuple[str, ...] = (
    "blur", "noise", "compression", "colour", "brightness", "spatial",
    "sharpness_contrast", "plant",
)
"""Distortion categories; ``"plant"`` = factory / inspection-line imagery (not botanical)."""

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
"""Valid severity levels."""


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
