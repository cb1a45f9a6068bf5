"""Child-process targets for tests/test_labelstore_processes.py (importable by spawned children).

A child imports ``clipiqa.session`` without running ``clipiqa/__init__.py``, which loads torch and open_clip
(about 7 s of CPU per process here): the label store needs neither, and four spawned children would otherwise
spend the test's time budget importing. The parent (pytest) has the real package already.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

if "clipiqa" not in sys.modules:
    _package = types.ModuleType("clipiqa")
    _package.__path__ = [str(Path(__file__).resolve().parents[1] / "clipiqa")]
    sys.modules["clipiqa"] = _package

from clipiqa.session import Session  # noqa: E402


def rate_many(folder: str, rater: str, items: list[tuple[str, float]], barrier=None) -> None:
    """Open the session as ``rater`` and rate ``items`` as fast as possible (after all children are ready)."""
    session = Session(folder) if rater == "default" else Session(folder, rater=rater)
    if barrier is not None:
        barrier.wait(60)
    for path, score in items:
        session.label(path, score)


def rate_until_killed(folder: str, items: list[tuple[str, float]], conn) -> None:
    """Rate the items not rated yet, one after the other; report each one on ``conn`` once ``label`` returned
    (the rating is committed then). The parent kills this process at a random moment."""
    session = Session(folder)
    done = set(session.my_labels)
    conn.send(("ready", os.getpid()))
    for path, score in items:
        if path not in done:
            session.label(path, score)
            conn.send((path, score))
    conn.send(("finished", None))
