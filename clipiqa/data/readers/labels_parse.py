"""Parsing a user label file into a text table: encoding, delimiter and header detection, which columns
hold path, score, std and content id, and numbers written with decimal commas."""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .common import DatasetFormatError, find_column, norm_key


LABELS_LAYOUT = ("a CSV with header 'path,score' (optional columns mos_std/std, content_id, "
                  "distortion, level), or a pyiqa-style meta-info CSV whose first column is the "
                  "image name and second the MOS (optional third column std), or pyiqa's "
                  "full-reference layout ref_name,dist_name,<score>; comma-, semicolon- or "
                  "tab-separated (detected; decimal commas are read in semicolon and tab files); "
                  "relative paths resolve against images_root or the CSV's folder and must stay "
                  "inside it")
_STD_NAMES = ("mos_std", "std", "sd", "score_std", "stddev", "dmos_std")


_DELIMITERS: tuple[tuple[str, str], ...] = (("\t", "tab"), (";", "semicolon"), (",", "comma"))
_HEADER_KEYS = frozenset(norm_key(n) for n in (
    "path", "file", "filename", "image", "image_name", "img_name", "img", "name", "dist_name",
    "dist_img", "ref_name", "ref_img", "score", "mos", "dmos", "mos_zscore", "rating", "content_id",
    "distortion", "level", *_STD_NAMES))
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".avif",
                   ".heic", ".heif", ".jp2", ".j2k", ".ppm", ".pgm", ".pnm")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def _looks_numeric(text: Any) -> bool:
    """True when ``text`` parses as a float."""
    try:
        float(str(text).strip())
    except ValueError:
        return False
    return True


def _looks_like_image(text: str) -> bool:
    """True when ``text`` looks like an image path (an image extension or a folder separator)."""
    text = str(text).strip()
    return text.lower().endswith(_IMAGE_SUFFIXES) or "/" in text or "\\" in text


def warn_user(message: str) -> None:
    """A ``UserWarning`` pointing at the caller of :func:`read_labels` (called from a helper of it)."""
    warnings.warn(message, UserWarning, stacklevel=4)


def _read_label_text(path: Path) -> str:
    """The file as text: UTF-8 (a BOM is dropped); undecodable bytes survive as surrogate escapes,
    the way Python itself decodes file names, so non-UTF-8 names resolve to their files."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def _records(text: str, delimiter: str, path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, stripped fields) of each non-blank record; quoted fields may hold the
    delimiter or line breaks."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    out, start = [], 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            fields = [f.strip() for f in fields]
            if any(fields):
                out.append((line, fields))
    except csv.Error as exc:
        raise DatasetFormatError(f"cannot parse as CSV near line {reader.line_num} ({exc})", path,
                                 LABELS_LAYOUT) from exc
    return out


def _detect_delimiter(text: str, path: Path) -> tuple[str, list[tuple[int, list[str]]]]:
    """The delimiter (tab, semicolon or comma) that splits the most records into two or more
    fields; ties go to tab, then semicolon (a semicolon file often has decimal commas)."""
    best: tuple[int, str, list] | None = None
    for delimiter, _name in _DELIMITERS:
        records = _records(text, delimiter, path)
        wide = sum(len(fields) >= 2 for _, fields in records)
        if best is None or wide > best[0]:
            best = (wide, delimiter, records)
    wide, delimiter, records = best
    if not records:
        raise DatasetFormatError("the file holds no rows", path, LABELS_LAYOUT)
    if wide == 0:
        first = records[0]
        raise DatasetFormatError(
            f"cannot find the delimiter: no line splits into two fields at a comma, a semicolon or "
            f"a tab (line {first[0]}: {first[1][0]!r}); write one 'path,score' row per image",
            path, LABELS_LAYOUT)
    return delimiter, records


def _delimiter_name(delimiter: str) -> str:
    return dict(_DELIMITERS)[delimiter]


def _unique_names(names: Sequence[str]) -> list[str]:
    """Column names made unique (``score``, ``score_2``); blank ones become ``unnamed_<i>``."""
    out: list[str] = []
    for i, name in enumerate(names):
        name = name or f"unnamed_{i}"
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name}_{k}", k + 1
        out.append(candidate)
    return out


def load_label_table(path: Path) -> tuple[pd.DataFrame, str]:
    """The label file as a text table indexed by file line number, and its delimiter.

    The first row is a header when it names a known column (path, score, mos, dmos, img_name, ...);
    else when its second field is not a number and its first does not look like an image path (a
    warning names that line); else the file has no header and the columns are path, score[, std].
    A row with more fields than the header is an error naming its line.
    """
    delimiter, records = _detect_delimiter(_read_label_text(path), path)
    line, first = records[0]
    known = {norm_key(f) for f in first} & _HEADER_KEYS
    guessed = (not known and len(first) >= 2 and not _looks_numeric(first[1])
               and not _looks_like_image(first[0]))
    if known or guessed:
        if guessed:
            warn_user(f"{path}: line {line} ({delimiter.join(first)!r}) names no known column and is "
                  "taken as the header (columns: image, score); name them 'path,score' to silence this")
        columns, body = _unique_names(first), records[1:]
        long = [(n, len(f)) for n, f in body if len(f) > len(columns)]
        if long:
            shown = ", ".join(f"line {n} has {k}" for n, k in long[:5])
            raise DatasetFormatError(
                f"{len(long)} row(s) have more fields than the header's {len(columns)} ({shown}); "
                f"quote paths that contain a {_delimiter_name(delimiter)}", path, LABELS_LAYOUT)
    else:
        body = records
        width = max(len(f) for _, f in body)
        columns = ["path", "score", *(["mos_std"] if width > 2 else []),
                   *[f"unnamed_{i}" for i in range(3, width)]]
    if len(columns) < 2:
        raise DatasetFormatError("needs at least two columns (image, score)", path, LABELS_LAYOUT)
    rows = [f + [""] * (len(columns) - len(f)) for _, f in body]
    table = pd.DataFrame(rows, columns=columns, index=[n for n, _ in body], dtype=object)
    return table, delimiter  # a header without rows is an empty table


def label_columns(table: pd.DataFrame, path: Path) -> dict[str, str | None]:
    """Decide which columns hold path, score, std and content id; also name the layout."""
    def col(names: str | Sequence[str]) -> str | None:
        return find_column(table, names, path, LABELS_LAYOUT, required=False)

    cols = list(table.columns)
    path_col, score_col = col(["path", "file", "filename"]), col(["score", "mos", "dmos"])
    if path_col is not None and score_col is not None:
        layout, content_col = "plain", col("content_id")
    elif col("dist_name") is not None and col("ref_name") is not None:
        path_col, content_col, layout = col("dist_name"), col("ref_name"), "pyiqa-fr"
        rest = [c for c in cols if c not in (path_col, content_col)]
        score_col = col(["mos", "dmos", "score"]) or (rest[0] if rest else None)
        if score_col is None:
            raise DatasetFormatError("no score column", path, LABELS_LAYOUT)
    else:
        path_col, score_col, layout, content_col = cols[0], cols[1], "pyiqa", col("content_id")
    std_col = col(_STD_NAMES)
    if std_col is None and layout == "pyiqa" and len(cols) > 2 and norm_key(cols[2]).endswith(("std", "sd")):
        std_col = cols[2]
    return {"path": path_col, "score": score_col, "std": std_col, "content": content_col,
            "distortion": col("distortion"), "level": col("level"), "layout": layout}


def label_numbers(values: pd.Series, what: str, path: Path, delimiter: str,
                   allow_missing: bool = True) -> np.ndarray:
    """Numbers of a text column (indexed by line); decimal commas are read in semicolon and tab
    files. Non-numbers (and, for scores, blanks, NaN and infinities) are errors naming the lines."""
    out = np.full(len(values), np.nan)
    bad: list[str] = []
    missing: list[str] = []
    for i, (line, value) in enumerate(values.items()):
        text = str(value).strip()
        if delimiter != "," and _DECIMAL_COMMA.fullmatch(text):
            text = text.replace(",", ".")
        if not text:
            missing.append(f"line {line}")
            continue
        try:
            number = float(text)
        except ValueError:
            bad.append(f"line {line}: {value!r}")
            continue
        if math.isnan(number) and allow_missing:
            continue
        if not math.isfinite(number):
            bad.append(f"line {line}: {value!r}")
            continue
        out[i] = number
    if bad:
        raise DatasetFormatError(f"{len(bad)} non-numeric (or infinite) {what} value(s): " + ", ".join(bad[:5])
                                 + (", ..." if len(bad) > 5 else ""), path, LABELS_LAYOUT)
    if missing and not allow_missing:
        raise DatasetFormatError(f"{len(missing)} image(s) without a {what} ("
                                 + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
                                 + ")", path, LABELS_LAYOUT)
    return out
