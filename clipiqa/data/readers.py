"""Readers for IQA datasets on local disk, returning one common table.

Every reader returns a :class:`pandas.DataFrame` with exactly these columns (KonIQ-10k adds
``split`` when its official split file is present):

``path``
    absolute path of the image file (the file exists; missing files are an error).
``mos``
    the raw score as published (MOS or DMOS, in the dataset's own units).
``q``
    the score mapped to [0, 1], higher = better, from the dataset's *declared* score range and
    direction (never a min-max of the data), see :func:`normalize_scores`.
``mos_std``
    standard deviation of the ratings in ``mos`` units, or NaN when unknown.
``content_id``
    the reference group: the pristine source image for synthetic datasets, the image name itself
    for in-the-wild ones. Splits keep each group on one side.
``distortion``
    distortion type (two-digit type code for KADID-10k and TID2013, see
    ``DATASETS[name].distortion_names``; folder/type name for LIVE and CSIQ), or None.
``level``
    distortion level (int), or NaN when the dataset has none.

``df.attrs`` holds ``dataset`` (canonical name), ``score_range`` (lo, hi), ``higher_better``,
``synthetic`` (True for reference-content datasets), ``score_column``, ``root`` and
``labels_file``. They are information only: pandas drops ``attrs`` in CSV round trips, merges
and concats, so nothing that decides a number depends on them (splits group by ``content_id``,
:func:`per_subset_minmax` reads the direction from ``q``).

All file, folder, column, sheet and variable look-ups are case-insensitive.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "COMMON_COLUMNS",
    "DATASETS",
    "DatasetFormatError",
    "DatasetSpec",
    "LabelScaleError",
    "canonical_name",
    "normalize_scores",
    "per_subset_minmax",
    "read_dataset",
    "read_labels",
]

COMMON_COLUMNS: tuple[str, ...] = ("path", "mos", "q", "mos_std", "content_id", "distortion", "level")

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


@dataclass(frozen=True)
class DatasetSpec:
    """Short description of a supported dataset (score scale, direction, layout)."""

    name: str
    title: str
    score_range: tuple[float, float]
    higher_better: bool
    synthetic: bool
    score_column: str
    layout: str
    description: str
    aliases: tuple[str, ...] = ()
    distortion_names: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """Dict-style access (``spec["score_range"]``) for convenience."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


_KADID_TYPES = {
    "01": "gaussian blur", "02": "lens blur", "03": "motion blur", "04": "color diffusion",
    "05": "color shift", "06": "color quantization", "07": "color saturation 1",
    "08": "color saturation 2", "09": "jpeg2000", "10": "jpeg", "11": "white noise",
    "12": "white noise in color component", "13": "impulse noise", "14": "multiplicative noise",
    "15": "denoise", "16": "brighten", "17": "darken", "18": "mean shift", "19": "jitter",
    "20": "non-eccentricity patch", "21": "pixelate", "22": "quantization", "23": "color block",
    "24": "high sharpen", "25": "contrast change",
}

_TID_TYPES = {
    "01": "additive gaussian noise", "02": "additive noise in color components",
    "03": "spatially correlated noise", "04": "masked noise", "05": "high frequency noise",
    "06": "impulse noise", "07": "quantization noise", "08": "gaussian blur",
    "09": "image denoising", "10": "jpeg compression", "11": "jpeg2000 compression",
    "12": "jpeg transmission errors", "13": "jpeg2000 transmission errors",
    "14": "non eccentricity pattern noise", "15": "local block-wise distortions",
    "16": "mean shift", "17": "contrast change", "18": "change of color saturation",
    "19": "multiplicative gaussian noise", "20": "comfort noise",
    "21": "lossy compression of noisy images", "22": "color quantization with dither",
    "23": "chromatic aberrations", "24": "sparse sampling and reconstruction",
}

DATASETS: dict[str, DatasetSpec] = {
    "koniq10k": DatasetSpec(
        name="koniq10k", title="KonIQ-10k", score_range=(0.0, 100.0), higher_better=True,
        synthetic=False, score_column="MOS_zscore",
        layout=("<root>/koniq10k_scores_and_distributions.csv with columns image_name, c1..c5, "
                "c_total, MOS, SD, MOS_zscore; images under <root>/1024x768/ (or 512x384/); "
                "optional <root>/koniq10k_distributions_sets.csv with columns image_name, set "
                "(training/validation/test)"),
        description="10,073 in-the-wild photos; MOS_zscore 0-100 (used by papers), MOS 1-5; higher is better.",
        aliases=("koniq", "koniq10k"),
    ),
    "livec": DatasetSpec(
        name="livec", title="LIVE In the Wild Challenge (LIVEC)", score_range=(0.0, 100.0),
        higher_better=True, synthetic=False, score_column="AllMOS_release",
        layout=("<root>/Data/AllImages_release.mat (variable AllImages_release, image names), "
                "<root>/Data/AllMOS_release.mat (variable AllMOS_release), optional "
                "<root>/Data/AllStdDev_release.mat; images under <root>/Images/; the first 7 "
                "entries are practice images and are dropped"),
        description="1,162 in-the-wild photos (1,169 minus 7 practice images); MOS 0-100, higher is better.",
        aliases=("livec", "clive", "livechallenge", "livewild", "liveitw"),
    ),
    "kadid10k": DatasetSpec(
        name="kadid10k", title="KADID-10k", score_range=(1.0, 5.0), higher_better=True,
        synthetic=True, score_column="dmos",
        layout=("<root>/dmos.csv with columns dist_img, ref_img, dmos, var; images "
                "<root>/images/Ixx_yy_zz.png (reference, type 01-25, level 01-05)"),
        description="10,125 images, 81 references x 25 types x 5 levels; 'dmos' 1-5 but higher is better.",
        aliases=("kadid", "kadid10k"),
        distortion_names=_KADID_TYPES,
    ),
    "tid2013": DatasetSpec(
        name="tid2013", title="TID2013", score_range=(0.0, 9.0), higher_better=True,
        synthetic=True, score_column="mos",
        layout=("<root>/mos_with_names.txt with lines '<mos> <name>' (e.g. '5.51429 i01_01_1.bmp'), "
                "optional <root>/mos_std.txt (one value per line, same order); images "
                "<root>/distorted_images/iXX_YY_L.bmp (reference XX, type YY, level L; the "
                "leading i may be upper-case)"),
        description="3,000 images, 25 references x 24 types x 5 levels; MOS 0-9, higher is better.",
        aliases=("tid", "tid2013"),
        distortion_names=_TID_TYPES,
    ),
    "csiq": DatasetSpec(
        name="csiq", title="CSIQ", score_range=(0.0, 1.0), higher_better=False,
        synthetic=True, score_column="dmos",
        layout=("<root>/csiq.DMOS.xlsx with sheet all_by_image and columns image, dst_idx, "
                "dst_type, dst_lev, dmos_std, dmos (header may sit below title rows), or a text "
                "variant <root>/csiq.DMOS.csv|.txt (also csiq_dmos.csv|.txt): a comma-, tab- or "
                "semicolon-separated table with the same header (whitespace-separated only when no "
                "value contains a space); images <root>/dst_imgs/<type>/<ref>.<TAG>.<level>.png"),
        description="866 images, 30 references x 6 types x 4-5 levels; DMOS 0-1, lower is better.",
        aliases=("csiq",),
    ),
    "live": DatasetSpec(
        name="live", title="LIVE Image Quality Assessment Database, release 2",
        score_range=(0.0, 100.0), higher_better=False, synthetic=True, score_column="dmos_new",
        layout=("<root>/dmos_realigned.mat (variables dmos_new, orgs, optional dmos_std), "
                "<root>/refnames_all.mat (variable refnames_all); folders jp2k, jpeg, wn, gblur, "
                "fastfading holding img<k>.bmp (k 1-based within the folder); the 982 entries run "
                "jp2k 227, jpeg 233, wn 174, gblur 174, fastfading 174; entries with orgs == 1 are "
                "dropped"),
        description="779 distorted images of 29 references, 5 types; realigned DMOS ~0-100, lower is better.",
        aliases=("live", "live2", "liver2", "liverelease2", "liveiqa"),
    ),
    "spaq": DatasetSpec(
        name="spaq", title="SPAQ", score_range=(0.0, 100.0), higher_better=True,
        synthetic=False, score_column="MOS",
        layout=("<root>/Annotations/MOS and Image attribute scores.xlsx with columns Image name, "
                "MOS, Brightness, Colorfulness, Contrast, Noisiness, Sharpness; images under "
                "<root>/TestImage/"),
        description="11,125 smartphone photos (~4000x3000, resize before use); MOS 0-100, higher is better.",
        aliases=("spaq",),
    ),
}

_ALIASES: dict[str, str] = {
    _alias: spec.name for spec in DATASETS.values() for _alias in (spec.name, *spec.aliases)
}


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _norm_key(text: Any) -> str:
    """Normalise a name for case-insensitive matching: lower-case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(text).lower())


def canonical_name(name: str) -> str:
    """Return the canonical dataset name for ``name`` or an alias (case-insensitive).

    Raises ``ValueError`` listing the supported names when ``name`` is unknown.
    """
    key = _norm_key(name)
    if key not in _ALIASES:
        supported = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; supported: {supported} "
                         f"(aliases: {', '.join(sorted(set(_ALIASES) - set(DATASETS)))})")
    return _ALIASES[key]


class _CaseInsensitiveTree:
    """Resolves relative paths below a folder ignoring case, caching directory listings."""

    def __init__(self) -> None:
        self._listings: dict[Path, dict[str, tuple[str, bool]]] = {}

    def listing(self, folder: Path) -> dict[str, tuple[str, bool]]:
        """Map lower-cased entry names of ``folder`` to (actual name, is_dir)."""
        if folder not in self._listings:
            entries: dict[str, tuple[str, bool]] = {}
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        entries.setdefault(entry.name.lower(), (entry.name, entry.is_dir()))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                pass
            self._listings[folder] = entries
        return self._listings[folder]

    def find(self, base: Path, relpath: str, want_dir: bool = False) -> Path | None:
        """Return the existing path matching ``base/relpath`` ignoring case, or None."""
        parts = PurePosixPath(str(relpath).replace("\\", "/")).parts
        current = base
        for i, part in enumerate(parts):
            hit = self.listing(current).get(part.lower())
            if hit is None:
                return None
            actual, is_dir = hit
            last = i == len(parts) - 1
            if (not last or want_dir) and not is_dir:
                return None
            if last and not want_dir and is_dir:
                return None
            current = current / actual
        return current


def _find_first(tree: _CaseInsensitiveTree, root: Path, candidates: Sequence[str],
                want_dir: bool = False) -> Path | None:
    """First of ``candidates`` (relative to ``root``) that exists, ignoring case."""
    for candidate in candidates:
        hit = tree.find(root, candidate, want_dir=want_dir)
        if hit is not None:
            return hit
    return None


def _require(tree: _CaseInsensitiveTree, spec: DatasetSpec, root: Path, candidates: Sequence[str],
             what: str, want_dir: bool = False) -> Path:
    """Like :func:`_find_first` but raise :class:`DatasetFormatError` naming the missing path."""
    hit = _find_first(tree, root, candidates, want_dir=want_dir)
    if hit is None:
        others = f" (also tried: {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
        raise DatasetFormatError(f"{spec.title} {what} not found{others}", root / candidates[0],
                                 spec.layout)
    return hit


def _column(table: pd.DataFrame, name: str | Sequence[str], source: Path, expected: str | None,
            required: bool = True) -> str | None:
    """Actual column of ``table`` matching ``name`` (or any of several names) ignoring case."""
    names = [name] if isinstance(name, str) else list(name)
    by_key = {_norm_key(col): col for col in table.columns}
    for wanted in names:
        if _norm_key(wanted) in by_key:
            return by_key[_norm_key(wanted)]
    if not required:
        return None
    found = ", ".join(str(c) for c in table.columns)
    raise DatasetFormatError(f"no column {names[0]!r} (columns found: {found})", source, expected)


def _numeric(values: Any, source: Path, what: str, expected: str | None) -> np.ndarray:
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


def _read_csv(path: Path, expected: str | None, **kwargs: Any) -> pd.DataFrame:
    """pandas.read_csv with parse errors turned into :class:`DatasetFormatError`."""
    try:
        return pd.read_csv(path, encoding_errors="surrogateescape", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"cannot parse as CSV ({exc})", path, expected) from exc


def _read_excel_sheets(path: Path, expected: str | None) -> dict[str, pd.DataFrame]:
    """All sheets of an .xlsx workbook, read without a header row and as text."""
    try:
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except Exception as exc:  # openpyxl raises several unrelated types on bad files
        raise DatasetFormatError(f"cannot read as an Excel workbook ({exc})", path, expected) from exc


def _promote_header(raw: pd.DataFrame, required: Sequence[str], source: Path,
                    expected: str | None, max_rows: int = 20) -> pd.DataFrame:
    """Find the header row (containing all ``required`` names) and use it as column names."""
    wanted = {_norm_key(r) for r in required}
    for i in range(min(max_rows, len(raw))):
        row = [str(v).strip() if pd.notna(v) else "" for v in raw.iloc[i].tolist()]
        if wanted <= {_norm_key(v) for v in row}:
            body = raw.iloc[i + 1:].reset_index(drop=True)
            body.columns = [v if v else f"unnamed_{j}" for j, v in enumerate(row)]
            return body.dropna(how="all")
    raise DatasetFormatError(f"no header row with columns {', '.join(required)} in the first "
                             f"{max_rows} rows", source, expected)


def _mat_variable(path: Path, name: str, expected: str | None) -> np.ndarray:
    """Read variable ``name`` (case-insensitive) from a MATLAB .mat file."""
    from scipy.io import loadmat

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


def _mat_strings(array: np.ndarray) -> list[str]:
    """Flatten a loadmat cell array (or char matrix) of names into a list of str."""
    array = np.asarray(array)
    if array.dtype.kind in "US":
        return [_mat_text(np.asarray(x)) for x in array.ravel()]
    return [_mat_text(x) for x in array.ravel()]


def _mat_numbers(array: np.ndarray, path: Path, name: str, expected: str | None) -> np.ndarray:
    """Flatten a numeric .mat variable to float64."""
    try:
        return np.asarray(array, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"variable {name!r} is not numeric", path, expected) from exc


def _resolve_images(tree: _CaseInsensitiveTree, base: Path, names: Sequence[str], labels: Path,
                    expected: str | None) -> list[str]:
    """Absolute paths of ``names`` below ``base`` (case-insensitive); error if any is missing."""
    paths: list[str] = []
    missing: list[str] = []
    for name in names:
        hit = tree.find(base, name)
        if hit is None:
            missing.append(name)
        else:
            paths.append(os.path.abspath(hit))
    if missing:
        _raise_missing(missing, len(names), base, labels, expected)
    return paths


def _raise_missing(missing: Sequence[str], total: int, base: Path, labels: Path,
                   expected: str | None) -> None:
    """Raise the standard 'image files missing' error (first 5 names and the count)."""
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise DatasetFormatError(
        f"{len(missing)} of {total} image files listed here are missing under {base}: {shown}",
        labels, expected)


def normalize_scores(mos: Any, score_range: Sequence[float], higher_better: bool = True) -> Any:
    """Map raw scores to q in [0, 1], higher = better, from a declared range and direction.

    ``q = (mos - lo) / (hi - lo)``, inverted when lower scores are better, then clipped to
    [0, 1]. NaN stays NaN. Returns a float for a scalar, a Series for a Series and an ndarray
    otherwise. This is deliberately *not* a min-max of the data, so that a test set is mapped
    the same way whatever it contains.
    """
    lo, hi = (float(v) for v in score_range)
    if not hi > lo:
        raise ValueError(f"score_range must be (lo, hi) with hi > lo, got {tuple(score_range)}")
    values = np.asarray(mos, dtype=float)
    q = (values - lo) / (hi - lo)
    if not higher_better:
        q = 1.0 - q
    q = np.clip(q, 0.0, 1.0)
    if isinstance(mos, pd.Series):
        return pd.Series(q, index=mos.index, name="q")
    if q.ndim == 0:
        return float(q)
    return q


def _table_direction(df: pd.DataFrame, score: str) -> bool | None:
    """Whether higher ``score`` is better, read from the table itself: the sign of the rank
    correlation between its ``q`` (higher = better) and ``score``; None when it cannot tell."""
    if "q" not in df.columns or score not in df.columns:
        return None
    rho = pd.to_numeric(df["q"], errors="coerce").corr(pd.to_numeric(df[score], errors="coerce"),
                                                       method="spearman")
    return None if rho is None or not np.isfinite(rho) or rho == 0 else bool(rho > 0)


def per_subset_minmax(df: pd.DataFrame, by: str = "distortion", score: str = "mos",
                      higher_better: bool | None = None) -> pd.DataFrame:
    """Recompute ``q`` by min-max normalising ``score`` within each ``by`` group.

    This reproduces an option of the method's released code, which normalises each subset
    separately. It makes ``q`` depend on what else is in the table, so use it only on training
    data and **never on test data**; the default mapping is :func:`normalize_scores`. The direction
    is ``higher_better`` when given, else read from the table's own ``q`` against ``score`` (so it
    survives CSV round trips, merges and concats, which drop ``attrs``), else
    ``df.attrs["higher_better"]``; a table that says none of these is a ``ValueError``. A group with
    a single distinct score gets q = 0.5. Returns a copy; ``attrs["q_mapping"]`` records what was done.
    """
    if by not in df.columns:
        raise KeyError(f"column {by!r} not in table (columns: {', '.join(df.columns)})")
    if higher_better is None:
        higher_better = _table_direction(df, score)
    if higher_better is None:
        higher_better = df.attrs.get("higher_better")
    if higher_better is None:
        raise ValueError(f"cannot tell whether higher {score!r} is better: the table has no usable 'q' "
                         "column and no attrs['higher_better']; pass higher_better=True or False")
    out = df.copy()
    groups = out.groupby(out[by].astype(object).where(out[by].notna(), "<none>"), sort=False)[score]
    lo = groups.transform("min").to_numpy(dtype=float)
    hi = groups.transform("max").to_numpy(dtype=float)
    values = out[score].to_numpy(dtype=float)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 0.5)
    if not higher_better:
        q = 1.0 - q
    out["q"] = np.clip(q, 0.0, 1.0)
    out.attrs = dict(df.attrs)
    out.attrs["q_mapping"] = f"per-subset min-max by {by!r} (released-code option; never on test data)"
    return out


def _common_table(paths: Sequence[str], mos: Sequence[float], *, score_range: Sequence[float],
                  higher_better: bool, content_id: Sequence[str],
                  mos_std: Sequence[float] | None = None,
                  distortion: Sequence[str | None] | None = None,
                  level: Sequence[float] | None = None) -> pd.DataFrame:
    """Assemble the common table (without attrs) from per-image sequences."""
    n = len(paths)
    mos_arr = np.asarray(mos, dtype=float)
    std_arr = np.full(n, np.nan) if mos_std is None else np.asarray(mos_std, dtype=float)
    dist = [None] * n if distortion is None else [None if d is None else str(d) for d in distortion]
    df = pd.DataFrame({
        "path": pd.Series(list(paths), dtype=object),
        "mos": mos_arr,
        "q": normalize_scores(mos_arr, score_range, higher_better),
        "mos_std": std_arr,
        "content_id": pd.Series([str(c) for c in content_id], dtype=object),
        "distortion": pd.Series(dist, dtype=object),
        "level": _level_column(level, n),
    })
    return df


def _level_column(level: Sequence[float] | None, n: int) -> pd.Series:
    """int64 levels when all are known, else float64 with NaN."""
    if level is None:
        return pd.Series(np.full(n, np.nan))
    arr = np.asarray(level, dtype=float)
    if n and not np.isnan(arr).any():
        return pd.Series(arr.astype(np.int64))
    return pd.Series(arr)


def _set_attrs(df: pd.DataFrame, spec: DatasetSpec, root: Path, labels: Path, *,
               score_range: Sequence[float] | None = None, score_column: str | None = None,
               higher_better: bool | None = None, synthetic: bool | None = None,
               dataset: str | None = None) -> pd.DataFrame:
    """Fill ``df.attrs`` with the dataset metadata."""
    df.attrs = {
        "dataset": dataset or spec.name,
        "score_range": tuple(float(v) for v in (score_range or spec.score_range)),
        "higher_better": spec.higher_better if higher_better is None else bool(higher_better),
        "synthetic": spec.synthetic if synthetic is None else bool(synthetic),
        "score_column": score_column or spec.score_column,
        "root": os.path.abspath(root),
        "labels_file": os.path.abspath(labels),
    }
    return df


def _stem(name: str) -> str:
    """File name without folders and extension."""
    return PurePosixPath(str(name).replace("\\", "/")).stem


def _clean_names(values: Any) -> list[str]:
    """Image names as stripped strings; integral floats from spreadsheets lose their '.0'."""
    out = []
    for v in values:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v).strip())
    return out


def _drop_blank(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Drop rows whose ``column`` is empty (trailing blank rows in spreadsheets)."""
    keep = table[column].notna() & (table[column].astype(str).str.strip() != "")
    return table.loc[keep].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Dataset readers
# --------------------------------------------------------------------------------------------

_KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
_KONIQ_SETS = "koniq10k_distributions_sets.csv"


def _read_koniq10k(root: Path, tree: _CaseInsensitiveTree, *, score_column: str = "MOS_zscore",
                   image_dir: str | None = None) -> pd.DataFrame:
    """KonIQ-10k: scores CSV, images in 1024x768/ (or 512x384/), optional official split file.

    ``score_column`` is ``"MOS_zscore"`` (0-100, default, used by papers) or ``"MOS"`` (1-5).
    ``mos_std`` is the ``SD`` column when ``score_column="MOS"`` and NaN for MOS_zscore, because SD
    is given on the 1-5 scale.
    """
    spec = DATASETS["koniq10k"]
    if _norm_key(score_column) not in ("moszscore", "mos"):
        raise ValueError(f"KonIQ-10k score_column must be 'MOS_zscore' or 'MOS', got {score_column!r}")
    use_zscore = _norm_key(score_column) == "moszscore"
    labels = _require(tree, spec, root, [_KONIQ_SCORES], "score file")
    table = _read_csv(labels, spec.layout, dtype=str)
    name_col = _column(table, "image_name", labels, spec.layout)
    table = _drop_blank(table, name_col)
    score_col = _column(table, "MOS_zscore" if use_zscore else "MOS", labels, spec.layout)
    sd_col = _column(table, ["SD", "std"], labels, spec.layout, required=False)
    images = _require(tree, spec, root, [image_dir] if image_dir else ["1024x768", "512x384"],
                      "image folder", want_dir=True)
    names = _clean_names(table[name_col])
    mos = _numeric(table[score_col], labels, score_col, spec.layout)
    std = None
    if not use_zscore and sd_col is not None:
        std = _numeric(table[sd_col], labels, sd_col, spec.layout)
    score_range = (0.0, 100.0) if use_zscore else (1.0, 5.0)
    df = _common_table(_resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=score_range, higher_better=True, content_id=names, mos_std=std)
    split = _koniq_official_split(root, tree, names)
    if split is not None:
        df["split"] = split
    return _set_attrs(df, spec, root, labels, score_range=score_range,
                      score_column="MOS_zscore" if use_zscore else "MOS")


def _koniq_official_split(root: Path, tree: _CaseInsensitiveTree, names: Sequence[str]) -> pd.Series | None:
    """The official training/validation/test assignment, when the split file is present."""
    spec = DATASETS["koniq10k"]
    sets_file = tree.find(root, _KONIQ_SETS)
    if sets_file is None:
        return None
    sets = _read_csv(sets_file, spec.layout, dtype=str)
    name_col = _column(sets, "image_name", sets_file, spec.layout)
    set_col = _column(sets, "set", sets_file, spec.layout)
    mapping = dict(zip((n.strip().lower() for n in sets[name_col].astype(str)),
                       sets[set_col].astype(str).str.strip().str.lower()))
    return pd.Series([mapping.get(n.lower()) for n in names], dtype=object)


def _read_livec(root: Path, tree: _CaseInsensitiveTree, *, image_dir: str | None = None,
                n_practice: int = 7) -> pd.DataFrame:
    """LIVE In the Wild Challenge: names and MOS in .mat files; the first 7 are practice images."""
    spec = DATASETS["livec"]
    names_file = _require(tree, spec, root, ["Data/AllImages_release.mat"], "image-name file")
    mos_file = _require(tree, spec, root, ["Data/AllMOS_release.mat"], "MOS file")
    names = _mat_strings(_mat_variable(names_file, "AllImages_release", spec.layout))
    mos = _mat_numbers(_mat_variable(mos_file, "AllMOS_release", spec.layout), mos_file,
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
    images = _require(tree, spec, root, [image_dir or "Images"], "image folder", want_dir=True)
    df = _common_table(_resolve_images(tree, images, names, names_file, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True, content_id=names,
                       mos_std=std)
    return _set_attrs(df, spec, root, mos_file)


def _livec_std(root: Path, tree: _CaseInsensitiveTree, n: int) -> np.ndarray | None:
    """Optional per-image rating std (Data/AllStdDev_release.mat)."""
    spec = DATASETS["livec"]
    std_file = tree.find(root, "Data/AllStdDev_release.mat")
    if std_file is None:
        return None
    std = _mat_numbers(_mat_variable(std_file, "AllStdDev_release", spec.layout), std_file,
                       "AllStdDev_release", spec.layout)
    if len(std) != n:
        raise DatasetFormatError(f"{len(std)} values but {n} images", std_file, spec.layout)
    return std


_KADID_NAME = re.compile(r"^i?(\d+)_(\d+)_(\d+)$", re.IGNORECASE)


def _read_kadid10k(root: Path, tree: _CaseInsensitiveTree, *, image_dir: str | None = None) -> pd.DataFrame:
    """KADID-10k: dmos.csv (dist_img, ref_img, dmos, var); 'dmos' is higher-better on 1-5."""
    spec = DATASETS["kadid10k"]
    labels = _require(tree, spec, root, ["dmos.csv"], "label file")
    table = _read_csv(labels, spec.layout, dtype=str)
    dist_col = _column(table, "dist_img", labels, spec.layout)
    table = _drop_blank(table, dist_col)
    ref_col = _column(table, "ref_img", labels, spec.layout)
    score_col = _column(table, "dmos", labels, spec.layout)
    var_col = _column(table, "var", labels, spec.layout, required=False)
    names = _clean_names(table[dist_col])
    types, levels = _parse_type_level(names, _KADID_NAME, labels, spec, "Ixx_yy_zz.png")
    mos = _numeric(table[score_col], labels, score_col, spec.layout)
    std = None
    if var_col is not None:
        std = np.sqrt(np.clip(_numeric(table[var_col], labels, var_col, spec.layout), 0, None))
    images = _require(tree, spec, root, [image_dir or "images"], "image folder", want_dir=True)
    df = _common_table(_resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True,
                       content_id=[_stem(r) for r in _clean_names(table[ref_col])], mos_std=std,
                       distortion=types, level=levels)
    return _set_attrs(df, spec, root, labels)


def _parse_type_level(names: Sequence[str], pattern: re.Pattern, labels: Path, spec: DatasetSpec,
                      example: str) -> tuple[list[str], list[int]]:
    """Two-digit distortion type and integer level from names like ``I01_02_3.png``."""
    types, levels = [], []
    for name in names:
        match = pattern.match(_stem(name))
        if match is None:
            raise DatasetFormatError(f"image name {name!r} does not follow the pattern {example}",
                                     labels, spec.layout)
        types.append(f"{int(match.group(2)):02d}")
        levels.append(int(match.group(3)))
    return types, levels


_TID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)$", re.IGNORECASE)


def _read_tid2013(root: Path, tree: _CaseInsensitiveTree, *, image_dir: str | None = None) -> pd.DataFrame:
    """TID2013: 'mos name' lines; names iXX_YY_L.bmp (the i may be upper-case); MOS 0-9."""
    spec = DATASETS["tid2013"]
    labels = _require(tree, spec, root, ["mos_with_names.txt"], "label file")
    mos, names = _read_mos_name_lines(labels, spec)
    types, levels = _parse_type_level(names, _TID_NAME, labels, spec, "iXX_YY_L.bmp")
    refs = [f"i{int(_TID_NAME.match(_stem(n)).group(1)):02d}" for n in names]
    std = _tid_std(root, tree, len(names))
    images = _require(tree, spec, root, [image_dir or "distorted_images"], "image folder",
                      want_dir=True)
    df = _common_table(_resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True, content_id=refs,
                       mos_std=std, distortion=types, level=levels)
    return _set_attrs(df, spec, root, labels)


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


def _tid_std(root: Path, tree: _CaseInsensitiveTree, n: int) -> np.ndarray | None:
    """Optional mos_std.txt (one value per line, same order as mos_with_names.txt)."""
    spec = DATASETS["tid2013"]
    std_file = tree.find(root, "mos_std.txt")
    if std_file is None:
        return None
    values = [v for v in std_file.read_text(encoding="utf-8", errors="replace").split()]
    std = _numeric(values, std_file, "mos_std", spec.layout)
    if len(std) != n:
        raise DatasetFormatError(f"{len(std)} values but {n} entries in mos_with_names.txt",
                                 std_file, spec.layout)
    return std


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
    key = _norm_key(text)
    return _CSIQ_TYPES.get(key, key)


def _read_csiq(root: Path, tree: _CaseInsensitiveTree) -> pd.DataFrame:
    """CSIQ: DMOS table (xlsx sheet all_by_image, or a text variant) and dst_imgs/<type>/ files."""
    spec = DATASETS["csiq"]
    labels = _require(tree, spec, root, _CSIQ_LABEL_FILES, "DMOS table")
    table = _read_csiq_table(labels, spec)
    image_col = _column(table, "image", labels, spec.layout)
    table = _drop_blank(table, image_col)
    refs = _clean_names(table[image_col])
    types = [_csiq_type(t) for t in table[_column(table, "dst_type", labels, spec.layout)]]
    lev_col = _column(table, "dst_lev", labels, spec.layout)
    levels = _numeric(table[lev_col], labels, lev_col, spec.layout).astype(int)
    dmos = _numeric(table[_column(table, "dmos", labels, spec.layout)], labels, "dmos", spec.layout)
    std_col = _column(table, "dmos_std", labels, spec.layout, required=False)
    std = None if std_col is None else _numeric(table[std_col], labels, std_col, spec.layout)
    images = _require(tree, spec, root, ["dst_imgs"], "image folder", want_dir=True)
    paths = _match_csiq_files(images, refs, types, levels, labels, spec)
    df = _common_table(paths, dmos, score_range=spec.score_range, higher_better=False,
                       content_id=refs, mos_std=std, distortion=types, level=levels)
    return _set_attrs(df, spec, root, labels)


def _read_csiq_table(labels: Path, spec: DatasetSpec) -> pd.DataFrame:
    """The CSIQ DMOS table from the xlsx sheet ``all_by_image`` or a delimited text file."""
    if labels.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
        sheets = _read_excel_sheets(labels, spec.layout)
        by_name = {_norm_key(k): k for k in sheets}
        if "allbyimage" not in by_name:
            raise DatasetFormatError(f"no sheet 'all_by_image' (sheets: {', '.join(sheets)})",
                                     labels, spec.layout)
        raw = sheets[by_name["allbyimage"]]
    else:
        raw = _read_delimited_text(labels, spec)
    return _promote_header(raw, _CSIQ_COLUMNS, labels, spec.layout)


def _read_delimited_text(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """A comma/tab/semicolon-separated table (else whitespace), read as text without header."""
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip()), "")
    sep = next((s for s in ("\t", ",", ";") if s in first), r"\s+")
    return _read_csv(path, spec.layout, sep=sep, header=None, dtype=str, skipinitialspace=True,
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
        _raise_missing(missing, len(refs), images, labels, spec.layout)
    return paths


_LIVE_FOLDERS: tuple[tuple[str, int], ...] = (
    ("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def _read_live(root: Path, tree: _CaseInsensitiveTree) -> pd.DataFrame:
    """LIVE release 2: realigned DMOS in entry order jp2k, jpeg, wn, gblur, fastfading; orgs dropped."""
    spec = DATASETS["live"]
    dmos_file = _require(tree, spec, root, ["dmos_realigned.mat"], "DMOS file")
    refs_file = _require(tree, spec, root, ["refnames_all.mat"], "reference-name file")
    dmos = _mat_numbers(_mat_variable(dmos_file, "dmos_new", spec.layout), dmos_file, "dmos_new",
                        spec.layout)
    orgs = _mat_numbers(_mat_variable(dmos_file, "orgs", spec.layout), dmos_file, "orgs", spec.layout)
    refs = _mat_strings(_mat_variable(refs_file, "refnames_all", spec.layout))
    std = _live_std(dmos_file, len(dmos))
    total = sum(n for _, n in _LIVE_FOLDERS)
    for what, values, source in (("dmos_new", dmos, dmos_file), ("orgs", orgs, dmos_file),
                                 ("refnames_all", refs, refs_file)):
        if len(values) != total:
            raise DatasetFormatError(f"{what} has {len(values)} entries, expected {total}", source,
                                     spec.layout)
    folders, relnames = _live_entries()
    keep = np.flatnonzero(orgs != 1)
    paths = _resolve_images(tree, root, [relnames[i] for i in keep], dmos_file, spec.layout)
    df = _common_table(paths, dmos[keep], score_range=spec.score_range, higher_better=False,
                       content_id=[_stem(refs[i]) for i in keep],
                       mos_std=None if std is None else std[keep],
                       distortion=[folders[i] for i in keep], level=None)
    return _set_attrs(df, spec, root, dmos_file)


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
        std = _mat_numbers(_mat_variable(dmos_file, "dmos_std", spec.layout), dmos_file,
                           "dmos_std", spec.layout)
    except DatasetFormatError:
        return None
    return std if len(std) == n else None


_SPAQ_LABELS = "Annotations/MOS and Image attribute scores.xlsx"


def _read_spaq(root: Path, tree: _CaseInsensitiveTree, *, image_dir: str | None = None) -> pd.DataFrame:
    """SPAQ: MOS spreadsheet under Annotations/ and photos under TestImage/ (resize before use)."""
    spec = DATASETS["spaq"]
    labels = _require(tree, spec, root, [_SPAQ_LABELS], "MOS spreadsheet")
    table = _spaq_sheet(labels, spec)
    name_col = _column(table, "Image name", labels, spec.layout)
    table = _drop_blank(table, name_col)
    names = _clean_names(table[name_col])
    mos_col = _column(table, "MOS", labels, spec.layout)
    mos = _numeric(table[mos_col], labels, mos_col, spec.layout)
    images = _require(tree, spec, root, [image_dir or "TestImage"], "image folder", want_dir=True)
    df = _common_table(_resolve_images(tree, images, names, labels, spec.layout), mos,
                       score_range=spec.score_range, higher_better=True, content_id=names)
    return _set_attrs(df, spec, root, labels)


def _spaq_sheet(labels: Path, spec: DatasetSpec) -> pd.DataFrame:
    """The first sheet of the SPAQ workbook that has 'Image name' and 'MOS' columns."""
    sheets = _read_excel_sheets(labels, spec.layout)
    for raw in sheets.values():
        try:
            return _promote_header(raw, ("Image name", "MOS"), labels, spec.layout)
        except DatasetFormatError:
            continue
    raise DatasetFormatError(f"no sheet with columns 'Image name' and 'MOS' (sheets: "
                             f"{', '.join(sheets)})", labels, spec.layout)


_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "koniq10k": _read_koniq10k,
    "livec": _read_livec,
    "kadid10k": _read_kadid10k,
    "tid2013": _read_tid2013,
    "csiq": _read_csiq,
    "live": _read_live,
    "spaq": _read_spaq,
}


def read_dataset(name: str, root: PathLike, **options: Any) -> pd.DataFrame:
    """Read dataset ``name`` from its unpacked folder ``root`` into the common table.

    ``name`` is one of ``DATASETS`` or an alias (case-insensitive, e.g. ``"koniq"``,
    ``"KonIQ-10k"``, ``"clive"``, ``"kadid"``). Reader-specific ``options``:

    - KonIQ-10k: ``score_column="MOS_zscore"`` (0-100, default) or ``"MOS"`` (1-5);
      ``image_dir`` (default ``1024x768``, falling back to ``512x384``).
    - LIVEC, KADID-10k, TID2013, SPAQ: ``image_dir`` overrides the image folder (e.g. a resized
      copy of SPAQ's ``TestImage``).

    Raises :class:`DatasetFormatError` (a ``ValueError``) naming the file and the expected layout
    when a label file, column or image file is missing or malformed, and ``ValueError`` listing
    the supported names for an unknown ``name``.
    """
    canonical = canonical_name(name)
    spec = DATASETS[canonical]
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetFormatError(f"{spec.title} root folder does not exist", base, spec.layout)
    return _READERS[canonical](base, _CaseInsensitiveTree(), **options)


# --------------------------------------------------------------------------------------------
# User label files
# --------------------------------------------------------------------------------------------

_LABELS_LAYOUT = ("a CSV with header 'path,score' (optional columns mos_std/std, content_id, "
                  "distortion, level), or a pyiqa-style meta-info CSV whose first column is the "
                  "image name and second the MOS (optional third column std), or pyiqa's "
                  "full-reference layout ref_name,dist_name,<score>; comma-, semicolon- or "
                  "tab-separated (detected; decimal commas are read in semicolon and tab files); "
                  "relative paths resolve against images_root or the CSV's folder and must stay "
                  "inside it")
_STD_NAMES = ("mos_std", "std", "sd", "score_std", "stddev", "dmos_std")
DEFAULT_LABEL_RANGE: tuple[float, float] = (1.0, 5.0)
_DELIMITERS: tuple[tuple[str, str], ...] = (("\t", "tab"), (";", "semicolon"), (",", "comma"))
_HEADER_KEYS = frozenset(_norm_key(n) for n in (
    "path", "file", "filename", "image", "image_name", "img_name", "img", "name", "dist_name",
    "dist_img", "ref_name", "ref_img", "score", "mos", "dmos", "mos_zscore", "rating", "content_id",
    "distortion", "level", *_STD_NAMES))
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".avif",
                   ".heic", ".heif", ".jp2", ".j2k", ".ppm", ".pgm", ".pnm")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
_LIVEC_PRACTICE = tuple(f"t{k}" for k in range(1, 8))


class LabelScaleError(DatasetFormatError):
    """The scale or direction of a label file is not given and cannot safely be assumed.

    ``reason`` is why (a ``dmos`` header, a range other than 1-5, scores outside the range)
    without the advice, so that a command line can name its own flags; the message adds the
    Python arguments to pass.
    """

    def __init__(self, reason: str, path: PathLike, advice: str):
        self.reason = reason
        self.advice = advice
        super().__init__(f"{reason}; {advice}", path, _LABELS_LAYOUT)


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


def _warn(message: str) -> None:
    import warnings
    warnings.warn(message, UserWarning, stacklevel=4)


def _read_label_text(path: Path) -> str:
    """The file as text: UTF-8 (a BOM is dropped); undecodable bytes survive as surrogate escapes,
    the way Python itself decodes file names, so non-UTF-8 names resolve to their files."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def _records(text: str, delimiter: str, path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, stripped fields) of each non-blank record; quoted fields may hold the
    delimiter or line breaks."""
    import csv as _csv
    import io

    reader = _csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    out, start = [], 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            fields = [f.strip() for f in fields]
            if any(fields):
                out.append((line, fields))
    except _csv.Error as exc:
        raise DatasetFormatError(f"cannot parse as CSV near line {reader.line_num} ({exc})", path,
                                 _LABELS_LAYOUT) from exc
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
        raise DatasetFormatError("the file holds no rows", path, _LABELS_LAYOUT)
    if wide == 0:
        first = records[0]
        raise DatasetFormatError(
            f"cannot find the delimiter: no line splits into two fields at a comma, a semicolon or "
            f"a tab (line {first[0]}: {first[1][0]!r}); write one 'path,score' row per image",
            path, _LABELS_LAYOUT)
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


def _load_label_table(path: Path) -> tuple[pd.DataFrame, str]:
    """The label file as a text table indexed by file line number, and its delimiter.

    The first row is a header when it names a known column (path, score, mos, dmos, img_name, ...);
    else when its second field is not a number and its first does not look like an image path (a
    warning names that line); else the file has no header and the columns are path, score[, std].
    A row with more fields than the header is an error naming its line.
    """
    delimiter, records = _detect_delimiter(_read_label_text(path), path)
    line, first = records[0]
    known = {_norm_key(f) for f in first} & _HEADER_KEYS
    guessed = (not known and len(first) >= 2 and not _looks_numeric(first[1])
               and not _looks_like_image(first[0]))
    if known or guessed:
        if guessed:
            _warn(f"{path}: line {line} ({delimiter.join(first)!r}) names no known column and is "
                  "taken as the header (columns: image, score); name them 'path,score' to silence this")
        columns, body = _unique_names(first), records[1:]
        long = [(n, len(f)) for n, f in body if len(f) > len(columns)]
        if long:
            shown = ", ".join(f"line {n} has {k}" for n, k in long[:5])
            raise DatasetFormatError(
                f"{len(long)} row(s) have more fields than the header's {len(columns)} ({shown}); "
                f"quote paths that contain a {_delimiter_name(delimiter)}", path, _LABELS_LAYOUT)
    else:
        body = records
        width = max(len(f) for _, f in body)
        columns = ["path", "score", *(["mos_std"] if width > 2 else []),
                   *[f"unnamed_{i}" for i in range(3, width)]]
    if len(columns) < 2:
        raise DatasetFormatError("needs at least two columns (image, score)", path, _LABELS_LAYOUT)
    rows = [f + [""] * (len(columns) - len(f)) for _, f in body]
    table = pd.DataFrame(rows, columns=columns, index=[n for n, _ in body], dtype=object)
    return table, delimiter  # a header without rows is an empty table


def _label_columns(table: pd.DataFrame, path: Path) -> dict[str, str | None]:
    """Decide which columns hold path, score, std and content id; also name the layout."""
    def col(names: str | Sequence[str]) -> str | None:
        return _column(table, names, path, _LABELS_LAYOUT, required=False)

    cols = list(table.columns)
    path_col, score_col = col(["path", "file", "filename"]), col(["score", "mos", "dmos"])
    if path_col is not None and score_col is not None:
        layout, content_col = "plain", col("content_id")
    elif col("dist_name") is not None and col("ref_name") is not None:
        path_col, content_col, layout = col("dist_name"), col("ref_name"), "pyiqa-fr"
        rest = [c for c in cols if c not in (path_col, content_col)]
        score_col = col(["mos", "dmos", "score"]) or (rest[0] if rest else None)
        if score_col is None:
            raise DatasetFormatError("no score column", path, _LABELS_LAYOUT)
    else:
        path_col, score_col, layout, content_col = cols[0], cols[1], "pyiqa", col("content_id")
    std_col = col(_STD_NAMES)
    if std_col is None and layout == "pyiqa" and len(cols) > 2 and _norm_key(cols[2]).endswith(("std", "sd")):
        std_col = cols[2]
    return {"path": path_col, "score": score_col, "std": std_col, "content": content_col,
            "distortion": col("distortion"), "level": col("level"), "layout": layout}


def read_labels(csv: PathLike, images_root: PathLike | None = None, *, dataset: str | None = None,
                score_range: Sequence[float] | None = None, higher_better: bool | None = None,
                allow_outside_root: bool = False) -> pd.DataFrame:
    """Read a label CSV for the user's own images (or a pyiqa meta-info CSV) into the common table.

    Accepted layouts (detected from the header, case-insensitive; comma-, semicolon- or
    tab-separated, detected):

    - plain: columns ``path,score`` (``mos`` also accepted for ``score``), optional ``mos_std``
      (or ``std``/``sd``), ``content_id``, ``distortion``, ``level`` — e.g. the labelling panel's output;
    - pyiqa-style meta info: first column the image name, second the MOS, optional third the
      std (when its header says std/sd); a CSV without a header is read the same way;
    - pyiqa full-reference meta info: ``ref_name,dist_name,<score>`` (``ref_name`` becomes the
      content group).

    **Scale and direction** (labels must never be read upside down):

    - ``dataset=NAME`` (a key of ``DATASETS`` or an alias) takes that dataset's declared range and
      direction, e.g. ``dataset="live"`` or ``"csiq"`` for pyiqa's DMOS files (lower is better),
      ``"kadid10k"`` (its 'dmos' is higher-better). ``score_range`` may override the range; a
      ``higher_better`` contradicting the dataset is an error. Scores outside the declared range
      give a warning and are clipped (as :func:`read_dataset` does). For ``"livec"`` the 7
      practice images ``t1``-``t7`` are dropped with a warning naming them, as the LIVEC reader does.
    - Otherwise the range is ``score_range`` (default the 1-5 ACR scale) and the direction
      ``higher_better``, which must be given explicitly when the score column is named ``dmos``
      or when ``score_range`` is not 1-5 (a :class:`LabelScaleError` says which to pass). A plain
      ``path,score`` file on 1-5 needs neither. A score outside the range is an error.

    **Paths** resolve before they are trusted: relative ones against ``images_root`` or, when
    None, the CSV's folder; ``.``/``..`` are normalised and the duplicate check runs on the
    resolved file (``./a.jpg``, ``sub/../a.jpg``, an absolute path and a symlink to it are one
    image; the error names both lines). A path outside ``images_root`` (or a relative one that
    climbs out of the CSV's folder) is refused unless ``allow_outside_root=True``; absolute paths
    are accepted as written when no ``images_root`` is given (the labelling session writes them).
    A missing file is an error.

    Every refused row is named by its line in the file: a blank path with a score, a score that
    is missing or not a number, a row with more fields than the header. A header-less file's first
    row is data unless it names known columns (or has no number and no image path, with a warning).

    ``content_id`` defaults to the path as written in the CSV; ``attrs["synthetic"]`` is True when
    a given ``content_id`` column groups several images (splits decide from the column itself).
    ``attrs`` also records ``dataset``, ``score_range``, ``higher_better``, ``layout``, ``delimiter``.
    """
    path = Path(csv).expanduser()
    if not path.is_file():
        raise DatasetFormatError("label file not found", path, _LABELS_LAYOUT)
    spec = DATASETS[canonical_name(dataset)] if dataset is not None else None
    base = Path(images_root).expanduser() if images_root is not None else path.parent
    table, delimiter = _load_label_table(path)
    cols = _label_columns(table, path)
    _refuse_blank_paths(table, cols["path"], path)
    if spec is not None and spec.name == "livec":
        table = _drop_livec_practice(table, cols["path"], path)
    else:
        _warn_livec_practice(table, cols["path"], path)
    names = [str(n).strip() for n in table[cols["path"]]]
    lines = [int(n) for n in table.index]
    mos = _label_numbers(table[cols["score"]], cols["score"], path, delimiter, allow_missing=False)
    rng = _label_range(spec, score_range)
    _check_scores(mos, lines, rng, path, from_dataset=spec is not None and score_range is None)
    better = _label_direction(spec, rng, higher_better, cols["score"], path)
    paths = _resolve_label_paths(names, lines, base, path, strict_absolute=images_root is not None,
                                 allow_outside_root=allow_outside_root)
    content = names if cols["content"] is None else _label_content(table[cols["content"]], cols, names)
    std = None if cols["std"] is None else _label_numbers(table[cols["std"]], cols["std"], path, delimiter)
    level = None if cols["level"] is None else _label_numbers(table[cols["level"]], "level", path, delimiter)
    distortion = None
    if cols["distortion"] is not None:
        distortion = [str(d).strip() or None for d in table[cols["distortion"]]]
    df = _common_table(paths, mos, score_range=rng, higher_better=better, content_id=content,
                       mos_std=std, distortion=distortion, level=level)
    grouped = cols["content"] is not None and df["content_id"].nunique() < len(df)
    custom = DatasetSpec(name="custom", title="label file", score_range=rng, higher_better=better,
                         synthetic=grouped, score_column=cols["score"], layout=_LABELS_LAYOUT,
                         description="user labels")
    df = _set_attrs(df, custom, base, path, dataset=spec.name if spec is not None else "custom")
    df.attrs["layout"] = cols["layout"]
    df.attrs["delimiter"] = delimiter
    return df


def _refuse_blank_paths(table: pd.DataFrame, path_col: str, path: Path) -> None:
    """A row with a score (or anything) but no image path is an error naming its lines."""
    blank = [n for n, v in table[path_col].items() if not str(v).strip()]
    if blank:
        shown = ", ".join(f"line {n}" for n in blank[:5]) + (", ..." if len(blank) > 5 else "")
        raise DatasetFormatError(f"{len(blank)} row(s) have values but no image path ({shown}); "
                                 "fill in the path or delete the row", path, _LABELS_LAYOUT)


def _practice_rows(table: pd.DataFrame, path_col: str) -> list[tuple[int, str]]:
    """(line, name) of rows naming LIVEC's practice images t1..t7 (any folder or extension)."""
    return [(int(n), str(v)) for n, v in table[path_col].items()
            if _stem(str(v)).lower() in _LIVEC_PRACTICE]


def _drop_livec_practice(table: pd.DataFrame, path_col: str, path: Path) -> pd.DataFrame:
    """Drop LIVEC's 7 practice images (as :func:`read_dataset` does), with a warning naming them."""
    rows = _practice_rows(table, path_col)
    if rows:
        _warn(f"{path}: dropped {len(rows)} LIVEC practice image(s), as the LIVEC reader does: "
              + ", ".join(f"{name} (line {n})" for n, name in rows))
    return table.drop(index=[n for n, _ in rows])


def _warn_livec_practice(table: pd.DataFrame, path_col: str, path: Path) -> None:
    """Say so when all of LIVEC's practice images are listed but no dataset was named."""
    rows = _practice_rows(table, path_col)
    if len({_stem(name).lower() for _, name in rows}) == len(_LIVEC_PRACTICE):
        _warn(f"{path}: rows {', '.join(name for _, name in rows)} look like LIVEC's practice "
              "images; pass dataset='livec' to drop them as the LIVEC reader does")


def _label_numbers(values: pd.Series, what: str, path: Path, delimiter: str,
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
                                 + (", ..." if len(bad) > 5 else ""), path, _LABELS_LAYOUT)
    if missing and not allow_missing:
        raise DatasetFormatError(f"{len(missing)} image(s) without a {what} ("
                                 + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
                                 + ")", path, _LABELS_LAYOUT)
    return out


def _label_range(spec: DatasetSpec | None, score_range: Sequence[float] | None) -> tuple[float, float]:
    """``score_range``, else the dataset's declared range, else the 1-5 ACR default."""
    if score_range is None:
        return spec.score_range if spec is not None else DEFAULT_LABEL_RANGE
    lo, hi = (float(v) for v in score_range)
    if not hi > lo:
        raise ValueError(f"score_range must be (lo, hi) with hi > lo, got {tuple(score_range)}")
    return lo, hi


def _scale_advice() -> str:
    names = ", ".join(sorted(DATASETS))
    return (f"pass dataset=NAME for a known dataset ({names}), or score_range=(lo, hi) together with "
            "higher_better=True (higher scores are better, e.g. MOS) or higher_better=False (lower "
            "scores are better, e.g. DMOS)")


def _check_scores(mos: np.ndarray, lines: Sequence[int], score_range: tuple[float, float], path: Path,
                  from_dataset: bool = False) -> None:
    """Scores must lie inside the declared range (a warning for a dataset's registry range)."""
    lo, hi = score_range
    outside = (mos < lo) | (mos > hi)
    if not outside.any():
        return
    where = ", ".join(f"line {n}" for n in np.asarray(lines)[outside][:3])
    reason = (f"{int(outside.sum())} score(s) outside score_range ({lo:g}, {hi:g}) ({where}); "
              f"observed {mos.min():g}..{mos.max():g}")
    if from_dataset:
        _warn(f"{path}: {reason}; their q is clipped to [0, 1]")
        return
    raise LabelScaleError(reason, path, _scale_advice())


def _label_direction(spec: DatasetSpec | None, score_range: tuple[float, float],
                     higher_better: bool | None, score_col: str, path: Path) -> bool:
    """Whether higher scores are better: the dataset's, or explicit when it cannot be assumed."""
    if spec is not None:
        if higher_better is not None and bool(higher_better) != spec.higher_better:
            declared = "higher scores are better" if spec.higher_better else "lower scores are better"
            raise ValueError(f"dataset {spec.name!r} declares that {declared}; higher_better="
                             f"{bool(higher_better)} contradicts it: drop higher_better, or drop "
                             "dataset= and give score_range and higher_better")
        return spec.higher_better
    if higher_better is not None:
        return bool(higher_better)
    advice = ("pass higher_better=True (higher scores are better) or higher_better=False (lower "
              f"scores are better), or dataset=NAME ({', '.join(sorted(DATASETS))})")
    if "dmos" in _norm_key(score_col):
        raise LabelScaleError(f"the score column is named {score_col!r}: DMOS is lower-better in LIVE "
                              "and CSIQ but higher-better in KADID-10k, so the direction cannot be "
                              "assumed", path, advice)
    if tuple(score_range) != DEFAULT_LABEL_RANGE:
        raise LabelScaleError(f"score_range=({score_range[0]:g}, {score_range[1]:g}) is not the default "
                              "1-5 scale, so the direction cannot be assumed", path, advice)
    return True


def _label_content(values: pd.Series, cols: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Content ids from a column; empty cells fall back to the image name; FR refs lose extensions."""
    out = []
    for value, name in zip(values, names):
        text = str(value).strip()
        if cols["layout"] == "pyiqa-fr" and text:
            text = _stem(text)
        out.append(text or name)
    return out


def _is_within(path: str, root: str) -> bool:
    """True when the normalised absolute ``path`` lies inside the folder ``root``."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def _resolve_label_paths(names: Sequence[str], lines: Sequence[int], base: Path, labels: Path, *,
                         strict_absolute: bool, allow_outside_root: bool) -> list[str]:
    """Absolute image paths, resolved before they are trusted.

    Relative names join ``base`` and ``.``/``..`` are normalised; a name outside ``base`` is refused
    unless ``allow_outside_root`` (absolute names only when ``strict_absolute``, i.e. an images
    root was given); duplicates are found on the real file (aliases, symlinks); missing files are
    an error. Each error names the lines.
    """
    root = os.path.abspath(base)
    tree = _CaseInsensitiveTree()
    resolved: list[str] = []
    outside: list[str] = []
    for name, line in zip(names, lines):
        given = Path(name).expanduser()
        absolute = given.is_absolute()
        lexical = os.path.abspath(given if absolute else os.path.join(root, given))
        if (not absolute or strict_absolute) and not allow_outside_root and not _is_within(lexical, root):
            outside.append(f"line {line}: {name!r}")
        if not os.path.isfile(lexical) and not absolute and _is_within(lexical, root):
            hit = tree.find(Path(root), os.path.relpath(lexical, root))  # case-insensitive fallback
            lexical = os.path.abspath(hit) if hit is not None else lexical
        resolved.append(lexical)
    if outside:
        raise DatasetFormatError(
            f"{len(outside)} path(s) lie outside the images root {root} (" + ", ".join(outside[:5])
            + (", ..." if len(outside) > 5 else "") + "); pass allow_outside_root=True if these "
            "files are meant to be read", labels, _LABELS_LAYOUT)
    _check_duplicates(resolved, names, lines, labels)
    missing = [f"{name} (line {line})" for name, line, p in zip(names, lines, resolved)
               if not os.path.isfile(p)]
    if missing:
        _raise_missing(missing, len(names), base, labels, _LABELS_LAYOUT)
    return resolved


def _check_duplicates(resolved: Sequence[str], names: Sequence[str], lines: Sequence[int],
                      labels: Path) -> None:
    """Each image may appear once, however its path is written (aggregate repeated ratings first)."""
    first_seen: dict[str, int] = {}
    pairs: list[str] = []
    for i, p in enumerate(resolved):
        key = os.path.normcase(os.path.realpath(p))
        if key in first_seen:
            j = first_seen[key]
            pairs.append(f"line {lines[j]} {names[j]!r} and line {lines[i]} {names[i]!r} are the same file "
                         f"{os.path.realpath(p)}")
        else:
            first_seen[key] = i
    if pairs:
        raise DatasetFormatError(f"{len(pairs)} image(s) listed more than once: " + "; ".join(pairs[:5])
                                 + ("; ..." if len(pairs) > 5 else "")
                                 + ". Aggregate repeated ratings into one row per image", labels,
                                 _LABELS_LAYOUT)
