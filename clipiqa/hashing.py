"""SHA-256 of a file's bytes, read in 1 MiB chunks: what checkpoints, label files and the line log are known by.

(``clipiqa/onnx_runner.py`` keeps its own copy: it is shipped alone beside ``score_onnx.py``, without clipiqa.)
"""
from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
