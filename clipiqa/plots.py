"""The notebooks' figures of scores and learning curves, drawn from tables that :mod:`clipiqa.review` and
:mod:`clipiqa.feasibility` compute (no numbers are computed here beyond placing them).

Each function draws on the ``fig`` (or ``ax``) it is given, e.g. ``plt.figure()`` in a notebook so that it shows
inline, else on a new bare ``matplotlib.figure.Figure``, and returns the figure. ``caveat`` is what
:func:`clipiqa.notebook.caveat` says about the model (toy, random init); it goes on the figure when not empty.
Arms take their colours from :mod:`clipiqa.palette`.

* :func:`plot_gallery`: thumbnails in score order, worst to best, with their scores;
* :func:`plot_fit`: prediction against label, SRCC, n and chance band in the title;
* :func:`plot_worst`: the worst-ranked predictions as thumbnails with label and prediction;
* :func:`plot_levels`: mean score per distortion level, ±1 SD bars and n at every point;
* :func:`plot_learning_curve`: notebook 07's held-out SRCC against the number of labels.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from .palette import CHANCE, HUMAN_CEILING, arm_colour

__all__ = ["plot_fit", "plot_gallery", "plot_learning_curve", "plot_levels", "plot_worst"]

THUMB = 96  # pixels of a thumbnail's longest side
WARN = "#a15c00"  # the colour of a caveat (toy model, random init) on a figure


def _figure(fig, figsize):
    if fig is not None:
        return fig
    from matplotlib.figure import Figure
    return Figure(figsize=figsize, layout="constrained")


def _thumb(path) -> np.ndarray:
    from .imageio import load_image
    image = load_image(path)
    image.thumbnail((THUMB, THUMB))
    return np.asarray(image)


def _mark(fig, caveat: str, title: str) -> None:
    fig.suptitle(title + (f"\n{caveat}" if caveat else ""), fontsize=9, color=WARN if caveat else "black")


def _thumbnails(fig, rows: pd.DataFrame, captions: list[str], cols: int) -> None:
    n_rows = max(1, int(np.ceil(len(rows) / cols)))
    axes = np.atleast_1d(fig.subplots(n_rows, cols, squeeze=False).ravel())
    for ax in axes:
        ax.set_axis_off()
    for ax, path, caption in zip(axes, rows["path"], captions):
        ax.imshow(_thumb(path))
        ax.set_title(caption, fontsize=7)


def plot_gallery(picks: pd.DataFrame, score: str = "score", label: str | None = None, *, cols: int = 6,
                 caveat: str = "", score_name: str = "score", fig=None):
    """Thumbnails of :func:`clipiqa.review.gallery_picks` rows, lowest score first (left to right, top to
    bottom), each captioned with its rank, score and (``label``) label."""
    fig = _figure(fig, (1.5 * cols, 1.9 * max(1, int(np.ceil(len(picks) / cols)))))
    captions = [f"#{r.rank} of {r.n}\n{score_name} {getattr(r, score):.2f}"
                + (f", label {getattr(r, label):.2f}" if label else "") for r in picks.itertuples()]
    _thumbnails(fig, picks, captions, cols)
    _mark(fig, caveat, f"{len(picks)} of {int(picks['n'].iloc[0]) if len(picks) else 0} images by {score_name}, "
                       "worst (top left) to best")
    return fig


def plot_fit(pred, label, fit, *, xlabel: str = "label", ylabel: str = "prediction", caveat: str = "",
             what: str = "", ax=None):
    """Prediction against label, one dot per image; ``fit`` (:func:`clipiqa.review.fit_summary`) in the title,
    with ``what`` before it (e.g. ``"coop+vpt, split 0 held out"``)."""
    fig = ax.figure if ax is not None else _figure(None, (4.2, 3.6))
    ax = ax if ax is not None else fig.add_subplot()
    ax.scatter(label, pred, s=18, alpha=0.7, color="#1f77b4", edgecolor="none")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{what}: {fit.title()}" if what else fit.title(), fontsize=9)
    if caveat:
        fig.suptitle(textwrap.fill(caveat, 70), fontsize=7, color=WARN)
    return fig


def plot_worst(rows: pd.DataFrame, pred: str = "pred", label: str = "q", *, cols: int = 6, caveat: str = "",
               fig=None):
    """Thumbnails of :func:`clipiqa.review.worst_predictions` rows, largest rank error first, each with its label,
    prediction and both ranks."""
    fig = _figure(fig, (1.6 * cols, 2.1 * max(1, int(np.ceil(len(rows) / cols)))))
    captions = [f"label {getattr(r, label):.2f} (#{r.label_rank:g})\npred {getattr(r, pred):.2f} (#{r.pred_rank:g})"
                f"\n{_places(r.rank_error)}" for r in rows.itertuples()]
    _thumbnails(fig, rows, captions, cols)
    n = int(rows["n"].iloc[0]) if len(rows) else 0
    _mark(fig, caveat, f"the {len(rows)} worst-ranked of {n} held-out images (rank 1 = lowest of {n})")
    return fig


def _places(error: float) -> str:
    if error == 0:
        return "ranked as labelled"
    return f"ranked {abs(error):g} place{'s' if abs(error) != 1 else ''} too {'high' if error > 0 else 'low'}"


def plot_levels(summary: pd.DataFrame, group: str = "distortion", level: str = "level", *, ylabel: str = "score",
                caveat: str = "", ax=None):
    """Mean per level (:func:`clipiqa.review.level_summary`), one line per ``group``, ±1 SD bars, and the number
    of images beside every point (the means of 2 images and of 20 do not look alike)."""
    fig = ax.figure if ax is not None else _figure(None, (7, 3.5))
    ax = ax if ax is not None else fig.add_subplot()
    groups = list(dict.fromkeys(summary[group]))
    for k, (name, sub) in enumerate(summary.groupby(group, sort=False)):
        x = sub[level].to_numpy(float) + (k - (len(groups) - 1) / 2) * 0.15  # side by side: bars do not hide
        bars = ax.errorbar(x, sub["mean"], yerr=sub["sd"].fillna(0), marker="o", capsize=2, label=name, lw=1.2)
        for xi, yi, ni in zip(x, sub["mean"], sub["n"]):
            ax.annotate(f"{ni}", (xi, yi), xytext=(3, 3), textcoords="offset points", ha="left", va="bottom",
                        fontsize=7, color=bars[0].get_color(), zorder=5,
                        bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_xticks(sorted(summary[level].unique()))
    ax.set_xlabel(level)
    ax.set_ylabel(ylabel)
    n = summary["n"]
    ax.set_title(f"mean ± 1 SD over images; the number beside each point is its n ({n.min()} to {n.max()})",
                 fontsize=8)
    if caveat:
        fig.suptitle(textwrap.fill(caveat, 110), fontsize=8, color=WARN)
    ax.legend(title=group, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines
    return fig


def _splits_label(n_splits: int) -> str:
    return f"mean over {n_splits} splits" if n_splits > 1 else "one split"


def plot_learning_curve(curve: pd.DataFrame, *, ceiling=None, note: str = "", caveat: str = "", ax=None):
    """Held-out SRCC with its 95 % CI against labels used for training, one colour per arm. ``curve`` is
    :func:`clipiqa.feasibility.learning_curve`; zero-shot (no labels) is one dashed level, not a curve; ``ceiling``
    (a :class:`clipiqa.agreement.Ceiling`) a green band and line, drawn (and in the legend) only when available;
    ``note`` (:func:`clipiqa.feasibility.small_n_note`) is written on the chance band."""
    fig = ax.figure if ax is not None else _figure(None, (7.5, 3.8))
    ax = ax if ax is not None else fig.add_subplot()
    band = float(curve["band"].mean())
    ax.axhspan(-band, band, color=CHANCE, alpha=0.2, label=f"chance band (±{band:.2f})")
    if ceiling is not None and getattr(ceiling, "available", False):
        ax.axhspan(ceiling.split_half_lo, ceiling.split_half_hi, color=HUMAN_CEILING, alpha=0.15)
        ax.axhline(ceiling.split_half, color=HUMAN_CEILING, lw=2,  # a line too: a CI of zero width is no band
                   label=f"human ceiling ({ceiling.split_half:.2f})")
    zero = curve[curve["method"] == "zero-shot"]
    if len(zero):
        level = float(zero["srcc"].mean())
        ax.axhline(level, color=arm_colour("zero-shot"), ls="--", label=f"zero-shot, no labels ({level:.2f})")
    learned = curve[curve["method"] != "zero-shot"]
    methods = list(dict.fromkeys(learned["method"]))
    for k, method in enumerate(methods):
        sub = learned[learned["method"] == method]
        dodge = (k - (len(methods) - 1) / 2) * 0.8  # side by side, so the CIs do not hide each other
        ax.errorbar(sub["n_train"] + dodge, sub["srcc"], yerr=[sub["srcc"] - sub["lo"], sub["hi"] - sub["srcc"]],
                    marker="o", capsize=3, label=method, color=arm_colour(method))
    ax.set_xlabel("labelled images used for training")
    ax.set_xticks(sorted(curve["n_train"].unique()))  # label counts are whole numbers
    ax.set_ylabel(f"held-out SRCC ({_splits_label(int(curve['n_splits'].max()))}, 95% CI)")
    ax.set_ylim(-1.08, 1.08)  # a little beyond ±1, so a ceiling or a CI at 1.00 is not hidden by the frame
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the data, not over it
    if note:  # under the legend, whose first entry is the chance band; never over the data
        ax.text(1.02, 0.0, textwrap.fill(note, 38), transform=ax.transAxes, fontsize=7.5, va="bottom",
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": CHANCE})
    if caveat:
        ax.set_title(caveat, color=WARN, fontsize=8)
    return fig
