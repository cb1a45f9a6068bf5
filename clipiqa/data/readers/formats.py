"""Reading the file formats datasets ship their labels in (CSV, Excel workbooks, MATLAB .mat files),
with every failure turned into a :class:`DatasetFormatError` that names the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.io import loadmat

from .common import DatasetFormatError, norm_key


def read_csv(path: Path, expected: str | None, **kwargs: Any) -> pd.DataFrame:
    """pandas.read_csv with parse errors turned into :class:`DatasetFormatError`."""
    try:
        return pd.read_csv(path, encoding_errors="surrogateescape", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"cannot parse as CSV ({exc})", path, expected) from exc


def read_excel_sheets(path: Path, expected: str | None) -> dict[str, pd.DataFrame]:
    """All sheets of an .xlsx workbook, read without a header row and as text."""
    try:
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except Exception as exc:  # openpyxl raises several unrelated types on bad files
        raise DatasetFormatError(f"cannot read as an Excel workbook ({exc})", path, expected) from exc


def promote_header(raw: pd.DataFrame, required: Sequence[str], source: Path,
                    expected: str | None, max_rows: int = 20) -> pd.DataFrame:
    """Find the header row (containing all ``required`` names) and use it as column names."""
    wanted = {norm_key(r) for r in required}
    for i in range(min(max_rows, len(raw))):
        row = [str(v).strip() if pd.notna(v) else "" for v in raw.iloc[i].tolist()]
        if wanted <= {norm_key(v) for v in row}:
            body = raw.iloc[i + 1:].reset_index(drop=True)
            body.columns = [v if v else f"unnamed_{j}" for j, v in enumerate(row)]
            return body.dropna(how="all")
    raise DatasetFormatError(f"no header row with columns {', '.join(required)} in the first "
                             f"{max_rows} rows", source, expected)


def mat_variable(path: Path, name: str, expected: str | None) -> np.ndarray:
    """Read variable ``name`` (case-insensitive) from a MATLAB .mat file."""
    try:
        content = loadmat(path)
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise DatasetFormatError(f"MATLAB v7.3 files are not supported; re-save with -v7 ({exc})",
                                 path, expected) from exc
    except Exception as exc:
        raise DatasetFormatError(f"cannot read as a MATLAB .mat file ({exc})", path, expected) from exc
    variables = {k.lower(): k for k in content if not k.startswith("__")}
    if name.lower() not in variables:
        found = ", ".join(sorted(variables.values())) or "none"
        raise DatasetFormatError(f"no variable {name!r} (variables found: {found})", path, expected)
    return content[variables[name.lower()]]


def _mat_text(item: Any) -> str:
    """A string from one element of a loadmat cell array / char array."""
    while isinstance(item, np.ndarray):
        if item.size == 0:
            return ""
        if item.dtype.kind in "US":
            return "".join(x.decode() if isinstance(x, bytes) else str(x) for x in item.ravel()).strip()
        item = item.ravel()[0]
    if isinstance(item, bytes):
        item = item.decode()
    return str(item).strip()


def mat_strings(array: np.ndarray) -> list[str]:
    """Flatten a loadmat cell array (or char matrix) of names into a list of str."""
    array = np.asarray(array)
    if array.dtype.kind in "US":
        return [_mat_text(np.asarray(x)) for x in array.ravel()]
    return [_mat_text(x) for x in array.ravel()]


def mat_numbers(array: np.ndarray, path: Path, name: str, expected: str | None) -> np.ndarray:
    """Flatten a numeric .mat variable to float64."""
    try:
        return np.asarray(array, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"variable {name!r} is not numeric", path, expected) from exc
