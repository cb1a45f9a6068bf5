"""The attribution viewer's images: the names it shows them under, and what a table says about each (its
distortion, level and clean reference), from a file list, a table with ``path`` or a dict of arrays."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd


def image_info(images: Any, limit: int) -> dict[str, dict]:
    """Per image name: ``distortion``, ``level`` and ``clean`` (the name of its clean reference in the same
    table, if there) when ``images`` is a table with those columns; else nothing."""
    if not isinstance(images, pd.DataFrame) or "distortion" not in images:
        return {}
    names = list(named_images(images, limit))
    table = images.head(limit)
    name_of = dict(zip(table["path"].map(os.fspath), names))
    refs = {}
    if "content_id" in table:
        refs = {r["content_id"]: name_of[os.fspath(r["path"])] for _, r in table.iterrows()
                if r["distortion"] == "reference"}
    info = {}
    for name, (_, row) in zip(names, table.iterrows()):
        level = row.get("level")
        info[name] = {"distortion": None if pd.isna(row["distortion"]) else str(row["distortion"]),
                      "level": None if level is None or pd.isna(level) else int(level),
                      "clean": refs.get(row.get("content_id")) if row["distortion"] != "reference" else None}
    return info


def named_images(images: Any, limit: int) -> dict:
    """``{name: path or array}`` from paths, a table with ``path``, or a dict (files are read later)."""
    if isinstance(images, dict):
        return {str(k): v if isinstance(v, (str, os.PathLike)) else np.asarray(v)
                for k, v in list(images.items())[:limit]}
    if isinstance(images, pd.DataFrame):
        images = list(images["path"])
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    out = {}
    for p in list(images)[:limit]:
        name = os.path.basename(os.fspath(p))
        if name in out:
            name = os.fspath(p)
        out[name] = os.fspath(p)
    return out
