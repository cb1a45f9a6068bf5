"""Expanding files, folders and glob patterns into image paths (:func:`scan_images`), reporting every
path it leaves out and why (:class:`Skipped`); nothing is opened, so a named pipe cannot block a scan."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import PathLike
from .formats import file_kind, readable_extensions


@dataclass(frozen=True)
class Skipped:
    """A path a folder scan left out, and why.

    ``reason`` is one of :data:`SKIP_REASONS`; ``detail`` says it in words (the extension, what kind of
    file it is, the folder a symlink loops back to, the operating system's error).
    """

    path: str
    reason: str
    detail: str = ""


SKIP_REASONS: dict[str, str] = {
    "unsupported_format": "not a format the installed Pillow can read",
    "not_a_file": "not a regular file",
    "broken_symlink": "a symbolic link whose target does not exist",
    "symlink_loop": "a symbolic link to a folder that contains it (a loop)",
    "already_scanned": "a folder already scanned under another path (through a symbolic link)",
    "unreadable_folder": "a folder that cannot be read",
    "unreadable": "an entry that cannot be examined",
}
"""Every :class:`Skipped` reason with its meaning."""


class SkippedFilesWarning(UserWarning):
    """A folder scan left files or folders out; the message lists them and why."""


@dataclass
class ScanResult:
    """What :func:`scan_images` found: the image paths, and everything it left out with the reason."""

    images: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def describe(self, limit: int = 5) -> list[str]:
        """One line per skip reason (with its count and the first ``limit`` paths), for people."""
        groups: dict[str, list[Skipped]] = {}
        for item in self.skipped:
            groups.setdefault(item.reason, []).append(item)
        lines = []
        for reason, items in groups.items():
            shown = "; ".join(f"{i.path} ({i.detail})" if i.detail else i.path for i in items[:limit])
            more = f"; and {len(items) - limit} more" if len(items) > limit else ""
            lines.append(f"{len(items)} {SKIP_REASONS.get(reason, reason)}: {shown}{more}")
        return lines


def scan_images(paths: PathLike | Iterable[PathLike], recursive: bool = True) -> ScanResult:
    """Expand files, folders and glob patterns into image paths, and say what was left out.

    * A folder contributes the regular files inside it (and below it when ``recursive``) whose
      extension is one of :func:`readable_extensions`, compared case-insensitively, sorted.
      Everything else inside it is reported in ``skipped``: other extensions
      (``unsupported_format``), named pipes, sockets and devices (``not_a_file``), symbolic links
      that loop back to a folder being scanned (``symlink_loop``) or reach a folder scanned
      already (``already_scanned``), and folders that cannot be read (``unreadable_folder``).
      Symbolic links to folders are followed; a broken symbolic link with an image extension is
      kept (it gets an error row downstream). Nothing is opened, so a named pipe cannot block.
    * A file named explicitly is always kept, whatever its extension, and so is a path that does
      not exist: a bad or missing file then gets an error row downstream instead of silently
      disappearing.
    * A path containing ``*``, ``?`` or ``[`` that does not exist is expanded as a glob pattern
      (matches sorted; a pattern matching nothing is kept so it is reported).

    Duplicates are removed, keeping the first occurrence; otherwise the order of ``paths`` is kept.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = ScanResult()
    seen: set[str] = set()
    extensions = readable_extensions()
    for entry in paths:
        for p in _expand(os.fspath(entry), recursive, extensions, result.skipped):
            key = os.path.normpath(p)
            if key not in seen:
                seen.add(key)
                result.images.append(p)
    return result


def list_images(paths: PathLike | Iterable[PathLike], recursive: bool = True) -> list[str]:
    """The image paths of :func:`scan_images`; when the scan left anything out, a
    :class:`SkippedFilesWarning` lists what and why (use :func:`scan_images` to get the list itself)."""
    result = scan_images(paths, recursive)
    if result.skipped:
        lines = "\n  ".join(result.describe())
        warnings.warn(SkippedFilesWarning(f"skipped {len(result.skipped)} path(s) while listing images:\n  {lines}"),
                      stacklevel=2)
    return result.images


def _expand(entry: str, recursive: bool, extensions: frozenset[str], skipped: list[Skipped]) -> list[str]:
    """Expand one user-given path (file, folder, or glob pattern)."""
    if os.path.isdir(entry):
        return _images_in_folder(entry, recursive, extensions, skipped)
    if not os.path.lexists(entry) and any(c in entry for c in "*?["):
        matches = sorted(glob.glob(entry, recursive=recursive))
        if matches:
            return [f for m in matches
                    for f in (_images_in_folder(m, recursive, extensions, skipped) if os.path.isdir(m) else [m])]
    return [entry]


def _images_in_folder(folder: str, recursive: bool, extensions: frozenset[str],
                      skipped: list[Skipped]) -> list[str]:
    """Image files in ``folder`` (and below when recursive), sorted; what is left out goes to ``skipped``."""
    found: list[str] = []
    try:
        st = os.stat(folder)
    except OSError as exc:
        skipped.append(Skipped(folder, "unreadable_folder", exc.strerror or str(exc)))
        return found
    visited = {(st.st_dev, st.st_ino): folder}
    stack = [(folder, ((st.st_dev, st.st_ino),))]
    while stack:
        current, ancestors = stack.pop()
        subfolders = _scan_one_folder(current, extensions, found, skipped)
        if not recursive:
            continue
        # real folders claim their place before symbolic links to them (so a link is what gets skipped)
        for sub in sorted(subfolders, key=os.path.islink):
            try:
                sst = os.stat(sub)
            except OSError as exc:
                skipped.append(Skipped(sub, "unreadable_folder", exc.strerror or str(exc)))
                continue
            key = (sst.st_dev, sst.st_ino)
            if key in ancestors:
                skipped.append(Skipped(sub, "symlink_loop", f"it leads back to {visited[key]}"))
            elif key in visited:
                skipped.append(Skipped(sub, "already_scanned", f"the same folder as {visited[key]}"))
            else:
                visited[key] = sub
                stack.append((sub, ancestors + (key,)))
    return sorted(found)


def _scan_one_folder(folder: str, extensions: frozenset[str], found: list[str],
                     skipped: list[Skipped]) -> list[str]:
    """Sort one folder's entries into ``found`` / ``skipped``; return its subfolders (sorted)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(Skipped(folder, "unreadable_folder", exc.strerror or str(exc)))
        return []
    subfolders = []
    for e in entries:
        ext = os.path.splitext(e.name)[1].lower()
        try:
            if e.is_dir():
                subfolders.append(e.path)
            elif e.is_file():
                if ext in extensions:
                    found.append(e.path)
                else:
                    skipped.append(Skipped(e.path, "unsupported_format",
                                           f"extension {ext}" if ext else "no extension"))
            elif e.is_symlink() and not os.path.exists(e.path):
                if ext in extensions:
                    found.append(e.path)  # kept: it gets a "missing" error row, never silently dropped
                else:
                    skipped.append(Skipped(e.path, "broken_symlink", "its target does not exist"))
            else:
                skipped.append(Skipped(e.path, "not_a_file", file_kind(e.stat().st_mode)))
        except OSError as exc:
            skipped.append(Skipped(e.path, "unreadable", exc.strerror or str(exc)))
    return subfolders
