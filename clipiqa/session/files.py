"""The session folder's files and who writes them: atomic text writes, settings.json, the image list given to a
Session, and the checks of a rater's name and the blind-repeat share. The ratings themselves are in the label
store (:mod:`clipiqa.labelstore`), not here."""
from __future__ import annotations

import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..configs import invalid
from ..csvio import atomic_write
from ..imageio import list_images

SESSION_FORMAT = "clipiqa-session"
SESSION_VERSION = 2  # 2: images and ratings in labels.sqlite; 1: labels.csv path,score,content_id + state.json
DEFAULT_RATER = "default"
REPEAT_SHARE = 0.1
MAX_REPEAT_SHARE = 0.5


# --------------------------------------------------------------------------------------------- atomic files
def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file, never a mix.

    Through :func:`clipiqa.csvio.atomic_write`: a temporary file in the same folder, fsync, ``os.replace`` over
    the target, fsync of the folder; on any error the temporary file is removed and the old file is untouched;
    a temporary file left by a killed process is removed by the next write of the same file.
    """
    with atomic_write(path) as f:
        f.write(text)


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str) + "\n"


def now_text() -> str:
    """The time now, UTC, ISO 8601 to the second (how the session stamps what it writes)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict | None:
    """A JSON file of the session, or None when it does not exist; invalid JSON says what to do."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it or remove it") from None


def settings_dict(created: str, scale: Mapping[str, Any], model_name: str, weights: str | None,
                  device: str | None, checkpoint: str | None, repeat_share: float) -> dict[str, Any]:
    """settings.json's content (the image list and ratings live in the database)."""
    return {"format": SESSION_FORMAT, "version": SESSION_VERSION, "created": created, "scale": dict(scale),
            "model_name": model_name, "weights": weights, "device": device, "checkpoint": checkpoint,
            "repeat_share": repeat_share}


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` atomically to ``path`` unless the file already holds exactly it."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeError):
        pass
    atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------- images
def image_rows(images: Any) -> list[tuple[str, str]]:
    """``(absolute path, content_id)`` for the images given to ``Session(...)``: None, a table with a ``path``
    column (and optionally ``content_id``), a folder or a list of files and folders."""
    if images is None:
        return []
    if isinstance(images, pd.DataFrame):
        if "path" not in images:
            raise ValueError(f"an image table needs a 'path' column; got {list(images.columns)}")
        paths = [os.path.abspath(p) for p in images["path"]]
        cids = list(images["content_id"]) if "content_id" in images else [""] * len(paths)
        return [(p, c if isinstance(c, str) else "") for p, c in zip(paths, cids)]
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    rows: list[tuple[str, str]] = []
    for given in images:
        rows.extend(_folder_rows(given) if os.path.isdir(os.path.expanduser(os.fspath(given)))
                    else [(os.path.abspath(p), "") for p in list_images([_existing(given)])])
    return rows


class NoContentGroupsWarning(UserWarning):
    """A folder of photos without subfolders: every image is its own content (crops of one scene can then be
    split between training and testing)."""


def _existing(given: Any) -> str:
    """A user-given image file or glob pattern, ``~`` expanded; a path that names nothing is refused by name (a
    mistyped folder used to become a one-image session of a file that does not exist)."""
    path = os.path.expanduser(os.fspath(given))
    if not os.path.lexists(path) and not any(c in path for c in "*?["):
        raise FileNotFoundError(f"image folder or file {given!s} does not exist (as {os.path.abspath(path)}); "
                                "check the spelling and give the folder of your photos")
    return path


def _folder_rows(given: Any) -> list[tuple[str, str]]:
    """The images of a folder with their content: the first-level subfolder they are in (one subfolder per scene
    or product keeps its crops on one side of every split); a folder without subfolders warns."""
    folder = os.path.abspath(os.path.expanduser(os.fspath(given)))
    paths = list_images([folder])
    if not paths:
        entries = sorted(os.listdir(folder))
        seen = f"{len(entries)} entries, e.g. {', '.join(entries[:5])}" if entries else "nothing"
        raise ValueError(f"no images in {folder} (found {seen}); give the folder that holds your photos "
                         "(JPEG, PNG, TIFF, ...), searched with its subfolders")
    rows = []
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), folder)
        parts = rel.split(os.sep)
        rows.append((os.path.abspath(p), parts[0] if len(parts) > 1 else ""))
    if all(c == "" for _, c in rows) and len(rows) > 1:
        warnings.warn(NoContentGroupsWarning(
            f"{folder} has no subfolders, so each of its {len(rows)} images counts as its own content: crops or "
            "shots of one scene can land in both training and test sets, which flatters every score. Put each "
            "scene's (or product's) images in a subfolder of its own"), stacklevel=3)
    return rows


# --------------------------------------------------------------------------------------------- raters
def check_rater(name: Any) -> str:
    """A rater's name: non-empty printable text of at most 64 characters (leading/trailing spaces dropped)."""
    text = name.strip() if isinstance(name, str) else None
    ok = bool(text) and len(text) <= 64 and text.isprintable()
    if ok:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            ok = False
    if not ok:
        invalid("Session", "rater", name, "use a non-empty name of at most 64 printable characters, e.g. 'anna'")
    return text


def check_repeat_share(share: Any) -> float:
    try:
        value = float(share)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= MAX_REPEAT_SHARE:
        invalid("Session", "repeat_share", share, f"use a share between 0 (no blind repeats) and "
                f"{MAX_REPEAT_SHARE:g}; the default {REPEAT_SHARE:g} re-shows about one image in ten")
    return value
