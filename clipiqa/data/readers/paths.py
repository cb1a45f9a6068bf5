"""Case-insensitive file look-ups below a dataset root: required label files and folders, and the image
files a label table lists (every missing one is an error naming the file)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

from .common import DatasetFormatError
from .specs import DatasetSpec


class CaseInsensitiveTree:
    """Resolves relative paths below a folder ignoring case, caching directory listings."""

    def __init__(self) -> None:
        self._listings: dict[Path, dict[str, tuple[str, bool]]] = {}

    def listing(self, folder: Path) -> dict[str, tuple[str, bool]]:
        """Map lower-cased entry names of ``folder`` to (actual name, is_dir)."""
        if folder not in self._listings:
            entries: dict[str, tuple[str, bool]] = {}
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        entries.setdefault(entry.name.lower(), (entry.name, entry.is_dir()))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                pass
            self._listings[folder] = entries
        return self._listings[folder]

    def find(self, base: Path, relpath: str, want_dir: bool = False) -> Path | None:
        """Return the existing path matching ``base/relpath`` ignoring case, or None."""
        parts = PurePosixPath(str(relpath).replace("\\", "/")).parts
        current = base
        for i, part in enumerate(parts):
            hit = self.listing(current).get(part.lower())
            if hit is None:
                return None
            actual, is_dir = hit
            last = i == len(parts) - 1
            if (not last or want_dir) and not is_dir:
                return None
            if last and not want_dir and is_dir:
                return None
            current = current / actual
        return current


def _find_first(tree: CaseInsensitiveTree, root: Path, candidates: Sequence[str],
                want_dir: bool = False) -> Path | None:
    """First of ``candidates`` (relative to ``root``) that exists, ignoring case."""
    for candidate in candidates:
        hit = tree.find(root, candidate, want_dir=want_dir)
        if hit is not None:
            return hit
    return None


def require_path(tree: CaseInsensitiveTree, spec: DatasetSpec, root: Path, candidates: Sequence[str],
             what: str, want_dir: bool = False) -> Path:
    """Like :func:`_find_first` but raise :class:`DatasetFormatError` naming the missing path."""
    hit = _find_first(tree, root, candidates, want_dir=want_dir)
    if hit is None:
        others = f" (also tried: {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
        raise DatasetFormatError(f"{spec.title} {what} not found{others}", root / candidates[0],
                                 spec.layout)
    return hit


def resolve_images(tree: CaseInsensitiveTree, base: Path, names: Sequence[str], labels: Path,
                    expected: str | None) -> list[str]:
    """Absolute paths of ``names`` below ``base`` (case-insensitive); error if any is missing."""
    paths: list[str] = []
    missing: list[str] = []
    for name in names:
        hit = tree.find(base, name)
        if hit is None:
            missing.append(name)
        else:
            paths.append(os.path.abspath(hit))
    if missing:
        raise_missing(missing, len(names), base, labels, expected)
    return paths


def raise_missing(missing: Sequence[str], total: int, base: Path, labels: Path,
                   expected: str | None) -> None:
    """Raise the standard 'image files missing' error (first 5 names and the count)."""
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise DatasetFormatError(
        f"{len(missing)} of {total} image files listed here are missing under {base}: {shown}",
        labels, expected)
