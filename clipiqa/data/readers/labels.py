""":func:`read_labels`: a label CSV for the user's own images (or a pyiqa meta-info CSV) into the common
table, with the scale and direction given or taken from a named dataset, never guessed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .common import DatasetFormatError, PathLike, norm_key, stem
from .labels_parse import LABELS_LAYOUT, label_columns, label_numbers, load_label_table, warn_user
from .labels_paths import resolve_label_paths
from .specs import DATASETS, DatasetSpec, canonical_name
from .table import common_table, set_attrs


DEFAULT_LABEL_RANGE: tuple[float, float] = (1.0, 5.0)
"""The score range of a label file when neither ``dataset`` nor ``score_range`` is given (the 1-5 ACR scale)."""

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
        super().__init__(f"{reason}; {advice}", path, LABELS_LAYOUT)


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
        raise DatasetFormatError("label file not found", path, LABELS_LAYOUT)
    spec = DATASETS[canonical_name(dataset)] if dataset is not None else None
    base = Path(images_root).expanduser() if images_root is not None else path.parent
    table, delimiter = load_label_table(path)
    cols = label_columns(table, path)
    _refuse_blank_paths(table, cols["path"], path)
    if spec is not None and spec.name == "livec":
        table = _drop_livec_practice(table, cols["path"], path)
    else:
        _warn_livec_practice(table, cols["path"], path)
    names = [str(n).strip() for n in table[cols["path"]]]
    lines = [int(n) for n in table.index]
    mos = label_numbers(table[cols["score"]], cols["score"], path, delimiter, allow_missing=False)
    rng = _label_range(spec, score_range)
    _check_scores(mos, lines, rng, path, from_dataset=spec is not None and score_range is None)
    better = _label_direction(spec, rng, higher_better, cols["score"], path)
    paths = resolve_label_paths(names, lines, base, path, strict_absolute=images_root is not None,
                                 allow_outside_root=allow_outside_root)
    content = names if cols["content"] is None else _label_content(table[cols["content"]], cols, names)
    std = None if cols["std"] is None else label_numbers(table[cols["std"]], cols["std"], path, delimiter)
    level = None if cols["level"] is None else label_numbers(table[cols["level"]], "level", path, delimiter)
    distortion = None
    if cols["distortion"] is not None:
        distortion = [str(d).strip() or None for d in table[cols["distortion"]]]
    df = common_table(paths, mos, score_range=rng, higher_better=better, content_id=content,
                       mos_std=std, distortion=distortion, level=level)
    grouped = cols["content"] is not None and df["content_id"].nunique() < len(df)
    custom = DatasetSpec(name="custom", title="label file", score_range=rng, higher_better=better,
                         synthetic=grouped, score_column=cols["score"], layout=LABELS_LAYOUT,
                         description="user labels")
    df = set_attrs(df, custom, base, path, dataset=spec.name if spec is not None else "custom")
    df.attrs["layout"] = cols["layout"]
    df.attrs["delimiter"] = delimiter
    return df


def _refuse_blank_paths(table: pd.DataFrame, path_col: str, path: Path) -> None:
    """A row with a score (or anything) but no image path is an error naming its lines."""
    blank = [n for n, v in table[path_col].items() if not str(v).strip()]
    if blank:
        shown = ", ".join(f"line {n}" for n in blank[:5]) + (", ..." if len(blank) > 5 else "")
        raise DatasetFormatError(f"{len(blank)} row(s) have values but no image path ({shown}); "
                                 "fill in the path or delete the row", path, LABELS_LAYOUT)


def _practice_rows(table: pd.DataFrame, path_col: str) -> list[tuple[int, str]]:
    """(line, name) of rows naming LIVEC's practice images t1..t7 (any folder or extension)."""
    return [(int(n), str(v)) for n, v in table[path_col].items()
            if stem(str(v)).lower() in _LIVEC_PRACTICE]


def _drop_livec_practice(table: pd.DataFrame, path_col: str, path: Path) -> pd.DataFrame:
    """Drop LIVEC's 7 practice images (as :func:`read_dataset` does), with a warning naming them."""
    rows = _practice_rows(table, path_col)
    if rows:
        warn_user(f"{path}: dropped {len(rows)} LIVEC practice image(s), as the LIVEC reader does: "
              + ", ".join(f"{name} (line {n})" for n, name in rows))
    return table.drop(index=[n for n, _ in rows])


def _warn_livec_practice(table: pd.DataFrame, path_col: str, path: Path) -> None:
    """Say so when all of LIVEC's practice images are listed but no dataset was named."""
    rows = _practice_rows(table, path_col)
    if len({stem(name).lower() for _, name in rows}) == len(_LIVEC_PRACTICE):
        warn_user(f"{path}: rows {', '.join(name for _, name in rows)} look like LIVEC's practice "
              "images; pass dataset='livec' to drop them as the LIVEC reader does")


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
        warn_user(f"{path}: {reason}; their q is clipped to [0, 1]")
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
    if "dmos" in norm_key(score_col):
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
            text = stem(text)
        out.append(text or name)
    return out
