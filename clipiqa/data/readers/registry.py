"""Which reader reads which dataset (:data:`READERS`, a :class:`clipiqa.registry.Registry`), and
:func:`read_dataset`, the one entry point. To add a dataset: a :class:`DatasetSpec` in ``specs.py``, a reader
module, and one line here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ...registry import Registry
from .common import DatasetFormatError, PathLike
from .kadid_tid import read_kadid10k, read_tid2013
from .koniq import read_koniq10k
from .live_csiq import read_csiq, read_live
from .livec import read_livec
from .paths import CaseInsensitiveTree
from .spaq import read_spaq
from .specs import DATASETS, canonical_name

READERS: Registry[Callable[..., pd.DataFrame]] = Registry("dataset reader")
"""Reader function of each canonical dataset name (a key of :data:`DATASETS`):
``reader(root, tree, **options) -> DataFrame``."""
READERS.add("koniq10k", read_koniq10k)
READERS.add("livec", read_livec)
READERS.add("kadid10k", read_kadid10k)
READERS.add("tid2013", read_tid2013)
READERS.add("csiq", read_csiq)
READERS.add("live", read_live)
READERS.add("spaq", read_spaq)


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
    return READERS[canonical](base, CaseInsensitiveTree(), **options)
