"""Readers for the DMOS datasets where lower is better: CSIQ (a DMOS table and ``dst_imgs/<type>/`` files)
and LIVE release 2 (realigned DMOS in MATLAB files, entries in a fixed folder order)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .common import DatasetFormatError, clean_names, drop_blank, find_column, norm_key, parse_numbers, stem
from .formats import mat_numbers, mat_strings, mat_variable, promote_header, read_csv, read_excel_sheets
from .paths import CaseInsensitiveTree, raise_missing, require_path, resolve_images
from .specs import DATASETS, DatasetSpec
from .table import common_table, set_attrs


_CSIQ_LABEL_FILES = ("csiq.DMOS.xlsx", "csiq.DMOS.csv", "csiq.DMOS.txt", "csiq_dmos.csv",
                     "csiq_dmos.txt")
_CSIQ_COLUMNS = ("image", "dst_type", "dst_lev", "dmos")
_CSIQ_TYPES = {
    "noise": "awgn", "awgn": "awgn", "whitenoise": "awgn", "wn": "awgn",
    "jpeg": "jpeg", "jpg": "jpeg",
    "jpeg2000": "jpeg2000", "jp2k": "jpeg2000", "jpeg2k": "jpeg2000", "jp2": "jpeg2000",
    "fnoise": "fnoise", "pinknoise": "fnoise", "1fnoise": "fnoise", "pink": "fnoise",
    "blur": "blur", "gblur": "blur", "gaussianblur": "blur",
    "contrast": "contrast", "contrastchange": "contrast",
}


def _csiq_type(text: Any) -> str:
    """Canonical CSIQ distortion type (awgn, jpeg, jpeg2000, fnoise, blur, contrast)."""
    key = norm_key(text)
    return _CSIQ_TYPES.get(key, key)


def read_csiq(root: Path, tree: CaseInsensitiveTree) -> pd.DataFrame:
    """CSIQ: DMOS table (xlsx sheet all_by_image, or a text variant) and dst_imgs/<type>/ files."""
    spec = DATASETS["csiq"]
    labels = require_path(tree, spec, root, _CSIQ_LABEL_FILES, "DMOS table")
    table = _read_csiq_table(labels, spec)
    image_col = find_column(table, "image", labels, spec.layout)
    table = drop_blank(table, image_col)
    refs = clean_names(table[image_col])
    types = [_csiq_type(t) for t in table[find_column(table, "dst_type", labels, spec.layout)]]
    lev_col = find_column(table, "dst_lev", labels, spec.layout)
    levels = parse_numbers(table[lev_col], labels, lev_col, spec.layout).astype(int)
    dmos = parse_numbers(table[find_column(table, "dmos", labels, spec.layout)], labels, "dmos", spec.layout)
    std_col = find_column(table, "dmos_std", labels, spec.layout, required=False)
    std = None if std_col is None else parse_numbers(table[std_col], labels, std_col, spec.layout)
    images = require_path(tree, spec, root, ["dst_imgs"], "image folder", want_dir=True)
    paths = _match_csiq_files(images, refs, types, levels, labels, spec)
    df = common_table(paths, dmos, score_range=spec.score_range, higher_better=False,
                       content_id=refs, mos_std=std, distortion=types, level=levels)
    return set_attrs(df, spec, root, labels)


def _read_csiq_table(labels: Path, spec: DatasetSpec) -> pd.DataFrame:
    """The CSIQ DMOS table from the xlsx sheet ``all_by_image`` or a delimited text file."""
    if labels.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
        sheets = read_excel_sheets(labels, spec.layout)
        by_name = {norm_key(k): k for k in sheets}
        if "allbyimage" not in by_name:
            raise DatasetFormatError(f"no sheet 'all_by_image' (sheets: {', '.join(sheets)})",
                                     labels, spec.layout)
        raw = sheets[by_name["allbyimage"]]
    else:
        raw = _read_delimited_text(labels, spec)
    return promote_header(raw, _CSIQ_COLUMNS, labels, spec.layout)


def _read_delimited_text(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """A comma/tab/semicolon-separated table (else whitespace), read as text without header."""
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip()), "")
    sep = next((s for s in ("\t", ",", ";") if s in first), r"\s+")
    return read_csv(path, spec.layout, sep=sep, header=None, dtype=str, skipinitialspace=True,
                     engine="python", skip_blank_lines=True)


def _match_csiq_files(images: Path, refs: Sequence[str], types: Sequence[str],
                      levels: Sequence[int], labels: Path, spec: DatasetSpec) -> list[str]:
    """Find dst_imgs/<type>/<ref>.<TAG>.<level>.<ext> for each table row."""
    index: dict[tuple[str, str, int], str] = {}
    for folder, _dirs, files in os.walk(images):
        for file in files:
            parts = file.split(".")
            if len(parts) < 4 or not parts[-2].strip().isdigit():
                continue
            tag = _csiq_type(parts[-3])
            if tag not in _CSIQ_TYPES.values():
                tag = _csiq_type(os.path.basename(folder))
            key = (".".join(parts[:-3]).lower(), tag, int(parts[-2]))
            index.setdefault(key, os.path.abspath(os.path.join(folder, file)))
    paths, missing = [], []
    for ref, kind, lev in zip(refs, types, levels):
        hit = index.get((ref.lower(), kind, int(lev)))
        if hit is None:
            missing.append(f"{kind}/{ref}.{kind}.{lev}.png")
        else:
            paths.append(hit)
    if missing:
        raise_missing(missing, len(refs), images, labels, spec.layout)
    return paths


_LIVE_FOLDERS: tuple[tuple[str, int], ...] = (
    ("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def read_live(root: Path, tree: CaseInsensitiveTree) -> pd.DataFrame:
    """LIVE release 2: realigned DMOS in entry order jp2k, jpeg, wn, gblur, fastfading; orgs dropped."""
    spec = DATASETS["live"]
    dmos_file = require_path(tree, spec, root, ["dmos_realigned.mat"], "DMOS file")
    refs_file = require_path(tree, spec, root, ["refnames_all.mat"], "reference-name file")
    dmos = mat_numbers(mat_variable(dmos_file, "dmos_new", spec.layout), dmos_file, "dmos_new",
                        spec.layout)
    orgs = mat_numbers(mat_variable(dmos_file, "orgs", spec.layout), dmos_file, "orgs", spec.layout)
    refs = mat_strings(mat_variable(refs_file, "refnames_all", spec.layout))
    std = _live_std(dmos_file, len(dmos))
    total = sum(n for _, n in _LIVE_FOLDERS)
    for what, values, source in (("dmos_new", dmos, dmos_file), ("orgs", orgs, dmos_file),
                                 ("refnames_all", refs, refs_file)):
        if len(values) != total:
            raise DatasetFormatError(f"{what} has {len(values)} entries, expected {total}", source,
                                     spec.layout)
    folders, relnames = _live_entries()
    keep = np.flatnonzero(orgs != 1)
    paths = resolve_images(tree, root, [relnames[i] for i in keep], dmos_file, spec.layout)
    df = common_table(paths, dmos[keep], score_range=spec.score_range, higher_better=False,
                       content_id=[stem(refs[i]) for i in keep],
                       mos_std=None if std is None else std[keep],
                       distortion=[folders[i] for i in keep], level=None)
    return set_attrs(df, spec, root, dmos_file)


def _live_entries() -> tuple[list[str], list[str]]:
    """Folder and relative file name (``<folder>/img<k>.bmp``) of each of the 982 entries."""
    folders, relnames = [], []
    for folder, count in _LIVE_FOLDERS:
        for k in range(1, count + 1):
            folders.append(folder)
            relnames.append(f"{folder}/img{k}.bmp")
    return folders, relnames


def _live_std(dmos_file: Path, n: int) -> np.ndarray | None:
    """Optional ``dmos_std`` variable of dmos_realigned.mat."""
    spec = DATASETS["live"]
    try:
        std = mat_numbers(mat_variable(dmos_file, "dmos_std", spec.layout), dmos_file,
                           "dmos_std", spec.layout)
    except DatasetFormatError:
        return None
    return std if len(std) == n else None
