"""KonIQ-10k reader: in-the-wild photos, a scores CSV (MOS_zscore 0-100 or MOS 1-5) and the official
training/validation/test split file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .common import clean_names, drop_blank, find_column, norm_key, parse_numbers
from .formats import read_csv
from .paths import CaseInsensitiveTree, require_path, resolve_images
from .specs import DATASETS
from .table import common_table, set_attrs


_KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
_KONIQ_SETS = "koniq10k_distributions_sets.csv"


def read_koniq10k(root: Path, tree: CaseInsensitiveTree, *, score_column: str = "MOS_zscore",
                   image_dir: str | None = None) -> pd.DataFrame:
    """KonIQ-10k: scores CSV, images in 1024x768/ (or 512x384/), optional official split file.

    ``score_column`` is ``"MOS_zscore"`` (0-100, default, used by papers) or ``"MOS"`` (1-5).
    ``mos_std`` is the ``SD`` column when ``score_column="MOS"`` and NaN for MOS_zscore, because SD
    is given on the 1-5 scale.
    """
    spec = DATASETS["koniq10k"]
    if norm_key(score_column) not in ("moszscore", "mos"):
        raise ValueError(f"KonIQ-10k score_column must be 'MOS_zscore' or 'MOS', got {score_column!r}")
    use_zscore = norm_key(score_column) == "moszscore"
    labels = require_path(tree, spec, root, [_KONIQ_SCORES], "score file")
    table = read_csv(labels, spec.layout, dtype=str)
    name_col = find_column(table, "image_name", labels, spec.layout)
    table = drop_blank(table, name_col)
    score_col = find_column(table, "MOS_zscore" if use_zscore else "MOS", labels, spec.layout)
    sd_col = find_column(table, ["SD", "std"], labels, spec.layout, required=False)
    images = require_path(tree, spec, root, [image_dir] if image_dir else ["1024x768", "512x384"],
                      "image folder", want_dir=True)
    names = clean_names(table[name_col])
    mos = parse_numbers(table[score_col], labels, score_col, spec.layout)
    std = None
    if not use_zscore and sd_col is not None:
        std = parse_numbers(table[sd_col], labels, sd_col, spec.layout)
    score_range = (0.0, 100.0) if use_zscore else (1.0, 5.0)
    df = common_table(resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=score_range, higher_better=True, content_id=names, mos_std=std)
    split = _koniq_official_split(root, tree, names)
    if split is not None:
        df["split"] = split
    return set_attrs(df, spec, root, labels, score_range=score_range,
                      score_column="MOS_zscore" if use_zscore else "MOS")


def _koniq_official_split(root: Path, tree: CaseInsensitiveTree, names: Sequence[str]) -> pd.Series | None:
    """The official training/validation/test assignment, when the split file is present."""
    spec = DATASETS["koniq10k"]
    sets_file = tree.find(root, _KONIQ_SETS)
    if sets_file is None:
        return None
    sets = read_csv(sets_file, spec.layout, dtype=str)
    name_col = find_column(sets, "image_name", sets_file, spec.layout)
    set_col = find_column(sets, "set", sets_file, spec.layout)
    mapping = dict(zip((n.strip().lower() for n in sets[name_col].astype(str)),
                       sets[set_col].astype(str).str.strip().str.lower()))
    return pd.Series([mapping.get(n.lower()) for n in names], dtype=object)
