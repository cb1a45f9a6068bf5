"""Readers for the reference + distorted datasets whose file names carry reference, type and level
(KADID-10k ``Ixx_yy_zz.png``, TID2013 ``iXX_YY_L.bmp``); both are higher-better and grouped by reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .common import DatasetFormatError, clean_names, drop_blank, find_column, parse_numbers, stem
from .formats import read_csv
from .paths import CaseInsensitiveTree, require_path, resolve_images
from .specs import DATASETS, DatasetSpec
from .table import common_table, set_attrs


_KADID_NAME = re.compile(r"^i?(\d+)_(\d+)_(\d+)$", re.IGNORECASE)


def read_kadid10k(root: Path, tree: CaseInsensitiveTree, *, image_dir: str | None = None) -> pd.DataFrame:
    """KADID-10k: dmos.csv (dist_img, ref_img, dmos, var); 'dmos' is higher-better on 1-5."""
    spec = DATASETS["kadid10k"]
    labels = require_path(tree, spec, root, ["dmos.csv"], "label file")
    table = read_csv(labels, spec.layout, dtype=str)
    dist_col = find_column(table, "dist_img", labels, spec.layout)
    table = drop_blank(table, dist_col)
    ref_col = find_column(table, "ref_img", labels, spec.layout)
    score_col = find_column(table, "dmos", labels, spec.layout)
    var_col = find_column(table, "var", labels, spec.layout, required=False)
    names = clean_names(table[dist_col])
    types, levels = _parse_type_level(names, _KADID_NAME, labels, spec, "Ixx_yy_zz.png")
    mos = parse_numbers(table[score_col], labels, score_col, spec.layout)
    std = None
    if var_col is not None:
        std = np.sqrt(np.clip(parse_numbers(table[var_col], labels, var_col, spec.layout), 0, None))
    images = require_path(tree, spec, root, [image_dir or "images"], "image folder", want_dir=True)
    df = common_table(resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True,
                       content_id=[stem(r) for r in clean_names(table[ref_col])], mos_std=std,
                       distortion=types, level=levels)
    return set_attrs(df, spec, root, labels)


def _parse_type_level(names: Sequence[str], pattern: re.Pattern, labels: Path, spec: DatasetSpec,
                      example: str) -> tuple[list[str], list[int]]:
    """Two-digit distortion type and integer level from names like ``I01_02_3.png``."""
    types, levels = [], []
    for name in names:
        match = pattern.match(stem(name))
        if match is None:
            raise DatasetFormatError(f"image name {name!r} does not follow the pattern {example}",
                                     labels, spec.layout)
        types.append(f"{int(match.group(2)):02d}")
        levels.append(int(match.group(3)))
    return types, levels


_TID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)$", re.IGNORECASE)


def read_tid2013(root: Path, tree: CaseInsensitiveTree, *, image_dir: str | None = None) -> pd.DataFrame:
    """TID2013: 'mos name' lines; names iXX_YY_L.bmp (the i may be upper-case); MOS 0-9."""
    spec = DATASETS["tid2013"]
    labels = require_path(tree, spec, root, ["mos_with_names.txt"], "label file")
    mos, names = _read_mos_name_lines(labels, spec)
    types, levels = _parse_type_level(names, _TID_NAME, labels, spec, "iXX_YY_L.bmp")
    refs = [f"i{int(_TID_NAME.match(stem(n)).group(1)):02d}" for n in names]
    std = _tid_std(root, tree, len(names))
    images = require_path(tree, spec, root, [image_dir or "distorted_images"], "image folder",
                      want_dir=True)
    df = common_table(resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True, content_id=refs,
                       mos_std=std, distortion=types, level=levels)
    return set_attrs(df, spec, root, labels)


def _read_mos_name_lines(labels: Path, spec: DatasetSpec) -> tuple[np.ndarray, list[str]]:
    """Parse lines '<score> <name>' (blank lines ignored)."""
    scores, names = [], []
    text = labels.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 2:
                raise ValueError
            scores.append(float(parts[0]))
        except ValueError:
            raise DatasetFormatError(f"line {number} is not '<mos> <name>': {line.strip()!r}",
                                     labels, spec.layout) from None
        names.append(parts[1])
    if not names:
        raise DatasetFormatError("no entries", labels, spec.layout)
    return np.asarray(scores, dtype=float), names


def _tid_std(root: Path, tree: CaseInsensitiveTree, n: int) -> np.ndarray | None:
    """Optional mos_std.txt (one value per line, same order as mos_with_names.txt)."""
    spec = DATASETS["tid2013"]
    std_file = tree.find(root, "mos_std.txt")
    if std_file is None:
        return None
    values = [v for v in std_file.read_text(encoding="utf-8", errors="replace").split()]
    std = parse_numbers(values, std_file, "mos_std", spec.layout)
    if len(std) != n:
        raise DatasetFormatError(f"{len(std)} values but {n} entries in mos_with_names.txt",
                                 std_file, spec.layout)
    return std
