"""Image paths of a user label file resolve before they are trusted: relative to the images root, kept
inside it, each file listed once however its path is written, and present on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .common import DatasetFormatError
from .labels_parse import LABELS_LAYOUT
from .paths import CaseInsensitiveTree, raise_missing


def _is_within(path: str, root: str) -> bool:
    """True when the normalised absolute ``path`` lies inside the folder ``root``."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def resolve_label_paths(names: Sequence[str], lines: Sequence[int], base: Path, labels: Path, *,
                         strict_absolute: bool, allow_outside_root: bool) -> list[str]:
    """Absolute image paths, resolved before they are trusted.

    Relative names join ``base`` and ``.``/``..`` are normalised; a name outside ``base`` is refused
    unless ``allow_outside_root`` (absolute names only when ``strict_absolute``, i.e. an images
    root was given); duplicates are found on the real file (aliases, symlinks); missing files are
    an error. Each error names the lines.
    """
    root = os.path.abspath(base)
    tree = CaseInsensitiveTree()
    resolved: list[str] = []
    outside: list[str] = []
    for name, line in zip(names, lines):
        given = Path(name).expanduser()
        absolute = given.is_absolute()
        lexical = os.path.abspath(given if absolute else os.path.join(root, given))
        if (not absolute or strict_absolute) and not allow_outside_root and not _is_within(lexical, root):
            outside.append(f"line {line}: {name!r}")
        if not os.path.isfile(lexical) and not absolute and _is_within(lexical, root):
            hit = tree.find(Path(root), os.path.relpath(lexical, root))  # case-insensitive fallback
            lexical = os.path.abspath(hit) if hit is not None else lexical
        resolved.append(lexical)
    if outside:
        raise DatasetFormatError(
            f"{len(outside)} path(s) lie outside the images root {root} (" + ", ".join(outside[:5])
            + (", ..." if len(outside) > 5 else "") + "); pass allow_outside_root=True if these "
            "files are meant to be read", labels, LABELS_LAYOUT)
    _check_duplicates(resolved, names, lines, labels)
    missing = [f"{name} (line {line})" for name, line, p in zip(names, lines, resolved)
               if not os.path.isfile(p)]
    if missing:
        raise_missing(missing, len(names), base, labels, LABELS_LAYOUT)
    return resolved


def _check_duplicates(resolved: Sequence[str], names: Sequence[str], lines: Sequence[int],
                      labels: Path) -> None:
    """Each image may appear once, however its path is written (aggregate repeated ratings first)."""
    first_seen: dict[str, int] = {}
    pairs: list[str] = []
    for i, p in enumerate(resolved):
        key = os.path.normcase(os.path.realpath(p))
        if key in first_seen:
            j = first_seen[key]
            pairs.append(f"line {lines[j]} {names[j]!r} and line {lines[i]} {names[i]!r} are the same file "
                         f"{os.path.realpath(p)}")
        else:
            first_seen[key] = i
    if pairs:
        raise DatasetFormatError(f"{len(pairs)} image(s) listed more than once: " + "; ".join(pairs[:5])
                                 + ("; ..." if len(pairs) > 5 else "")
                                 + ". Aggregate repeated ratings into one row per image", labels,
                                 LABELS_LAYOUT)
