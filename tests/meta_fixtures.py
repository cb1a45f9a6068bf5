"""The small synthetic meta pre-training tasks that tests/test_meta.py and tests/test_meta_movement.py share
(the ``tasks`` fixture in conftest.py): four bundled photos at 64 px, five distortion types at levels 1, 3, 5
(synthetic severities, not opinions)."""
from __future__ import annotations

from clipiqa.data import demo_references
from clipiqa.meta import synthetic_tasks

TYPES = ("gaussian_blur", "white_noise", "jpeg", "darken", "pixelate")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def build_tasks(cache_dir):
    return synthetic_tasks(demo_references(64, names=PHOTOS), types=TYPES, levels=(1, 3, 5), size=64,
                           cache_dir=cache_dir)
