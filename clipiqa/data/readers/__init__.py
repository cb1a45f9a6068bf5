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

Layout (one idea per module): ``common`` (the format error, name matching, parsing helpers),
``paths`` (case-insensitive file look-ups below a root), ``formats`` (CSV, Excel and MATLAB files),
``specs`` (:data:`DATASETS`: each dataset's scale, direction and layout), ``table`` (the common table
and the score -> ``q`` mapping), one module per dataset family (``koniq``, ``livec``, ``kadid_tid``,
``live_csiq``, ``spaq``), ``registry`` (:data:`READERS` and :func:`read_dataset`), and the user label
files (``labels``, ``labels_parse``, ``labels_paths``). To add a dataset: a spec in ``specs``, a
reader module, one line in ``registry``.
"""

from __future__ import annotations

from .common import DatasetFormatError
from .labels import DEFAULT_LABEL_RANGE, LabelScaleError, read_labels
from .registry import READERS, read_dataset
from .specs import DATASETS, DatasetSpec, canonical_name
from .table import COMMON_COLUMNS, normalize_scores, per_subset_minmax

__all__ = [
    "COMMON_COLUMNS",
    "DATASETS",
    "DEFAULT_LABEL_RANGE",
    "READERS",
    "DatasetFormatError",
    "DatasetSpec",
    "LabelScaleError",
    "canonical_name",
    "normalize_scores",
    "per_subset_minmax",
    "read_dataset",
    "read_labels",
]
