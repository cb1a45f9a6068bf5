"""What every diagnostics table and figure says about the model that made it, and the unit of its scores.

* ``note``: the text of the model's caveat (:mod:`clipiqa.caveats`: random-init weights, the lesson toy), "" for
  real weights;
* ``score_unit``: "margin" (the logit margin ``z_good - z_bad`` that attributions explain; docs/design.md,
  'Scores: one inference path') or "p(good)" (``target_fn=p_high_target``, the score of notebook 01,
  ``sigmoid(margin)``: the same ranking).
"""
from __future__ import annotations

import pandas as pd
from torch import nn

from ..inference import p_high_target
from ..caveats import RANDOM_INIT, caveat_of
from .attribution import TargetFn


def note_for(random_init: bool, model: nn.Module | None = None) -> str:
    """The note every table and figure carries: the random-init caveat when ``random_init`` (any model of a
    comparison), else the caveat of ``model`` (the lesson toy's), or "" for real weights."""
    return RANDOM_INIT.text if random_init else caveat_of(model).text


def score_unit(target_fn: TargetFn | None) -> str:
    """What the diagnostics' scores are: "margin" (logit margin z_good - z_bad, the default), "p(good)"
    (``p_high_target``), or the name of another ``target_fn``."""
    if target_fn is None:
        return "margin"
    if target_fn is p_high_target:
        return "p(good)"
    return getattr(target_fn, "__name__", "custom target")


def with_notes(table: pd.DataFrame, random_init: bool, model: nn.Module | None = None) -> pd.DataFrame:
    """``table`` with its ``random_init`` and ``note`` columns set (in place; returned for chaining)."""
    table["random_init"] = random_init
    table["note"] = note_for(random_init, model)
    return table


def table_note(table: pd.DataFrame) -> str:
    """The note a table carries ("" when none)."""
    if "note" not in table or not len(table):
        return RANDOM_INIT.text if table.attrs.get("random_init") else ""
    notes = [n for n in dict.fromkeys(table["note"].fillna("")) if n]
    return RANDOM_INIT.text if RANDOM_INIT.text in notes else (notes[0] if notes else "")


__all__ = ["note_for", "score_unit", "with_notes", "table_note"]
