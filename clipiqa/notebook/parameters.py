"""What a notebook's parameters cell computes instead of pasting it: :func:`settings` (what the ``SMOKE`` switch
implies: model, weights, device, sizes, work folder), the stand-in rater of smoke mode and the image folder check."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Mapping, NamedTuple

__all__ = ["DEMO_TYPES", "STAND_IN", "Settings", "image_folder", "settings", "stand_in"]

DEMO_TYPES = ["gaussian_blur", "white_noise", "jpeg"]
"""The distortions of the embedded demo set the notebooks use."""


class Settings(NamedTuple):
    """What a notebook's ``SMOKE`` switch implies, in the order its parameters cell unpacks them."""

    rehearsal: bool
    """CI's dress rehearsal of the real path (``CLIPIQA_REHEARSAL=1``, real mode only): small sizes."""
    model: str
    """``lesson`` in smoke mode, else ``$CLIPIQA_MODEL`` or ``DEFAULT_MODEL`` (``vitb16-openai``) (any model: ``clipiqa models``)."""
    weights: str | None
    """Real runs without model-hub access: a local weights file/folder (or set ``CLIPIQA_WEIGHTS``); None here."""
    device: str
    """``$CLIPIQA_DEVICE``, else ``cpu`` in smoke mode and ``auto`` (CUDA when present, else CPU) in real mode."""
    demo_limit: int | None
    """CI rehearsal: at most this many demo images per table; None otherwise."""
    work: str
    """Sessions and results, next to the notebook: ``clipiqa-work/smoke`` in smoke mode, else ``clipiqa-work``."""
    demo_types: list[str]
    """Distortions of the embedded demo set."""
    size: int
    """Side of the demo images in pixels: 64 in smoke mode (the lesson model sees 64 px), else 224."""


def settings(smoke: bool, environ: Mapping[str, str] | None = None) -> Settings:
    """What follows from a notebook's ``SMOKE`` switch (``True``: the lesson toy model and the embedded demo photos
    at 64 px on the CPU; ``False``: real weights on a GPU when there is one), reading ``CLIPIQA_REHEARSAL``,
    ``CLIPIQA_MODEL`` and ``CLIPIQA_DEVICE`` from ``environ`` (default ``os.environ``)."""
    from ..presets import DEFAULT_MODEL  # here: clipiqa.session imports this module, and presets reads package files
    env = os.environ if environ is None else environ
    smoke = bool(smoke)
    rehearsal = not smoke and env.get("CLIPIQA_REHEARSAL") == "1"
    return Settings(
        rehearsal=rehearsal,
        model="lesson" if smoke else env.get("CLIPIQA_MODEL", DEFAULT_MODEL),
        weights=None,
        device=env.get("CLIPIQA_DEVICE") or ("cpu" if smoke else "auto"),
        demo_limit=16 if rehearsal else None,
        work="clipiqa-work/smoke" if smoke else "clipiqa-work",
        demo_types=list(DEMO_TYPES),
        size=64 if smoke else 224,
    )


STAND_IN = "stand-in"
"""The rater name of smoke mode's stand-in ratings (synthetic severity): never a person's name, so a person who
skips the Rater box does not find its ratings as their own."""


@contextmanager
def stand_in(session):
    """Rate as :data:`STAND_IN` inside the block (``session.rater`` is restored after): what the notebooks' stand-in
    rater cells use."""
    previous = session.rater
    session.rater = STAND_IN
    try:
        yield STAND_IN
    finally:
        session.rater = previous


def image_folder(path):
    """A parameters cell's image folder, checked where it is typed: None stays None (the demo photos); a folder
    that does not exist, or holds no image, is refused by name (``~`` expanded), so a typo fails here and not as
    a one-image session three cells later. Returns the absolute folder."""
    if path is None:
        return None
    from ..session.files import image_rows
    image_rows(path)  # the Session's own rules: missing -> FileNotFoundError, no image -> ValueError
    return os.path.abspath(os.path.expanduser(os.fspath(path)))
