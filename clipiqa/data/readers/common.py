"""Shared helpers of the dataset readers: the format error, name normalisation for case-insensitive
matching, column and number parsing that names the offending file, and image-name clean-up."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import pandas as pd


PathLike = str | os.PathLike


class DatasetFormatError(ValueError):
    """A dataset folder or label file does not have the expected layout.

    The message names the offending file, what was wrong with it and the expected layout.
    The parts are also available as ``problem``, ``path`` and ``expected``.
    """

    def __init__(self, problem: str, path: PathLike | None = None, expected: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.expected = expected
        message = problem if path is None else f"{path}: {problem}"
        if expected:
            message = f"{message}\nExpected layout: {expected}"
        super().__init__(message)


def norm_key(text: Any) -> str:
    """Normalise a name for case-insensitive matching: lower-case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(text).lower())


def find_column(table: pd.DataFrame, name: str | Sequence[str], source: Path, expected: str | None,
            required: bool = True) -> str | None:
    """Actual column of ``table`` matching ``name`` (or any of several names) ignoring case."""
    names = [name] if isinstance(name, str) else list(name)
    by_key = {norm_key(col): col for col in table.columns}
    for wanted in names:
        if norm_key(wanted) in by_key:
            return by_key[norm_key(wanted)]
    if not required:
        return None
    found = ", ".join(str(c) for c in table.columns)
    raise DatasetFormatError(f"no column {names[0]!r} (columns found: {found})", source, expected)


def parse_numbers(values: Any, source: Path, what: str, expected: str | None) -> np.ndarray:
    """Convert to float64, raising :class:`DatasetFormatError` listing unparsable entries."""
    series = pd.Series(values)
    converted = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(converted) & series.notna().to_numpy()
                         & (series.astype(str).str.strip() != "").to_numpy())
    if bad.size:
        shown = ", ".join(repr(series.iloc[i]) for i in bad[:5])
        raise DatasetFormatError(f"{bad.size} non-numeric {what} value(s), e.g. {shown}", source,
                                 expected)
    return converted


def stem(name: str) -> str:
    """File name without folders and extension."""
    return PurePosixPath(str(name).replace("\\", "/")).stem


def clean_names(values: Any) -> list[str]:
    """Image names as stripped strings; integral floats from spreadsheets lose their '.0'."""
    out = []
    for v in values:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v).strip())
    return out


def drop_blank(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Drop rows whose ``column`` is empty (trailing blank rows in spreadsheets)."""
    keep = table[column].notna() & (table[column].astype(str).str.strip() != "")
    return table.loc[keep].reset_index(drop=True)
