"""What the lessons (notebooks 01, 03, 04 and 06) measure, as tables, a figure and one-line takeaways computed
from the run, never typed: the numbers of the ``lesson`` toy change whenever it is retrained.

* 01: :func:`zero_shot_types` (per-type zero-shot SRCC on held-out contents, with n and chance band, grouped
  into the toy's trained types and held-out ones), :func:`plot_type_srcc`, :func:`types_takeaway`;
* 03: :func:`lesson_adapt_sets` (labels of one held-out type on the training contents, and a held-out set of
  other contents), :func:`paired_gain` (adapted - zero-shot SRCC with a paired bootstrap CI over the test
  images), :func:`gain_takeaway`, :func:`semantic_loss_text` (why the semantic loss rose, from the run's steps);
* 04 and 06: :func:`compare_takeaway` (one arm against another over the splits: wins, sign test, verdict).

Every takeaway starts with ``Takeaway (<the model's caveat label>)``: "toy model trained on synthetic
distortions" on the toy, "random init: meaningless" on random weights, nothing on real weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .metrics import chance_band, srcc

__all__ = ["takeaway", "lesson_recipe", "zero_shot_types", "plot_type_srcc", "types_takeaway", "lesson_adapt_sets",
           "lesson_meta_references", "paired_gain", "gain_takeaway", "semantic_loss_text", "compare_takeaway"]


def takeaway(text: str, caveat: Any = "") -> str:
    """``Takeaway (<caveat label>): text``; ``caveat`` is a :class:`clipiqa.caveats.Caveat` (its short label) or
    a string; without one (real weights): ``Takeaway: text``."""
    label = getattr(caveat, "label", caveat) or ""
    return f"Takeaway ({label}): {text}" if label else f"Takeaway: {text}"


def lesson_recipe():
    """The lesson toy's recipe (its trained and held-out types, photos and procedural kinds)."""
    from .lesson import LessonRecipe
    from .presets import get_preset
    return LessonRecipe.from_dict(get_preset("lesson").lesson)


# ------------------------------------------------------------------------------------------------ 01
def zero_shot_types(model, trained: Sequence[str], held_out: Sequence[str], photos: Sequence[str] | None = None,
                    kinds: Sequence[str] | None = None, instances: int = 4, seed: int = 0) -> pd.DataFrame:
    """Per type: the frozen model's zero-shot SRCC against the level on contents the toy never saw (default: the
    recipe's held-out photos and procedural kinds), with ``n``, the chance ``band``, ``group`` ("trained" or
    "held out") and ``above_band`` (:func:`clipiqa.lesson.zero_shot_by_type`)."""
    from .lesson import zero_shot_by_type
    recipe = lesson_recipe()
    photos = recipe.heldout_photos if photos is None else photos
    kinds = recipe.heldout_kinds if kinds is None else kinds
    table = zero_shot_by_type(model, list(photos), list(kinds), [*trained, *held_out], instances=instances,
                              seed=seed)
    table.insert(1, "group", ["trained" if t in trained else "held out" for t in table["type"]])
    table["above_band"] = table["srcc"] > table["band"]
    return table[["type", "group", "srcc", "n", "band", "above_band", "visible"]]


GROUP_COLOURS = {"trained": "#2b8cbe", "held out": "#e6550d"}
"""Bar colours of :func:`plot_type_srcc`: the toy's trained types and the held-out ones."""


def plot_type_srcc(table: pd.DataFrame, caveat: Any = "", ax=None):
    """Horizontal bars of :func:`zero_shot_types`' SRCC per type, coloured by group, with the chance band drawn
    around 0 and ``n`` written beside each bar; on ``ax`` (else a new bare Figure). Returns the figure."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .palette import CHANCE
    if ax is None:
        ax = Figure(figsize=(7, 0.45 * len(table) + 1.4), layout="constrained").subplots()
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["srcc"], color=[GROUP_COLOURS[g] for g in table["group"]])
    band = float(table["band"].max())
    ax.axvspan(-band, band, color=CHANCE, alpha=0.2, zorder=0)
    for yi, (s, n) in zip(y, zip(table["srcc"], table["n"])):
        ax.text(max(s, 0) + 0.02, yi, f"{s:.2f} (n = {n})", va="center", fontsize=8)
    ax.set_yticks(y, table["type"])
    ax.set_xlim(-1, 1.3)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("zero-shot SRCC against the distortion level, held-out contents")
    handles = [Patch(color=c, label=f"{g} types") for g, c in GROUP_COLOURS.items()]
    handles.append(Patch(color=CHANCE, alpha=0.2, label=f"chance band ±{band:.2f}"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    label = getattr(caveat, "text", caveat)
    if label:
        ax.set_title(label, color="#a15c00", fontsize=8)
    return ax.figure


def types_takeaway(table: pd.DataFrame, caveat: Any = "") -> str:
    """One line: do the trained types rank above the chance band, and are the held-out types below every trained
    one? Computed from :func:`zero_shot_types`' table."""
    trained, held = table[table["group"] == "trained"], table[table["group"] == "held out"]
    listed = lambda part: ", ".join(f"{r.type} {r.srcc:.2f}" for r in part.itertuples())  # noqa: E731
    works = bool(len(trained)) and bool(trained["above_band"].all())
    floor = float(trained["srcc"].min()) if len(trained) else float("nan")
    fails = bool(len(held)) and bool((held["srcc"] < floor).all())
    inside = int((held["srcc"].abs() <= held["band"]).sum())
    text = (f"zero-shot on contents it never saw (n = {int(table['n'].iloc[0])} images per type, chance band "
            f"±{float(table['band'].max()):.2f}): trained types {listed(trained)} "
            + ("all above the band" if works else "NOT all above the band")
            + f"; held-out types {listed(held)} "
            + (f"all below the weakest trained type ({floor:.2f}), {inside} of {len(held)} inside the band"
               if fails else f"not all below the weakest trained type ({floor:.2f})")
            + (": zero-shot carries what the model was trained on, not more." if works and fails else "."))
    return takeaway(text, caveat)


# ------------------------------------------------------------------------------------------------ 03
def lesson_adapt_sets(folder: str | os.PathLike, distortion: str, test_instances: int = 6, seed: int = 0
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, test)`` demo-style tables (``path``, ``q``, ``content_id``, ``level``, ...) of one distortion
    type at levels 0-5, written as PNGs under ``folder``: train on the toy's training photos and one instance of
    each training kind; test on its held-out photos and ``test_instances`` instances of each held-out kind
    (contents disjoint from the training side). Synthetic severities, never human scores."""
    from .lesson import write_lesson_set
    recipe, folder = lesson_recipe(), Path(folder).resolve()
    train = write_lesson_set(folder / "train", photos=recipe.train_photos, kinds=recipe.train_kinds,
                             types=[distortion], instances=1, seed=seed)
    test = write_lesson_set(folder / "test", photos=recipe.heldout_photos, kinds=recipe.heldout_kinds,
                            types=[distortion], instances=test_instances, seed=seed)
    return train, test


def lesson_meta_references(size: int = 64, instances: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Reference images for meta pre-training tasks on the toy's training contents: its training photos
    (centre-cropped) and ``instances`` images of each training kind, ``{name: HxWx3 uint8}`` at ``size``."""
    from .data.demo import demo_references, stable_seed
    from .data.procedural import procedural_image
    recipe = lesson_recipe()
    refs = dict(demo_references(size, list(recipe.train_photos)))
    for kind in recipe.train_kinds:
        for i in range(instances):
            refs[f"{kind}{i}"] = procedural_image(kind, stable_seed(seed, "meta", kind, i), size)
    return refs


def _srcc_rows(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair (ranks, then Pearson); NaN where a row is constant."""
    a, b = rankdata(pred, axis=1), rankdata(target, axis=1)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def paired_gain(zero: Sequence[float], adapted: Sequence[float], target: Sequence[float], n_boot: int = 1000,
                alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Adapted - zero-shot SRCC on the same test images, with a paired percentile bootstrap CI (the same
    resampled images for both, ``numpy.random.default_rng(seed)``): ``zero``, ``adapted``, ``gain``, ``lo``,
    ``hi``, ``n`` and the chance ``band`` for n."""
    zero, adapted, target = (np.asarray(v, dtype=float) for v in (zero, adapted, target))
    if not len(zero) == len(adapted) == len(target) >= 3:
        raise ValueError(f"paired_gain needs three arrays of one length >= 3 (got {len(zero)}, {len(adapted)}, "
                         f"{len(target)}): the zero-shot and adapted predictions of the same test images")
    idx = np.random.default_rng(seed).integers(0, len(target), size=(int(n_boot), len(target)))
    diff = _srcc_rows(adapted[idx], target[idx]) - _srcc_rows(zero[idx], target[idx])
    lo, hi = np.nanpercentile(diff, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    rho0, rho1 = srcc(zero, target), srcc(adapted, target)
    return {"zero": rho0, "adapted": rho1, "gain": rho1 - rho0, "lo": float(lo), "hi": float(hi),
            "n": len(target), "band": chance_band(len(target))}


def gain_takeaway(gain: dict, what: str, caveat: Any = "") -> str:
    """One line from :func:`paired_gain`: the measured gain, its CI and what it means (``what`` says what was
    adapted on, e.g. "40 labels of held-out motion_blur")."""
    g = gain
    verdict = ("above zero: the labels taught what zero-shot missed" if g["lo"] > 0 else
               "below zero: adaptation made it worse" if g["hi"] < 0 else "includes zero: no clear gain")
    text = (f"after adapting on {what}, SRCC on {g['n']} held-out images of other contents went from "
            f"{g['zero']:.2f} (zero-shot) to {g['adapted']:.2f} (chance band ±{g['band']:.2f}): gain "
            f"{g['gain']:+.2f}, 95 % paired bootstrap CI [{g['lo']:+.2f}, {g['hi']:+.2f}], {verdict}.")
    return takeaway(text, caveat)


def semantic_loss_text(steps: pd.DataFrame, lam: float | None) -> str:
    """Why the semantic loss moved, from a run's step records (``loss_semantic``, ``cosine`` between the quality
    and semantic gradients, ``frac_projected``): nothing trains the semantic loss directly; with QGR at
    ``lam`` > 1 a projected step moves against the semantic gradient, and without QGR the quality updates alone
    move the scene predictions away from the frozen teacher. ``lam`` None: QGR off."""
    s = steps["loss_semantic"].astype(float).dropna()
    if len(s) < 2:
        return "the semantic loss was not recorded"
    first, last = float(s.iloc[0]), float(s.iloc[-1])
    trend = "rose" if last > first * 1.05 else "fell" if last < first * 0.95 else "stayed about level"
    text = (f"The semantic loss (KL of the scene predictions to the frozen teacher's) {trend} from {first:.2f} to "
            f"{last:.2f}: only the quality loss is minimised")
    cos = steps["cosine"].astype(float).dropna() if "cosine" in steps else pd.Series(dtype=float)
    if lam is not None and lam > 1 and len(cos):
        agree = float((cos > 0).mean())
        projected = float(steps["frac_projected"].astype(float).fillna(0).mean()) if "frac_projected" in steps else 0
        text += (f"; the two gradients agreed (cosine > 0) on {agree:.0%} of steps, and there QGR with lam "
                 f"{lam:g} > 1 steers the update against the semantic gradient (on average {projected:.0%} of "
                 "the tensors projected), which raises the semantic loss by design")
    elif lam is None:
        text += "; with QGR off nothing holds the scene predictions near the teacher's while the last blocks change"
    return text + "."


# ------------------------------------------------------------------------------------------------ 04, 06
def compare_takeaway(per_split: pd.DataFrame, a: str, b: str, caveat: Any = "", alpha: float = 0.05) -> str:
    """``a`` against ``b`` over every split both finished (``clipiqa.protocol.seeds.paired_wins``: wins, losses,
    ties and a two-sided sign test) as a takeaway: better / worse when the sign test says so at ``alpha``, else
    inconclusive, always with the numbers (:func:`~clipiqa.protocol.seeds.paired_verdict`)."""
    from .protocol.seeds import paired_verdict, paired_wins
    w = paired_wins(per_split, a, b)
    text = paired_verdict(w, alpha=alpha)
    if w["n"] and w["p_sign"] >= alpha:
        need = next(k for k in range(1, 64) if 2 * 0.5 ** k < alpha)
        if w["wins"] + w["losses"] < need:
            text += f"; a sign test cannot conclude on fewer than {need} splits that differ"
    return takeaway(text, caveat)
