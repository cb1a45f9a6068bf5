"""Seeded, group-aware train/test splits and few-shot draws for the evaluation protocol.

The protocol (docs/design.md, 'Evaluation protocol'): 10 seeded 80/20 splits, by reference content
for synthetic datasets (LIVE, CSIQ, TID2013, KADID-10k) and by image for in-the-wild ones; N labelled images are drawn
from the 80 % pool only. Which of the two is decided from the data alone: by ``content_id``
whenever a content groups several rows, by image otherwise — never from ``DataFrame.attrs``,
which pandas drops in CSV round trips, ``merge`` and ``concat``.

Everything here is deterministic from an integer seed and independent of the row order of the
input table: the same seed and the same set of images give the same split, and
:func:`split_hash` gives a short fingerprint that checkpoints and reports record. Image names
(for image splits, few-shot draws and hashes) are relative to ``attrs["root"]`` when the table
still has it, else to the images' common folder: the split itself is the same either way, but
the hash of a table whose root differs from its images' common folder (e.g. KADID-10k's
``images/``) changes when ``attrs`` are lost.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["Split", "few_shot", "has_content_groups", "holdout", "split_dataset", "split_hash",
           "standard_splits"]

# Independent random streams for the different draws made from one seed.
_FEW_SHOT_STREAM = 1
_HOLDOUT_STREAM = 2


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One train/test split of a labelled table.

    ``by`` is ``"content"`` (no ``content_id`` on both sides) or ``"image"``; ``hash`` is
    :func:`split_hash` of the split.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    seed: int
    by: str
    hash: str

    def __repr__(self) -> str:
        return (f"Split(seed={self.seed}, by={self.by!r}, train={len(self.train)}, "
                f"test={len(self.test)}, hash={self.hash!r})")


def _check_seed(seed: int) -> int:
    """A non-negative integer seed."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def has_content_groups(df: pd.DataFrame) -> bool:
    """True when some ``content_id`` groups several rows (then splits must keep contents apart).

    Decided from the column alone, never from ``df.attrs`` (lost in CSV round trips, merges and
    concats). Missing content ids count as one content per image.
    """
    if "content_id" not in df.columns:
        return False
    ids = df["content_id"]
    named = ids[ids.notna()].astype(str)
    return bool(named.duplicated().any())


def _resolve_by(df: pd.DataFrame, by: str | None) -> str:
    """``by`` or, when None, "content" when a content groups several rows and "image" otherwise."""
    if by is None:
        by = "content" if has_content_groups(df) else "image"
    if by not in ("content", "image"):
        raise ValueError(f"by must be 'content', 'image' or None, got {by!r}")
    if by == "content" and "content_id" not in df.columns:
        raise ValueError("by='content' needs a 'content_id' column")
    return by


def _relative_names(paths: Sequence[str], root: str | None) -> list[str]:
    """Image paths relative to ``root`` (or to their common folder), with '/' separators.

    Relative names keep hashes and orderings stable across machines.
    """
    paths = [str(p) for p in paths]
    if not paths:
        return []
    if root is None or not all(_is_under(p, root) for p in paths):
        folders = [os.path.dirname(p) for p in paths]
        try:
            root = os.path.commonpath(folders) if all(folders) else ""
        except ValueError:  # mixed absolute/relative or drives
            root = ""
    if not root:
        return [p.replace("\\", "/") for p in paths]
    return [os.path.relpath(p, root).replace("\\", "/") for p in paths]


def _is_under(path: str, root: str) -> bool:
    """True when ``path`` lies inside the folder ``root``."""
    try:
        return os.path.commonpath([path, root]) == os.path.normpath(root)
    except ValueError:
        return False


def _image_names(df: pd.DataFrame, root: str | None = None) -> list[str]:
    """Machine-independent names of the images of ``df``."""
    if "path" not in df.columns:
        raise ValueError("the table needs a 'path' column")
    return _relative_names(df["path"].tolist(), root if root is not None else df.attrs.get("root"))


def _group_keys(df: pd.DataFrame, by: str) -> np.ndarray:
    """One group key per row: the content id, or the image's relative name."""
    if by == "image":
        return np.asarray(_image_names(df), dtype=object)
    ids = df["content_id"]
    keys = np.asarray(["content:" + str(c) for c in ids], dtype=object)
    missing = ids.isna().to_numpy()
    if missing.any():  # a row without a content id is its own group, keyed by its image
        names = np.asarray(_image_names(df), dtype=object)
        keys[missing] = ["image:" + n for n in names[missing]]
    return keys


def _first_part_mask(keys: np.ndarray, frac_first: float, rng: np.random.Generator) -> np.ndarray:
    """Rows whose group falls in the first ``frac_first`` of a seeded permutation of sorted groups.

    At least one group goes to each side.
    """
    groups = np.array(sorted(set(keys.tolist())), dtype=object)
    if len(groups) < 2:
        raise ValueError(f"need at least 2 groups to split, found {len(groups)}")
    n_first = int(np.floor(frac_first * len(groups) + 0.5))
    n_first = min(max(n_first, 1), len(groups) - 1)
    chosen = set(groups[rng.permutation(len(groups))[:n_first]].tolist())
    return np.fromiter((k in chosen for k in keys), dtype=bool, count=len(keys))


def _take(df: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """Rows of ``df`` selected by a boolean mask, keeping index and attrs."""
    part = df.loc[mask].copy()
    part.attrs = dict(df.attrs)
    return part


def split_dataset(df: pd.DataFrame, seed: int, train_frac: float = 0.8, by: str | None = None) -> Split:
    """Split ``df`` into train and test parts, group-aware and seeded.

    ``by=None`` picks ``"content"`` when some ``content_id`` groups several rows (no reference
    image on both sides; see :func:`has_content_groups`) and ``"image"`` otherwise; it never reads
    ``df.attrs``, so the choice survives CSV round trips, merges and concats. Groups are sorted
    before a ``numpy.random.default_rng(seed)`` permutation, so the split depends only on the seed and
    the set of images, not on row order. ``train_frac`` is the fraction of *groups* in train
    (rounded, at least one group per side). Rows keep their original index and order.
    """
    seed = _check_seed(seed)
    if not 0.0 < float(train_frac) < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac!r}")
    by = _resolve_by(df, by)
    train_mask = _first_part_mask(_group_keys(df, by), float(train_frac), np.random.default_rng(seed))
    train, test = _take(df, train_mask), _take(df, ~train_mask)
    return Split(train=train, test=test, seed=seed, by=by, hash=split_hash((train, test)))


def standard_splits(df: pd.DataFrame, n_splits: int = 10, seed: int = 0, train_frac: float = 0.8,
                    by: str | None = None) -> list[Split]:
    """The protocol's splits: ``n_splits`` splits with seeds ``seed .. seed + n_splits - 1``."""
    seed = _check_seed(seed)
    if isinstance(n_splits, bool) or not isinstance(n_splits, Integral) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}")
    return [split_dataset(df, seed + i, train_frac=train_frac, by=by) for i in range(int(n_splits))]


def _shot_count(n: int | float, pool: int) -> int:
    """Number of images to draw: an int count, or a float fraction in (0, 1] of the pool."""
    if isinstance(n, bool):
        raise TypeError("n must be an int count or a float fraction, not a bool")
    if isinstance(n, Integral):
        count = int(n)
    elif isinstance(n, Real):
        if not 0.0 < float(n) <= 1.0:
            raise ValueError(f"a float n is a fraction of the training pool and must be in (0, 1], "
                             f"got {n!r}; pass an int for a count")
        count = max(1, int(np.floor(float(n) * pool + 0.5)))
    else:
        raise TypeError(f"n must be an int or a float, got {type(n).__name__}")
    if count < 1:
        raise ValueError(f"n must be at least 1, got {n!r}")
    if count > pool:
        raise ValueError(f"asked for {count} labelled images but the training pool has only {pool}; "
                         "use a smaller n or a fraction")
    return count


def few_shot(train: pd.DataFrame, n: int | float, seed: int) -> pd.DataFrame:
    """Draw ``n`` labelled images from ``train`` (and only from it), seeded.

    ``n`` is an int count or a float fraction in (0, 1] of ``train``. The draw is a seeded
    permutation of the images sorted by name, so it does not depend on row order, and draws
    with the same seed are nested (the 25 images are among the 50). Rows keep their index and
    original order. Asking for more images than ``train`` has is a ``ValueError``.
    """
    seed = _check_seed(seed)
    count = _shot_count(n, len(train))
    names = np.asarray(_image_names(train), dtype=object)
    order = np.argsort(names, kind="stable")
    rng = np.random.default_rng((seed, _FEW_SHOT_STREAM))
    picked = order[rng.permutation(len(order))[:count]]
    mask = np.zeros(len(train), dtype=bool)
    mask[picked] = True
    return _take(train, mask)


def holdout(df: pd.DataFrame, frac: float = 0.2, seed: int = 0,
            by: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a validation part off a labelled set, group-aware; returns ``(fit, val)``.

    ``frac`` is the fraction of groups (content groups when a content groups several rows, else
    images; ``by`` as in :func:`split_dataset`) that go to ``val``, rounded, at least one group
    per side. Used by the ``val`` model-selection mode.
    """
    seed = _check_seed(seed)
    if not 0.0 < float(frac) < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac!r}")
    by = _resolve_by(df, by)
    rng = np.random.default_rng((seed, _HOLDOUT_STREAM))
    val_mask = _first_part_mask(_group_keys(df, by), float(frac), rng)
    return _take(df, ~val_mask), _take(df, val_mask)


def split_hash(split_or_df: Split | pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]) -> str:
    """Stable 16-hex-digit sha256 fingerprint of a split (or of one table).

    Hashes the sorted image names of each side, relative to ``attrs["root"]`` (or to the
    images' common folder), so it is the same on every machine and for any row order.
    """
    if isinstance(split_or_df, Split):
        sides = {"train": split_or_df.train, "test": split_or_df.test}
    elif isinstance(split_or_df, pd.DataFrame):
        sides = {"images": split_or_df}
    elif isinstance(split_or_df, tuple) and len(split_or_df) == 2:
        sides = {"train": split_or_df[0], "test": split_or_df[1]}
    else:
        raise TypeError(f"expected a Split, a DataFrame or a (train, test) tuple, "
                        f"got {type(split_or_df).__name__}")
    root = next((t.attrs.get("root") for t in sides.values() if t.attrs.get("root")), None)
    all_paths = [p for t in sides.values() for p in t["path"].tolist()]
    names = iter(_relative_names(all_paths, root))
    digest = hashlib.sha256()
    for label, table in sides.items():
        side = sorted(next(names) for _ in range(len(table)))
        digest.update(f"{label}\n".encode())
        digest.update("\n".join(side).encode())
        digest.update(b"\n\x00")
    return digest.hexdigest()[:16]
