"""The plain-language verdict of a feasibility check (notebook 07), as rules that respect their own noise.

:func:`learning_curve` condenses the per-split results of ``clipiqa.protocol.run_protocol`` (one run per label
count) into one row per method and label count; :func:`verdict` reads that curve. The rules, in order:

1. **Held-out size first.** With fewer than ``min_test`` (default 20) held-out images per split, the chance
   band (``1.96 / sqrt(n - 1)``: ±0.88 for 6 images, ±0.45 for 20) is too wide to grade anything: the verdict
   says "too few held-out labels to judge (n = 6; chance band ±0.88)" and how many labels would do
   (:func:`labels_needed`: from the protocol's 20 % held-out share, so the advice stays put as labels are added,
   with "up to" when content groups held out less in this run). It only adds
   that the model is above chance when even its CI's lower end clears the band.
2. **Grade** of the method at the largest label count from its mean SRCC: below the chance band
   "indistinguishable from chance"; < 0.4 weak; < 0.6 moderate; < 0.8 good; else strong. When the 95 % CI spans
   several grades, the verdict names the span.
3. **Human ceiling** (when given, :class:`clipiqa.agreement.Ceiling`): "the model reaches 0.71; your raters agree
   with each other at 0.78"; a model whose SRCC reaches the ceiling's CI is at the ceiling (more labels or a
   larger model cannot do much better on these labels). Without one, the verdict says how to get it.
4. **Trend** between the last two label counts, only when the CIs support it: the step's 95 % interval
   (independent-error approximation from the two CIs, ``d ± 1.96 sqrt(se1² + se2²)``) entirely above 0:
   "still rising"; entirely below ``flat_gain`` SRCC per 10 labels: "has flattened"; otherwise "cannot tell
   yet". Both points need ``min_test`` held-out images.
5. **Baselines** at the same label count (zero-shot CLIP, CLIP-free classical-statistics ridge): their SRCC, and
   a note when the ridge is as good (the labels may reflect low-level properties that simple statistics catch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .caveats import RANDOM_INIT

MIN_TEST = 20
TEST_SHARE = 0.2  # the protocol's 80/20 splits hold out this share of the labelled images (of contents, by content)
FLAT_GAIN = 0.03  # SRCC per 10 labels below which the curve counts as flat
Z95 = 1.959963984540054
BASELINES = ("zero-shot", "classical-ridge")


def learning_curve(per_split: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, n_train) from ``run_protocol`` per-split rows (only ``status == "ok"`` rows):
    ``srcc`` (mean over splits), ``lo``/``hi`` (mean per-split bootstrap CI), ``band`` (mean chance band),
    ``n_test`` (mean held-out images per split), ``n_pool`` (mean pool), ``n_splits``."""
    cols = ["method", "n_train", "srcc", "lo", "hi", "band", "n_test", "n_pool", "n_splits"]
    if per_split is None or not len(per_split):
        return pd.DataFrame(columns=cols)
    rows = per_split
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    if not len(rows):
        return pd.DataFrame(columns=cols)
    agg = {"srcc": ("srcc", "mean"), "lo": ("srcc_ci_lo", "mean"), "hi": ("srcc_ci_hi", "mean"),
           "band": ("chance_band", "mean"), "n_test": ("n_test", "mean"), "n_splits": ("srcc", "size")}
    if "n_pool" in rows:
        agg["n_pool"] = ("n_pool", "mean")
    out = rows.groupby(["method", "n_train"], sort=False).agg(**agg).reset_index()
    if "n_pool" not in out:
        out["n_pool"] = np.nan
    return out[cols].sort_values(["method", "n_train"], kind="stable").reset_index(drop=True)


def labels_needed(point: Any, min_test: int = MIN_TEST) -> tuple[int, int, float]:
    """Labels in all for ``min_test`` held-out images per split: ``(need, up_to, share)``.

    ``need`` comes from the protocol's nominal held-out share (:data:`TEST_SHARE`, 20 %), not from the share
    one split happened to get: by image, rounding gives 4 of 18 (22 %) or 6 of 30 (20 %), and by content a
    split can hold out 10 %, so reading it off the split made the advice jump (90, 100, 200 labels at 18, 30
    and 60 labels). When the labelled images already reach ``need``, the grouping is what holds the test set
    back and ``need`` is read from the observed share. ``up_to`` is what this run's observed held-out share
    (``share``, from ``n_test`` and ``n_pool``) would need when it is clearly below nominal (content groups):
    the uncertainty of ``need``, equal to it otherwise."""
    n_test = float(point["n_test"])
    pool = float(point.get("n_pool", np.nan))
    labelled = n_test + pool if np.isfinite(pool) and pool > 0 else float("nan")
    share = n_test / labelled if labelled > 0 else TEST_SHARE
    nominal = int(math.ceil(min_test / TEST_SHARE - 1e-9))
    observed = int(math.ceil(min_test / share - 1e-9)) if share > 0 else nominal
    if np.isfinite(labelled) and labelled >= nominal:
        return observed, observed, share
    return nominal, observed if share < 0.8 * TEST_SHARE else nominal, share


def small_n_note(curve: pd.DataFrame, min_test: int = MIN_TEST) -> str:
    """What a learning-curve figure must say beside its chance band when points rest on fewer than ``min_test``
    held-out images: the n, the chance band, and that those points say nothing yet; '' when none does."""
    small = curve[curve["n_test"] < min_test] if len(curve) else curve
    if not len(small):
        return ""
    lo, hi = int(round(small["n_test"].min())), int(round(small["n_test"].max()))
    band = float(small["band"].max())
    n = f"n = {lo}" if lo == hi else f"n = {lo} to {hi}"
    wide = " (wider than any SRCC can be)" if band >= 1 else ""
    points = "this point says" if small[["n_train"]].drop_duplicates().shape[0] == 1 else "these points say"
    return (f"{n} held-out images: the intervals are wide and the chance band is ±{band:.2f}{wide}, so {points} "
            f"nothing yet (judge from {min_test} held-out images)")


def grade(srcc: float, band: float) -> str:
    """The word for an SRCC: chance (inside the band), weak, moderate, good or strong."""
    if not np.isfinite(srcc) or srcc <= band:
        return "indistinguishable from chance"
    return "weak" if srcc < 0.4 else "moderate" if srcc < 0.6 else "good" if srcc < 0.8 else "strong"


def step_interval(last: Any, prev: Any) -> tuple[float, float, float]:
    """The change of SRCC from ``prev`` to ``last`` and its approximate 95 % interval from their CIs."""
    se = [(p["hi"] - p["lo"]) / (2 * Z95) for p in (last, prev)]
    d = float(last["srcc"] - prev["srcc"])
    half = Z95 * math.sqrt(se[0] ** 2 + se[1] ** 2)
    return d, d - half, d + half


@dataclass
class Verdict:
    """The verdict: ``text`` (also ``str(verdict)``) and what it concluded, for code and tests."""

    lines: list[str] = field(default_factory=list)
    too_few: bool = False
    grade: str | None = None
    trend: str | None = None  # "rising", "flattened", "unclear" or None (fewer than two usable points)
    srcc: float = float("nan")
    n_test: float = float("nan")
    band: float = float("nan")
    at_ceiling: bool | None = None
    recommended_labels: int | None = None  # labels in all the verdict advises (too few held out, or still rising)
    recommended_range: tuple[int, int] | None = None  # (recommended_labels, what this run's held-out share needs)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        return "\n\n".join(self.lines)


def _f(x: float) -> str:
    return f"{x:.2f}"


def verdict(per_split: pd.DataFrame, method: str, *, ceiling: Any = None, random_init: bool = False,
            synthetic: bool = False, min_test: int = MIN_TEST, flat_gain: float = FLAT_GAIN) -> Verdict:
    """The plain-language verdict on a learning curve (rules in the module docstring).

    per_split: ``run_protocol(...).per_split`` rows of every label count (concatenated), or the output of
        :func:`learning_curve`.
    method: the method judged (e.g. ``"paper+qgr"``); ``zero-shot`` and ``classical-ridge`` rows, when present,
        are reported as baselines.
    ceiling: the human ceiling, a :class:`clipiqa.agreement.Ceiling` (``Session.agreement()``), or None.
    random_init / synthetic: say that the numbers come from random-init weights / synthetic labels.
    """
    curve = per_split if {"lo", "hi", "band"} <= set(per_split.columns) else learning_curve(per_split)
    out = Verdict()
    say = out.lines.append
    if random_init:
        say(RANDOM_INIT.then("these numbers show that the check runs and say nothing about feasibility. Rerun "
                             "with SMOKE = False."))
    if synthetic:
        say("The labels are synthetic severities of demo photos, not ratings of your images.")
    m = curve[curve["method"] == method].sort_values("n_train") if len(curve) else curve
    if not len(m):
        say(f"Not enough labels yet for a learning curve of {method}.")
        return out
    last = m.iloc[-1]
    s, lo, hi, band, n_test = (float(last[k]) for k in ("srcc", "lo", "hi", "band", "n_test"))
    out.srcc, out.n_test, out.band = s, n_test, band
    n_train = int(last["n_train"])
    if n_test < min_test:
        out.too_few = True
        need, upto, share = labels_needed(last, min_test)
        out.recommended_labels, out.recommended_range = need, (need, upto)
        say(f"Too few held-out labels to judge (n = {n_test:.0f}; chance band ±{band:.2f}): with {n_train} labels "
            f"{method} reaches SRCC {_f(s)} (95% CI {_f(lo)} to {_f(hi)}), but on so few test images that says "
            f"little. Label about {need} images in all (≥ {min_test} held out) to judge.")
        if upto > need:
            say(f"This run held out only {share:.0%} of the labelled images (images of one content stay on one "
                f"side of a split), so it may take up to {upto}.")
        if np.isfinite(lo) and lo > band:
            say("Even so, its CI lies above the chance band: the model does better than chance.")
        return out
    out.grade = grade(s, band)
    span = {grade(lo, band), grade(hi, band)}
    words = out.grade if len(span) == 1 else f"{out.grade} (the CI spans {grade(lo, band)} to {grade(hi, band)})"
    say(f"With {n_train} labels, {method} reaches SRCC {_f(s)} (95% CI {_f(lo)} to {_f(hi)}; chance band "
        f"±{band:.2f}; {n_test:.0f} held-out images): {words}.")
    _ceiling_lines(out, ceiling, s)
    _trend_lines(out, m, min_test, flat_gain)
    _baseline_lines(out, curve, n_train, s, hi)
    return out


def _ceiling_lines(out: Verdict, ceiling: Any, s: float) -> None:
    value = getattr(ceiling, "split_half", ceiling)
    if ceiling is None or value is None or not np.isfinite(float(value)):
        out.lines.append("No human ceiling yet: have a second person rate the same images (the label panel asks "
                         "each rater's name) to see how close the model comes to human agreement.")
        return
    c_lo = float(getattr(ceiling, "split_half_lo", value))
    c_hi = float(getattr(ceiling, "split_half_hi", value))
    out.at_ceiling = bool(s >= c_lo)
    text = f"The model reaches {_f(s)}; your raters agree with each other at {_f(float(value))}"
    if np.isfinite(c_lo) and np.isfinite(c_hi) and (c_lo, c_hi) != (value, value):
        text += f" (95% CI {_f(c_lo)} to {_f(c_hi)})"
    text += ". " + ("That is the human ceiling: more labels or a larger model cannot do much better on these "
                    "labels; clearer rating instructions or more raters per image can." if out.at_ceiling else
                    f"The gap to the ceiling ({_f(float(value) - s)}) is what better adaptation could still win.")
    out.lines.append(text)
    retest = getattr(ceiling, "test_retest", float("nan"))
    if retest is not None and np.isfinite(retest):
        out.lines.append(f"Raters agree with their own blind repeats at {_f(float(retest))} (test-retest, "
                         f"{getattr(ceiling, 'n_repeats', 0)} repeats).")


def _trend_lines(out: Verdict, m: pd.DataFrame, min_test: int, flat_gain: float) -> None:
    if len(m) < 2:
        return
    last, prev = m.iloc[-1], m.iloc[-2]
    if prev["n_test"] < min_test:
        out.trend = "unclear"
        out.lines.append(f"The curve cannot be read yet: its previous point has only {prev['n_test']:.0f} "
                         "held-out images.")
        return
    dn = float(last["n_train"] - prev["n_train"])
    d, d_lo, d_hi = step_interval(last, prev)
    per10 = d / dn * 10 if dn else float("nan")
    step = (f"from {int(prev['n_train'])} to {int(last['n_train'])} labels SRCC changes by {d:+.2f} "
            f"({per10:+.2f} per 10 labels; 95% interval {d_lo:+.2f} to {d_hi:+.2f})")
    if d_lo > 0:
        out.trend = "rising"
        out.recommended_labels = int(2 * (last["n_train"] + last["n_test"]))  # "try doubling them"
        out.lines.append(f"The curve is still rising: {step}. More labels are likely to help; try doubling them.")
    elif d_hi < flat_gain * dn / 10:
        out.trend = "flattened"
        out.lines.append(f"The curve has flattened: {step}. More labels of the same kind are unlikely to help "
                         "much; better labels (several raters) or the GPU trainable set may.")
    else:
        out.trend = "unclear"
        out.lines.append(f"Cannot tell yet whether more labels help: {step}, an interval that allows both a "
                         "flat and a rising curve.")


def _baseline_lines(out: Verdict, curve: pd.DataFrame, n_train: int, s: float, hi: float) -> None:
    for other in BASELINES:
        o = curve[(curve["method"] == other) & (curve["n_train"] == n_train)]
        if not len(o):
            continue
        row = o.iloc[0]
        text = f"{other}: SRCC {_f(float(row['srcc']))} (95% CI {_f(float(row['lo']))} to {_f(float(row['hi']))})"
        if other == "classical-ridge" and row["srcc"] >= s:
            text += (" - as good or better: the labels may reflect low-level properties that simple statistics "
                     "capture" + (" (clearly better: the CIs do not overlap)" if row["lo"] > hi else "") + ".")
        else:
            text += "."
        out.lines.append(text)


__all__ = ["verdict", "Verdict", "learning_curve", "grade", "step_interval", "labels_needed", "small_n_note",
           "MIN_TEST", "FLAT_GAIN", "TEST_SHARE"]
