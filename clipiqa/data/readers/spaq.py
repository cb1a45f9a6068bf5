"""SPAQ reader: smartphone photos under ``TestImage/`` and a MOS spreadsheet (0-100, higher is better)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import DatasetFormatError, clean_names, drop_blank, find_column, parse_numbers
from .formats import promote_header, read_excel_sheets
from .paths import CaseInsensitiveTree, require_path, resolve_images
from .specs import DATASETS, DatasetSpec
from .table import common_table, set_attrs


_SPAQ_LABELS = "Annotations/MOS and Image attribute scores.xlsx"


def read_spaq(root: Path, tree: CaseInsensitiveTree, *, image_dir: str | None = None) -> pd.DataFrame:
    """SPAQ: MOS spreadsheet under Annotations/ and photos under TestImage/ (resize before use)."""
    spec = DATASETS["spaq"]
    labels = require_path(tree, spec, root, [_SPAQ_LABELS], "MOS spreadsheet")
    table = _spaq_sheet(labels, spec)
    name_col = find_column(table, "Image name", labels, spec.layout)
    table = drop_blank(table, name_col)
    names = clean_names(table[name_col])
    mos_col = find_column(table, "MOS", labels, spec.layout)
    mos = parse_numbers(table[mos_col], labels, mos_col, spec.layout)
    images = require_path(tree, spec, root, [image_dir or "TestImage"], "image folder", want_dir=True)
    df = common_table(resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True, content_id=names)
    return set_attrs(df, spec, root, labels)


def _spaq_sheet(labels: Path, spec: DatasetSpec) -> pd.DataFrame:
    """The first sheet of the SPAQ workbook that has 'Image name' and 'MOS' columns."""
    sheets = read_excel_sheets(labels, spec.layout)
    for raw in sheets.values():
        try:
            return promote_header(raw, ("Image name", "MOS"), labels, spec.layout)
        except DatasetFormatError:
            continue
    raise DatasetFormatError(f"no sheet with columns 'Image name' and 'MOS' (sheets: "
                             f"{', '.join(sheets)})", labels, spec.layout)
