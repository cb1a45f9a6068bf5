"""Figures for attributions and diagnostics (matplotlib). Computing lives in ``attribution`` / ``diagnostics``.

Every function returns the ``Figure``. A figure made from a random-init model carries a visible red caption
"random-init weights: scores are meaningless" (pass ``random_init=True``; the table-based plots read the table's
``random_init`` column themselves); one made from the lesson toy carries the toy caveat (the tables' ``note``);
both words come from :mod:`clipiqa.caveats`.
Score axes name their unit: the logit margin ``z_good - z_bad`` or p(good) (the tables' ``score_unit``).
"""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..caveats import RANDOM_INIT
from .diagnostics import FocusResult, eta_squared
from .notes import table_note

if TYPE_CHECKING:
    from .sanity import SanityResult

_NEUTRAL = "#555555"
UNIT_LABELS = {"margin": "logit margin z_good - z_bad", "p(good)": "p(good)"}
"""Axis words for the scores' units (``score_unit``)."""


def _map_array(attr_map, shape: tuple[int, int]) -> np.ndarray:
    """A float ``H x W`` array, bilinearly resized to ``shape`` when needed (``[C, H, W]`` is summed over C)."""
    a = attr_map.detach().float().cpu() if isinstance(attr_map, torch.Tensor) else torch.as_tensor(
        np.asarray(attr_map, dtype=np.float32))
    if a.dim() == 3:
        a = a.sum(0)
    if tuple(a.shape) != tuple(shape):
        a = torch.nn.functional.interpolate(a[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return a.numpy()


def _normalise(a: np.ndarray, signed: bool, percentile: float = 99.0) -> np.ndarray:
    """Scale to [0, 1] (magnitude) or [-1, 1] (signed) by a high percentile of ``|a|``, so one hot pixel
    does not wash out the map."""
    scale = float(np.percentile(np.abs(a), percentile)) or float(np.abs(a).max()) or 1.0
    return np.clip(a / scale, -1.0 if signed else 0.0, 1.0)


def add_random_init_caption(fig: Figure, random_init: bool) -> Figure:
    """Write "random-init weights: meaningless" in red across the bottom of ``fig`` when ``random_init``."""
    return add_caveat_caption(fig, RANDOM_INIT.text if random_init else "")


def add_caveat_caption(fig: Figure, note: str) -> Figure:
    """Write ``note`` across the bottom of ``fig``: the random-init note in bold red, another caveat (the lesson
    toy's) in dark blue; nothing for ""."""
    if note == RANDOM_INIT.text:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", color="red", fontsize=10, fontweight="bold")
    elif note:
        fig.text(0.5, 0.005, textwrap.fill(note, 120), ha="center", va="bottom", color="#1f4e6b", fontsize=8)
    return fig


def _table_random_init(table: pd.DataFrame, random_init: bool | None) -> bool:
    if random_init is not None:
        return bool(random_init)
    return bool(table["random_init"].any()) if "random_init" in table else bool(table.attrs.get("random_init"))


def _caption(fig: Figure, table: pd.DataFrame, random_init: bool | None) -> Figure:
    """The caveat caption of a figure drawn from ``table``: random init first, else the table's note."""
    random_init = _table_random_init(table, random_init)
    return add_caveat_caption(fig, RANDOM_INIT.text if random_init else table_note(table))


def unit_label(table: pd.DataFrame) -> str:
    """The axis words of a table's scores (its ``score_unit``; "score" when it does not say)."""
    unit = table["score_unit"].iloc[0] if "score_unit" in table and len(table) else None
    return UNIT_LABELS.get(unit, unit or "score")


def plot_attribution(image_uint8: np.ndarray, attr_map, ax=None, title: str | None = None, alpha: float = 0.5,
                     cmap: str = "inferno", signed: bool = False, random_init: bool = False, caveat: str = ""
                     ) -> Figure:
    """Overlay an attribution map on the image it explains.

    The map is shown as ``|attr|`` scaled to its 99th percentile (``signed=True``: red raises the score, blue
    lowers it, with a diverging colour map). A map of another size is resized to the image. ``caveat``: the
    model's caveat (e.g. the lesson toy's), written under a figure of its own.
    """
    own_figure = ax is None
    fig, ax = _figure_and_axes(ax, (4, 4))
    image = np.asarray(image_uint8)
    a = _map_array(attr_map, image.shape[:2])
    ax.imshow(image)
    if signed:
        ax.imshow(_normalise(a, True), cmap="RdBu_r" if cmap == "inferno" else cmap, vmin=-1, vmax=1, alpha=alpha)
    else:
        ax.imshow(_normalise(np.abs(a), False), cmap=cmap, vmin=0, vmax=1, alpha=alpha)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    # on axes given by the caller, the caller's figure gets the caption (see plot_attributions)
    return add_caveat_caption(fig, RANDOM_INIT.text if random_init else caveat) if own_figure else fig


def plot_attributions(images: Sequence[np.ndarray], maps_by_method: Mapping[str, Sequence], *,
                      titles: Sequence[str] | None = None, alpha: float = 0.5, cmap: str = "inferno",
                      random_init: bool = False, size: float = 2.6, caveat: str = "") -> Figure:
    """A grid: one row per image, the image then one overlay per method (``maps_by_method[m][i]``)."""
    methods = list(maps_by_method)
    n, cols = len(images), 1 + len(methods)
    fig, axes = plt.subplots(n, cols, figsize=(size * cols, size * n + 0.4), squeeze=False)
    for i, image in enumerate(images):
        axes[i, 0].imshow(np.asarray(image))
        axes[i, 0].set_axis_off()
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=9)
        for j, method in enumerate(methods):
            plot_attribution(image, maps_by_method[method][i], ax=axes[i, j + 1], title=method, alpha=alpha,
                             cmap=cmap)
    fig.tight_layout(rect=(0, 0.05 if random_init or caveat else 0, 1, 1))
    return add_caveat_caption(fig, RANDOM_INIT.text if random_init else caveat)


def plot_focus(table: pd.DataFrame, random_init: bool | None = None) -> Figure:
    """Distortion focus per reference (and per model when the table has a ``model`` column; one panel per
    distortion type when it holds several).

    Bars: focus with the distortion; dots: the clean-image control (``focus_clean``) when present: the gap
    between a bar and its dot is what the distortion does (bar above the dot: the attribution moves onto the
    damage; below: away from it). The dashed line at 1 means "no preference for the region" (content alone may
    put the dot far above it).
    """
    kinds = list(dict.fromkeys(table["distortion"])) if len(table) else [None]
    models = list(dict.fromkeys(table["model"])) if "model" in table else [None]
    refs = list(dict.fromkeys(table["reference"]))
    width = max(5.0, 0.6 * len(refs) * max(1, len(models)) + 2)
    fig, axes = plt.subplots(1, len(kinds), figsize=(width * len(kinds), 3.8), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        _focus_bars(ax, table if kind is None else table[table["distortion"] == kind], models, refs)
    axes[0, 0].set_ylabel("attribution focus on the test region\n(1 = no preference)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Distortion focus: a bar above its dot = the attribution moves onto the damage, below = away "
                 "from it", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _caption(fig, table, random_init)


def _focus_bars(ax, table: pd.DataFrame, models: list, refs: list) -> None:
    width = 0.8 / len(models)
    x = np.arange(len(refs))
    for k, model in enumerate(models):
        sub = table if model is None else table[table["model"] == model]
        sub = sub.set_index("reference").reindex(refs)
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, sub["focus"], width=width * 0.9, label=model or "distorted")
        if "focus_clean" in sub:
            ax.plot(pos, sub["focus_clean"], "o", color="black", markersize=3,
                    label="same region, clean" if k == 0 else None)
    ax.axhline(1.0, color=_NEUTRAL, linestyle="--", linewidth=1)
    ax.set_xticks(x, refs, rotation=45, ha="right", fontsize=8)
    first = table.iloc[0] if len(table) else None
    ax.set_title(f"{first['distortion']} level {first['level']}, {first['method']}" if first is not None else "",
                 fontsize=9)


def plot_content_vs_distortion(table: pd.DataFrame, random_init: bool | None = None) -> Figure:
    """Left: score vs distortion level, one line per reference (mean over types). Right: eta squared of the
    score by level, content and type (one group of bars per model when the table has a ``model`` column)."""
    has_model = "model" in table
    models = list(dict.fromkeys(table["model"])) if has_model else [None]
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for row, model in enumerate(models):
        sub = table if model is None else table[table["model"] == model]
        _score_lines(axes[row, 0], sub, model)
        _eta_bars(axes[row, 1], sub, model)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _caption(fig, table, random_init)


def _score_lines(ax, table: pd.DataFrame, model: str | None) -> None:
    curves = table.groupby(["reference", "level"], sort=False)["score"].mean().unstack("level")
    for name, values in curves.iterrows():
        ax.plot(values.index, values.values, marker="o", markersize=3, linewidth=1, label=name)
    ax.set_xlabel("distortion level (0 = reference)")
    ax.set_ylabel(f"{unit_label(table)}\n(mean over types)")
    ax.set_title("Score vs level" + (f" - {model}" if model else ""), fontsize=10)
    ax.legend(fontsize=7, ncol=2)


def _eta_bars(ax, table: pd.DataFrame, model: str | None) -> None:
    grid = table[table["level"] >= 1]
    values = {"level": eta_squared(grid["score"], grid["level"]),
              "content": eta_squared(grid["score"], grid["reference"]),
              "type": eta_squared(grid["score"], grid["distortion"])}
    ax.bar(list(values), [0 if np.isnan(v) else v for v in values.values()], color=["#d62728", "#1f77b4", "#7f7f7f"])
    for i, v in enumerate(values.values()):
        ax.text(i, (0 if np.isnan(v) else v) + 0.02, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"eta squared\n(share of {unit_label(table)} variance)", fontsize=8)
    ax.set_title("Explained by" + (f" - {model}" if model else ""), fontsize=10)


def plot_scene_drift(table: pd.DataFrame, random_init: bool | None = None) -> Figure:
    """Left: per-model scene drift KL(zero-shot || model), bar = mean, dots = images. Right: the share of
    images per top scene, per model ("plant" is shown as "plant (botanical)")."""
    models = list(dict.fromkeys(table["model"]))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    means = table.groupby("model", sort=False)["scene_drift"].mean().reindex(models)
    ax.bar(range(len(models)), means.values, color="#9ecae1")
    rng = np.random.default_rng(0)
    for i, model in enumerate(models):
        values = table.loc[table["model"] == model, "scene_drift"].to_numpy()
        ax.plot(i + rng.uniform(-0.15, 0.15, len(values)), values, "o", color="black", markersize=3)
    ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("KL(zero-shot || model) of scenes")
    ax.set_title("Scene drift from zero-shot CLIP", fontsize=10)
    shares = pd.crosstab(table["model"], table["top_scene_label"], normalize="index").reindex(models)
    bottom = np.zeros(len(models))
    for label in shares.columns:
        ax2.bar(range(len(models)), shares[label].values, bottom=bottom, label=label)
        bottom += shares[label].values
    ax2.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
    ax2.set_ylabel("share of images")
    ax2.set_title("Top scene per image", fontsize=10)
    ax2.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _caption(fig, table, random_init)


def _figure_and_axes(ax, figsize: tuple[float, float]):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


# ---------------------------------------------------------------------------------------------- maps with their test
def draw_box(ax, box: tuple[int, int, int, int], label: str | None = "test region") -> None:
    """Outline ``(top, left, bottom, right)`` in input pixels on an image axis (dashed cyan, with a label)."""
    top, left, bottom, right = box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="cyan",
                           linewidth=1.5, linestyle="--"))
    if label:
        ax.text(left + 1, top + 1, label, color="cyan", fontsize=6, va="top", ha="left")


def plot_focus_maps(results: FocusResult | Mapping[str, FocusResult], max_images: int = 4, alpha: float = 0.5,
                    size: float = 2.4) -> Figure:
    """The focus test as pictures: per photo (rows) and result (columns, e.g. per model and distortion), the
    photo with its distorted rectangle, the absolute attribution overlaid and the rectangle outlined, with the
    focus and its clean control in the title. Results need their maps (``keep_maps=True``)."""
    results = {"": results} if isinstance(results, FocusResult) else dict(results)
    missing = [k or "the result" for k, r in results.items() if r.maps is None or not r.boxes]
    if missing:
        raise ValueError(f"{', '.join(missing)} has no maps: run distortion_focus(..., keep_maps=True) or "
                         "compare_models(..., keep_maps=True)")
    n = min(max_images, max(len(r.images) for r in results.values()))
    fig, axes = plt.subplots(n, len(results), figsize=(size * len(results), (size + 0.45) * n + 0.6),
                             squeeze=False)
    for j, (label, result) in enumerate(results.items()):
        for i in range(n):
            ax = axes[i, j]
            if i >= len(result.images):
                ax.set_axis_off()
                continue
            row = result.table.iloc[i]
            title = (f"{label}\n" if label else "") + f"{row['reference']}: focus {row['focus']:.2f}"
            if "focus_clean" in row:
                title += f" (clean {row['focus_clean']:.2f})"
            plot_attribution(result.images[i], result.maps[i], ax=ax, alpha=alpha, title=title)
            ax.title.set_fontsize(8)
            draw_box(ax, result.boxes[i], f"{row['distortion']} {row['level']}")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    first = next(iter(results.values()))
    return _caption(fig, first.table, first.random_init or None)


def plot_sanity_check(result: "SanityResult", max_images: int = 4, alpha: float = 0.5, size: float = 2.4) -> Figure:
    """The randomisation sanity check as pictures: per image, the image, the trained model's absolute map and one
    map per randomisation step with its Spearman correlation; the pass/fail verdict in the title."""
    steps = list(result.randomized)
    n = min(max_images, result.trained.shape[0])
    has_images = bool(result.images)
    cols = int(has_images) + 1 + len(steps)
    fig, axes = plt.subplots(n, cols, figsize=(size * cols, (size + 0.5) * n + 0.9), squeeze=False)
    names = list(dict.fromkeys(result.table["image"]))
    rho = result.table.set_index(["image", "step"])["spearman"]
    for i in range(n):
        base = np.asarray(result.images[i]) if has_images else np.zeros((*result.trained.shape[1:], 3), np.uint8)
        col = 0
        if has_images:
            axes[i, 0].imshow(base)
            axes[i, 0].set_axis_off()
            axes[i, 0].set_title(names[i], fontsize=8)
            col = 1
        plot_attribution(base, result.trained[i], ax=axes[i, col], alpha=alpha if has_images else 1.0,
                         title="trained model")
        for j, step in enumerate(steps):
            ax = axes[i, col + 1 + j]
            plot_attribution(base, result.randomized[step][i], ax=ax, alpha=alpha if has_images else 1.0,
                             title=f"{textwrap.fill(step, 32)}\nrank corr. {rho[(names[i], step)]:.2f}")
            ax.title.set_fontsize(8)
    verdict = "passes" if result.passed else "fails the sanity check"
    fig.suptitle(f"Randomisation sanity check ({result.summary['method']}, {result.summary['mode']}): {verdict}",
                 fontsize=10, color="black" if result.passed else "#a12a2a")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return add_caveat_caption(fig, result.summary.get("note", ""))


__all__ = ["plot_attribution", "plot_attributions", "plot_focus", "plot_content_vs_distortion", "plot_scene_drift",
           "plot_focus_maps", "plot_sanity_check", "draw_box", "add_random_init_caption", "add_caveat_caption",
           "unit_label", "UNIT_LABELS"]
