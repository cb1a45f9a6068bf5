"""A meta-learning task: the labelled images of one distortion type, checked to allow a support/query split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Task"]


@dataclass(frozen=True, eq=False)
class Task:
    """One meta-learning task: the images of one distortion type, in the common table
    (``path``, ``q`` in [0, 1] higher = better, ``content_id``; also ``distortion``, ``level``)."""

    name: str
    table: pd.DataFrame
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task needs a non-empty name; got {self.name!r}")
        missing = [c for c in ("path", "q", "content_id") if c not in self.table.columns]
        if missing:
            raise ValueError(f"task {self.name!r}: table lacks column(s) {missing}; it needs path, q (in [0, 1], "
                             "higher = better) and content_id")
        q = pd.to_numeric(self.table["q"], errors="coerce").to_numpy(dtype=float)
        if len(q) == 0 or not np.all(np.isfinite(q)) or q.min() < 0 or q.max() > 1:
            raise ValueError(f"task {self.name!r}: q must be finite and in [0, 1] for every row "
                             f"({len(q)} rows)")
        if self.table["content_id"].nunique() < 2:
            raise ValueError(f"task {self.name!r}: needs at least 2 content groups for a support/query split; "
                             f"has {self.table['content_id'].nunique()}")

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {len(self.table)} images, {self.table['content_id'].nunique()} contents)"
