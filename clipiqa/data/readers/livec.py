"""LIVE In the Wild Challenge (LIVEC) reader: names and MOS in MATLAB files, the 7 practice images dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .common import DatasetFormatError
from .formats import mat_numbers, mat_strings, mat_variable
from .paths import CaseInsensitiveTree, require_path, resolve_images
from .specs import DATASETS
from .table import common_table, set_attrs


def read_livec(root: Path, tree: CaseInsensitiveTree, *, image_dir: str | None = None,
                n_practice: int = 7) -> pd.DataFrame:
    """LIVE In the Wild Challenge: names and MOS in .mat files; the first 7 are practice images."""
    spec = DATASETS["livec"]
    names_file = require_path(tree, spec, root, ["Data/AllImages_release.mat"], "image-name file")
    mos_file = require_path(tree, spec, root, ["Data/AllMOS_release.mat"], "MOS file")
    names = mat_strings(mat_variable(names_file, "AllImages_release", spec.layout))
    mos = mat_numbers(mat_variable(mos_file, "AllMOS_release", spec.layout), mos_file,
                       "AllMOS_release", spec.layout)
    if len(names) != len(mos):
        raise DatasetFormatError(f"{len(names)} image names but {len(mos)} MOS values in {mos_file}",
                                 names_file, spec.layout)
    std = _livec_std(root, tree, len(mos))
    if len(names) <= n_practice:
        raise DatasetFormatError(f"only {len(names)} entries; expected more than the {n_practice} "
                                 "practice images", names_file, spec.layout)
    names, mos = names[n_practice:], mos[n_practice:]
    std = None if std is None else std[n_practice:]
    images = require_path(tree, spec, root, [image_dir or "Images"], "image folder", want_dir=True)
    df = common_table(resolve_images(tree, images, names, names_file, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True, content_id=names,
                       mos_std=std)
    return set_attrs(df, spec, root, mos_file)


def _livec_std(root: Path, tree: CaseInsensitiveTree, n: int) -> np.ndarray | None:
    """Optional per-image rating std (Data/AllStdDev_release.mat)."""
    spec = DATASETS["livec"]
    std_file = tree.find(root, "Data/AllStdDev_release.mat")
    if std_file is None:
        return None
    std = mat_numbers(mat_variable(std_file, "AllStdDev_release", spec.layout), std_file,
                       "AllStdDev_release", spec.layout)
    if len(std) != n:
        raise DatasetFormatError(f"{len(std)} values but {n} images", std_file, spec.layout)
    return std
