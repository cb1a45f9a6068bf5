"""Synthetic meta tasks from any photos: one task per distortion type, the distorted images written once as PNGs
in a cache folder named by a hash of the settings and the reference pixels."""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from ..imageio import list_images, load_rgb_array
from .demo import REFERENCE, stable_seed
from .distortions import DISTORTIONS, apply_distortion, list_distortions
from .generated import cache_root, resolve_types, square, write_png
from .tasks import Task

__all__ = ["synthetic_tasks", "LABEL_KIND"]

LABEL_KIND = "synthetic severity (q = 1 - level / 5), not human MOS"


def synthetic_tasks(references: Mapping[str, np.ndarray] | str | os.PathLike, types: Iterable[str] | None = None,
                    levels: Iterable[int] = (1, 2, 3, 4, 5), size: int = 256, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None) -> list[Task]:
    """One task per distortion type, made from any reference images.

    references: ``{name: uint8 H x W x 3}`` (e.g. :func:`clipiqa.data.demo_references`) or a folder of the
        user's own photos (unreadable files are skipped with a warning naming them).
    types: distortion names (default: all of :func:`clipiqa.data.list_distortions`).
    levels: severities; ``q = 1 - level / 5``. Every task also holds the clean references at ``q = 1``.
    size: references are centre-cropped to squares of ``size`` pixels.
    cache_dir: where the PNGs go (default ``$CLIPIQA_CACHE`` or ``~/.cache/clipiqa``, in a folder named by a hash
        of the settings and the reference pixels); existing files are reused, new ones written atomically.

    Labels are synthetic severities, never human opinion scores.
    """
    refs = _load_references(references, int(size))
    type_list = resolve_types(types, list_distortions())
    level_list = sorted({int(v) for v in levels})
    if not level_list or level_list[0] < 1 or level_list[-1] > 5:
        raise ValueError(f"levels must be integers from 1 to 5, got {list(levels)}")
    folder = _synthetic_folder(refs, type_list, level_list, int(size), int(seed), cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ref_rows = [_row(_ensure_png(folder / f"{c}.png", lambda c=c: refs[c]), c, REFERENCE, 0) for c in refs]
    tasks = []
    for t in type_list:
        rows = list(ref_rows)
        for c, ref in refs.items():
            rng_seed = stable_seed(seed, c, t)  # the levels of one photo share their random draws (nested)
            for lv in level_list:
                path = _ensure_png(folder / f"{c}__{t}__{lv}.png",
                                   lambda ref=ref, t=t, lv=lv, s=rng_seed: apply_distortion(ref, t, lv, rng=s))
                rows.append(_row(path, c, t, lv))
        table = pd.DataFrame(rows)
        table.attrs.update({"dataset": "synthetic", "synthetic": True, "label_kind": LABEL_KIND,
                            "cache_dir": str(folder)})
        tasks.append(Task(t, table, DISTORTIONS[t].description))
    return tasks


def _row(path: Path, content: str, distortion: str, level: int) -> dict:
    return {"path": str(path), "mos": float(level), "q": 1.0 - level / 5.0, "mos_std": float("nan"),
            "content_id": content, "distortion": distortion, "level": int(level)}


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    out, i = base, 1
    while out in taken:
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


def _load_references(references, size: int) -> dict[str, np.ndarray]:
    if size < 16:
        raise ValueError(f"size={size} is too small; use at least 16 pixels (224 or more for real models)")
    if isinstance(references, Mapping):
        items = list(references.items())
    else:
        folder = Path(references)
        if not folder.is_dir():
            raise FileNotFoundError(f"reference folder {folder} does not exist")
        items, failed = [], []
        for p in list_images([str(folder)]):
            try:
                items.append((str(Path(p).relative_to(folder).with_suffix("")), load_rgb_array(p)))
            except (ValueError, OSError) as e:
                failed.append(f"{p}: {e}")
        if failed:
            warnings.warn(f"skipped {len(failed)} unreadable reference image(s): " + "; ".join(failed),
                          RuntimeWarning, stacklevel=3)
    taken: set[str] = set()
    refs = {_safe_name(str(n), taken): square(np.asarray(img), size) for n, img in items}
    if len(refs) < 2:
        raise ValueError(f"need at least 2 reference images to build tasks (support and query are split by "
                         f"content); got {len(refs)}")
    return refs


def _synthetic_folder(refs: dict[str, np.ndarray], types: list[str], levels: list[int], size: int, seed: int,
                      cache_dir) -> Path:
    digest = hashlib.sha256()
    settings = {"v": 1, "types": types, "levels": levels, "size": size, "seed": seed,
                "parameters": {t: repr(DISTORTIONS[t].levels) for t in types}}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, img in refs.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(img.tobytes()).digest())
    if cache_dir is not None:
        return Path(cache_dir)
    return cache_root() / f"meta-tasks-{digest.hexdigest()[:12]}"


def _ensure_png(path: Path, make: Callable[[], np.ndarray]) -> Path:
    """Write ``make()`` as a PNG unless the file exists (written atomically, so it is complete)."""
    if not path.is_file():
        write_png(path, make())
    return path.resolve()

