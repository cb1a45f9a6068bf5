"""Embedded demo set: real photos that ship inside installed packages, plus synthetic
distortions of known severity.

Photos (all load offline; checked with scikit-image 0.26, scikit-learn 1.9,
matplotlib 3.11, where every one of them is bundled in the wheel):

* scikit-image ``skimage.data``: astronaut, chelsea, coffee, rocket, motorcycle (left image
  of ``stereo_motorcycle``), hubble_deep_field, immunohistochemistry, retina;
* scikit-learn ``load_sample_image``: china (``china.jpg``) and flower (``flower.jpg``),
  CC BY 2.0;
* matplotlib ``cbook.get_sample_data``: grace_hopper (``grace_hopper.jpg``).

A photo whose loader fails (e.g. a scikit-image version that would download it) is
skipped with a warning; :func:`available_photos` says which load here.

The labels are **synthetic severities (the distortion level), not human opinion scores**:
``mos`` = level (0 for the reference, lower is better), ``q = 1 - level / 5``
(higher is better, 1.0 for the reference).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipiqa.data.distortions import DISTORTIONS, apply_distortion
from clipiqa.data.generated import cache_root, resolve_types, square, write_png

__all__ = [
    "DEFAULT_TYPES",
    "DEMO_COLUMNS",
    "PHOTOS",
    "available_photos",
    "build_demo_set",
    "demo_references",
    "stable_seed",
]

DEFAULT_TYPES: tuple[str, ...] = (
    "gaussian_blur", "white_noise", "jpeg", "desaturate", "darken", "pixelate",
    "contrast_decrease", "sensor_noise",
)
"""One representative type per category (blur, noise, compression, colour, brightness,
spatial, sharpness/contrast, plant)."""

DEMO_COLUMNS: tuple[str, ...] = (
    "path", "mos", "q", "mos_std", "content_id", "distortion", "level",
)
"""Columns of the table returned by :func:`build_demo_set`."""

REFERENCE = "reference"
"""``distortion`` value of the undistorted photos (level 0)."""

LABEL_KIND = "synthetic severity (distortion level), not human MOS"

_FORMAT_VERSION = 1  # bump when file naming or the table layout changes


# The three sample-image sources are imported inside their loaders: scikit-learn's datasets alone take about a
# second to import, and a demo set already on disk needs none of them.
def _skimage(name: str) -> Callable[[], np.ndarray]:
    """Loader for one ``skimage.data`` image (first image of pairs)."""
    def load() -> np.ndarray:
        import skimage.data

        img = getattr(skimage.data, name)()
        return img[0] if isinstance(img, tuple) else img
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    """Loader for one scikit-learn sample image."""
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    """Loader for one matplotlib sample image file."""
    def load() -> np.ndarray:
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data(filename, asfileobj=False)) as im:
            return np.asarray(im.convert("RGB"))
    return load


PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}
"""Photo name -> loader returning a uint8 H x W x 3 array (full resolution)."""


# ----------------------------------------------------------------------- photos


_PHOTO_CACHE: dict[str, np.ndarray] = {}


def _load_photo(name: str) -> np.ndarray | None:
    """Load one photo as read-only uint8 RGB (cached in memory after the first load),
    or None (with a warning) when it is unavailable."""
    if name in _PHOTO_CACHE:
        return _PHOTO_CACHE[name]
    try:
        img = np.asarray(PHOTOS[name]())
    except Exception as exc:  # noqa: BLE001 - a missing sample must not break the demo
        warnings.warn(f"demo photo {name!r} is not available here ({exc}); skipped",
                      RuntimeWarning, stacklevel=3)
        return None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    img.setflags(write=False)
    _PHOTO_CACHE[name] = img
    return img


def available_photos() -> list[str]:
    """Names of the demo photos that load in this environment."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [n for n in PHOTOS if _load_photo(n) is not None]


def demo_references(size: int = 256, names: Iterable[str] | None = None
                    ) -> dict[str, np.ndarray]:
    """The demo photos, centre-cropped to squares of ``size`` pixels (uint8 H x W x 3).

    Args:
        size: side of the square output.
        names: a subset of :data:`PHOTOS` (default: all that load here).
    """
    chosen = list(PHOTOS) if names is None else list(names)
    unknown = [n for n in chosen if n not in PHOTOS]
    if unknown:
        raise ValueError(f"unknown demo photos {unknown}; valid: {', '.join(PHOTOS)}")
    refs = {}
    for name in chosen:
        img = _load_photo(name)
        if img is not None:
            refs[name] = square(img, int(size))
    return refs


# ------------------------------------------------------------------------ seeds


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text (SHA-256; stable across runs and platforms,
    unlike Python's ``hash``)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


# ------------------------------------------------------------------------ build


def _resolve_levels(levels: Iterable[int]) -> list[int]:
    """Validate the levels (integers 1..5), deduplicated and sorted."""
    out = sorted({int(v) for v in levels})
    if not out or any(v < 1 or v > 5 for v in out):
        raise ValueError(f"levels must be integers from 1 to 5, got {list(levels)}")
    return out


def _settings(types: list[str], levels: list[int], size: int, seed: int,
              include_references: bool, photos: list[str]) -> dict:
    """Everything that determines the files; distortion parameters included so that
    retuned levels invalidate old caches."""
    return {
        "format": _FORMAT_VERSION,
        "types": types,
        "levels": levels,
        "size": int(size),
        "seed": int(seed),
        "include_references": bool(include_references),
        "photos": photos,
        "parameters": {t: repr(DISTORTIONS[t].levels) for t in types},
    }


def _settings_hash(settings: dict) -> str:
    """Short hash of the settings, used in the default cache folder name."""
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _default_cache_dir(digest: str) -> Path:
    """``$CLIPIQA_CACHE/demo-<hash>`` or ``~/.cache/clipiqa/demo-<hash>``."""
    return cache_root() / f"demo-{digest}"


def _plan(refs: dict[str, np.ndarray], types: list[str], levels: list[int],
          include_references: bool) -> list[tuple[str, str, int, str]]:
    """Rows to build: (content_id, distortion, level, file name)."""
    rows = []
    for content in refs:
        if include_references:
            rows.append((content, REFERENCE, 0, f"{content}.png"))
        for t in types:
            rows.extend((content, t, lv, f"{content}__{t}__{lv}.png") for lv in levels)
    return rows


def _render(ref: np.ndarray, content: str, distortion: str, level: int, seed: int
            ) -> np.ndarray:
    """One image of the set. The seed depends on (seed, content, distortion), not on
    the level, so the five levels of one photo share their random draws (nested)."""
    if distortion == REFERENCE:
        return ref
    return apply_distortion(ref, distortion, level, rng=stable_seed(seed, content, distortion))


def _read_manifest(folder: Path) -> dict | None:
    """The manifest in ``folder``, or None when absent or unreadable."""
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(folder: Path, settings: dict, complete: bool) -> None:
    """Write the manifest atomically. Written with ``complete=False`` before a build (so
    an interrupted build is resumed: every PNG is itself written atomically) and with
    ``complete=True`` after it."""
    fd, tmp = tempfile.mkstemp(suffix=".json.tmp", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump({"settings": settings, "complete": complete}, f, indent=1, sort_keys=True)
    os.replace(tmp, folder / "manifest.json")


def _table(folder: Path, plan: list[tuple[str, str, int, str]], settings: dict
           ) -> pd.DataFrame:
    """The common table for the planned rows."""
    df = pd.DataFrame({
        "path": [str((folder / fname).resolve()) for _, _, _, fname in plan],
        "mos": [float(lv) for _, _, lv, _ in plan],
        "q": [1.0 - lv / 5.0 for _, _, lv, _ in plan],
        "mos_std": np.nan,
        "content_id": [c for c, _, _, _ in plan],
        "distortion": [d for _, d, _, _ in plan],
        "level": [int(lv) for _, _, lv, _ in plan],
    }, columns=list(DEMO_COLUMNS))
    df.attrs.update({
        "dataset": "demo",
        "synthetic": True,
        "score_range": (0, 5),
        "higher_better": False,
        "label_kind": LABEL_KIND,
        "cache_dir": str(folder),
        "types": tuple(settings["types"]),
        "levels": tuple(settings["levels"]),
        "size": settings["size"],
        "seed": settings["seed"],
    })
    return df


def build_demo_set(cache_dir: str | os.PathLike | None = None,
                   types: str | Sequence[str] | None = None,
                   levels: Iterable[int] = (1, 2, 3, 4, 5), size: int = 256,
                   seed: int = 0, include_references: bool = True) -> pd.DataFrame:
    """Build (or reuse) the embedded demo set and return its table.

    Writes PNGs ``<content>.png`` (references) and ``<content>__<type>__<level>.png`` into
    ``cache_dir``; when the folder already holds a build with the same settings (its
    ``manifest.json`` matches and the files exist) nothing is recomputed.

    Args:
        cache_dir: where to write. Default: ``$CLIPIQA_CACHE/demo-<hash of settings>``, or
            ``~/.cache/clipiqa/demo-<hash>`` when ``CLIPIQA_CACHE`` is not set.
        types: distortion names, ``"all"``, or ``None`` for :data:`DEFAULT_TYPES`.
        levels: severity levels to include (subset of 1..5).
        size: side of the square images in pixels.
        seed: base seed; each (photo, type) gets ``stable_seed(seed, photo, type)``.
        include_references: also list the undistorted photos (level 0).

    Returns:
        DataFrame with columns :data:`DEMO_COLUMNS`: ``mos`` = level (0 = reference, lower
        is better), ``q = 1 - level / 5`` (higher is better), ``mos_std`` = NaN,
        ``content_id`` = photo name. ``attrs``: dataset="demo", synthetic=True,
        score_range=(0, 5), higher_better=False (for ``mos``), label_kind (synthetic
        severity, not human MOS), cache_dir, types, levels, size, seed.
    """
    type_list = resolve_types(types, DEFAULT_TYPES)
    level_list = _resolve_levels(levels)
    refs = demo_references(size)
    settings = _settings(type_list, level_list, size, seed, include_references, list(refs))
    folder = Path(cache_dir) if cache_dir is not None else \
        _default_cache_dir(_settings_hash(settings))
    folder.mkdir(parents=True, exist_ok=True)
    plan = _plan(refs, type_list, level_list, include_references)
    manifest = _read_manifest(folder)
    reuse = manifest is not None and manifest.get("settings") == settings
    if reuse and manifest.get("complete") and all((folder / f).is_file() for *_, f in plan):
        return _table(folder, plan, settings)
    _write_manifest(folder, settings, complete=False)
    for content, distortion, level, fname in plan:
        path = folder / fname
        if reuse and path.is_file():
            continue
        write_png(path, _render(refs[content], content, distortion, level, seed))
    _write_manifest(folder, settings, complete=True)
    return _table(folder, plan, settings)
