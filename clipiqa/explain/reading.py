"""How to read the diagnostics: computed verdict lines and the per-distortion-type tables
(docs/design.md, 'Explainability').

The distortion-focus test distorts a rectangle of a clean photo and measures the attribution mass inside it
relative to its area (``focus``; 1 = no preference). ``focus`` alone is easy to misread: the rectangle may hold
the photo's sharpest detail, so that the *clean* photo already concentrates the attribution there
(``focus_clean`` 2.1, say); a focus of 2.0 with the distortion then means that the attribution *left* the
damaged region, although it is "above 1". What the distortion does is the gain ``focus - focus_clean``, read
against its spread over the photos (its standard error, SE) and against the clean control: a shift is a gain
beyond 2 SE from 0 *and* of at least :data:`MIN_SHIFT` of ``focus_clean`` (a consistent but negligible move is
no shift):

* a shift up: **distortion** - the attribution moves onto the distorted region;
* a shift down: **distortion** - the attribution moves away from the distorted region, to the detail it left
  intact (a blur detector reads sharpness where there still is some);
* otherwise: **content** - the distortion does not move the attribution: the photo decides where it goes.

With one photo there is no spread (only the clean control is used); below 3 photos the line says the reading is
indicative only. The score's
own reaction (does the distorted photo score lower? ``score_drop``) is stated in the same line, in the scores'
unit ("margin" or "p(good)", :func:`clipiqa.explain.notes.score_unit`).

:func:`model_verdict` answers "distortion or content?" for a model from the score variance (eta squared of the
distortion level against that of the photo, :func:`clipiqa.explain.diagnostics.content_vs_distortion`) and
lists the attribution shift per distortion type. Every line ends with the short form of the model's caveat
("toy model ...", "random init: meaningless") when there is one.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..caveats import caveat_from_text
from .diagnostics import cvd_summary, eta_squared
from .notes import table_note

SPREAD_FACTOR = 2.0
"""A gain counts as a shift when it is beyond this many standard errors from 0 (about a 95 % interval)."""
MIN_SHIFT = 0.05
"""A shift is a gain of at least this share of ``focus_clean`` (with a spread, also beyond 2 SE)."""
DIRECTION = {1: "onto the damage", -1: "away from the damage", 0: "no shift"}


def short_caveat(note: str) -> str:
    """The short form of a table's note for a one-line verdict ("toy model trained on synthetic distortions",
    "random init: meaningless"): the caveat's label (:mod:`clipiqa.caveats`), another note as it is."""
    return caveat_from_text(note).label or note


def gain_stats(table: pd.DataFrame) -> dict[str, Any]:
    """Focus numbers of a focus table (rows of one model and distortion): means, gain, SE, n, the direction
    (+1 onto the damage, -1 away, 0 no shift) and whether it rests on a spread."""
    gain = (table["focus"] - table["focus_clean"]).dropna().to_numpy(dtype=np.float64)
    n = int(gain.size)
    mean = float(gain.mean()) if n else float("nan")
    se = float(gain.std(ddof=1) / math.sqrt(n)) if n >= 2 else float("nan")
    clean = float(table["focus_clean"].mean())
    shift = n > 0 and abs(mean) >= MIN_SHIFT * abs(clean)
    if n >= 2:  # with two photos the spread is rough, but a gain inside it is still no shift
        shift = shift and abs(mean) > SPREAD_FACTOR * se
    drop = table["score_drop"].dropna().to_numpy(dtype=np.float64) if "score_drop" in table else np.zeros(0)
    return {"n": n, "focus": float(table["focus"].mean()), "focus_clean": clean, "gain": mean, "gain_se": se,
            "direction": int(np.sign(mean)) if shift else 0, "spread": n >= 3,
            "drop": float(drop.mean()) if drop.size else float("nan"),
            "drop_se": float(drop.std(ddof=1) / math.sqrt(drop.size)) if drop.size >= 2 else float("nan")}


def _pm(value: float, se: float) -> str:
    return f"{value:+.2f}" + ("" if math.isnan(se) else f" ± {se:.2f} SE")


def focus_verdict(table: pd.DataFrame) -> str:
    """One line for a focus table of one model and distortion (:func:`distortion_focus`'s ``table``): distortion or
    content?, with the numbers it rests on and the model's caveat."""
    if not len(table) or "focus_clean" not in table:
        return "distortion or content? not measured (the focus test needs its clean control: control=True)"
    s = gain_stats(table)
    first = table.iloc[0]
    test = f"{first['distortion']} {first['level']}"
    numbers = (f"focus {s['focus']:.2f} vs clean control {s['focus_clean']:.2f}, gain {_pm(s['gain'], s['gain_se'])}"
               f", n = {s['n']}" + ("" if s["spread"] else ": no spread, indicative only"))
    answer = {1: "distortion: the attribution moves onto the distorted region",
              -1: "distortion: the attribution moves away from the distorted region, to the detail left intact",
              0: "content: the distortion does not move the attribution (the photo decides where it goes)"}
    line = f"{test} - distortion or content? {answer[s['direction']]} ({numbers}); {_drop_text(table, s)}"
    return _with_caveat(line, table_note(table))


def _drop_text(table: pd.DataFrame, s: dict[str, Any]) -> str:
    unit = table["score_unit"].iloc[0] if "score_unit" in table else "score"
    if math.isnan(s["drop"]):
        return f"{unit} drop not measured"
    lower = s["drop"] > (SPREAD_FACTOR * s["drop_se"] if not math.isnan(s["drop_se"]) else 0)
    return (f"{unit} drop {_pm(s['drop'], s['drop_se'])}: "
            + ("the distorted photo scores lower" if lower else "the score does not count it as worse"))


def _with_caveat(line: str, note: str) -> str:
    return f"{line} [{short_caveat(note)}]" if note else line


def type_table(focus: pd.DataFrame, content: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per distortion type (and model, when the tables have a ``model`` column): the focus numbers and
    their reading, and from ``content`` (a content-vs-distortion table) the rank correlation of the score with
    the level and the eta squared of level and photo *within* that type. Score columns are named in the scores'
    unit (``margin_drop`` or ``p(good)_drop``)."""
    unit = focus["score_unit"].iloc[0] if "score_unit" in focus and len(focus) else "score"
    keys = ["distortion", "model"] if "model" in focus else ["distortion"]
    rows = []
    for key, sub in focus.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        s = gain_stats(sub)
        row = dict(zip(keys, key))
        row.update({"level": int(sub["level"].iloc[0]), "n": s["n"], "focus": s["focus"],
                    "focus_clean": s["focus_clean"], "focus_gain": s["gain"], "gain_se": s["gain_se"],
                    "attribution": DIRECTION[s["direction"]], f"{unit}_drop": s["drop"]})
        row.update(_within_type(content, dict(zip(keys, key))))
        rows.append(row)
    return pd.DataFrame(rows)


def _within_type(content: pd.DataFrame | None, key: dict[str, Any]) -> dict[str, float]:
    if content is None:
        return {}
    grid = content[(content["level"] >= 1) & (content["distortion"] == key["distortion"])]
    if "model" in key:
        grid = grid[grid["model"] == key["model"]]
    if not len(grid):
        return {}
    summary = cvd_summary(grid)
    return {"srcc_level": summary["srcc_level"], "eta2_level": eta_squared(grid["score"], grid["level"]),
            "eta2_content": eta_squared(grid["score"], grid["reference"])}


def model_verdict(focus: pd.DataFrame, content: pd.DataFrame | None = None) -> str:
    """One line for one model: distortion or content?, from the score variance (eta squared of level vs photo
    in ``content``) when given, else from the focus tests; then the attribution shift per distortion type."""
    shifts = []
    for kind, sub in focus.groupby("distortion", sort=False):
        s = gain_stats(sub)
        rough = "" if s["spread"] else ", indicative only"
        shifts.append(f"{kind} {DIRECTION[s['direction']]} (gain {_pm(s['gain'], s['gain_se'])}, n = {s['n']}{rough})")
    note = table_note(focus)
    if content is not None and len(content):
        summary = cvd_summary(content)
        unit = content["score_unit"].iloc[0] if "score_unit" in content else "score"
        level, photo = summary["eta2_level"], summary["eta2_content"]
        answer = "distortion" if level > photo else "content" if photo > level else "undecided"
        head = (f"distortion or content? {answer}: the distortion level explains {_pct(level)} of the {unit} "
                f"variance, the photo {_pct(photo)} (eta squared, {summary['n_images']} distorted images)")
    else:
        moved = sum(gain_stats(sub)["direction"] != 0 for _, sub in focus.groupby("distortion"))
        answer = "distortion" if moved else "content"
        head = f"distortion or content? {answer}: the attribution moves with {moved} of {len(shifts)} distortions"
    return _with_caveat(f"{head}; attribution: " + "; ".join(shifts), note)


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.0f} %"


def verdicts(tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """``{model: model_verdict}`` from the tables of ``compare_models(..., return_tables=True)``."""
    focus, content = tables["focus"], tables.get("content")
    return {model: model_verdict(sub, None if content is None else content[content["model"] == model])
            for model, sub in focus.groupby("model", sort=False)}


__all__ = ["focus_verdict", "model_verdict", "verdicts", "type_table", "gain_stats", "short_caveat",
           "SPREAD_FACTOR", "MIN_SHIFT", "DIRECTION"]
