"""Quantified diagnostics: does a quality score track distortions or content? (docs/design.md, 'Explainability')

* :func:`distortion_focus` distorts a known rectangle of each clean reference and measures how much of the
  attribution mass falls inside it, relative to its area (1 = no preference). The same rectangle of the clean
  image is the control (``focus_clean``: photo content alone can draw the attribution there, e.g. 2.1 on a sharp
  corner); what the distortion does is the gain ``focus - focus_clean``: above 0 the attribution moves onto the
  damage, below 0 away from it (to the detail left intact), near 0 within its spread it does not move.
  :mod:`clipiqa.explain.reading` turns these numbers into one verdict line.
* :func:`content_vs_distortion` scores a grid references x distortion types x levels and reports the share of
  score variance explained by the distortion level, by the content and by the type (eta squared).
* :func:`scene_drift_table` measures how far each model's scene distribution moved from zero-shot CLIP.
* :func:`compare_models` runs the three for several models into one tidy table.

"Score" here is the model's output: for an ``IQAModel`` the logit margin ``z_high - z_low`` (it does
not saturate, so eta squared, score drops and attributions stay informative), unless a ``target_fn`` is given
(``clipiqa.inference.p_high_target`` for p_high).

Every result says whether a random-init model took part (``random_init``); then its numbers describe the
machinery only and carry the note "random-init weights: scores are meaningless". Numbers of the lesson toy carry
its caveat in the same ``note`` column (both from :mod:`clipiqa.caveats`). ``score_unit`` says what the scores are: "margin"
(the logit margin, the default) or "p(good)" (with ``target_fn=p_high_target``).

Geometry: :func:`to_model_input` resizes and centre-crops exactly like the model's own preprocessing, so that
masks and attribution maps live in the same (input pixel) coordinates.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from ..data.demo import DEFAULT_TYPES
from ..data.distortions import apply_distortion
from .attribution import TargetFn, FrozenCLIP, attribute, is_random_init, frozen_clip
from .inputs import (References, as_named, model_preprocess, pixels_to_input, score_tensors, split_transform,
                     to_model_input)
from .notes import note_for, score_unit, with_notes
from .scene import scene_drift_table, summarize_scene_drift


# ---------------------------------------------------------------------------------------------- results
@dataclass
class FocusResult:
    """:func:`distortion_focus` output: ``summary`` numbers, one ``table`` row per reference, and the maps
    (``boxes``: the distorted rectangles as ``(top, left, bottom, right)``, for the figures)."""
    summary: dict[str, Any]
    table: pd.DataFrame
    random_init: bool
    images: list[np.ndarray] = field(default_factory=list, repr=False)  # distorted uint8 crops
    masks: list[np.ndarray] = field(default_factory=list, repr=False)   # bool H x W
    maps: Tensor | None = field(default=None, repr=False)               # |attribution| [N, H, W]
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list, repr=False)

    @property
    def verdict(self) -> str:
        """One line: does the attribution move onto the distortion? (:func:`clipiqa.explain.reading.focus_verdict`)"""
        from .reading import focus_verdict
        return focus_verdict(self.table)


@dataclass
class CVDResult:
    """:func:`content_vs_distortion` output: ``summary`` (eta squared ...) and one ``table`` row per image."""
    summary: dict[str, Any]
    table: pd.DataFrame
    random_init: bool


# ---------------------------------------------------------------------------------------------- focus
def focus_ratio(attr_map: Tensor | np.ndarray, mask: np.ndarray | Tensor) -> float:
    """(attribution mass inside ``mask`` / total mass) / (mask area / image area), on ``|attr_map|``.

    1 = the attribution has no preference for the masked region; > 1 = it concentrates there; NaN when the
    map is all zero.
    """
    a = np.abs(np.asarray(attr_map.detach().cpu() if isinstance(attr_map, Tensor) else attr_map, dtype=np.float64))
    m = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask, dtype=bool)
    if a.shape != m.shape:
        raise ValueError(f"attribution map {a.shape} and mask {m.shape} must have the same shape")
    area = m.mean()
    if area in (0.0, 1.0):
        raise ValueError("the mask must cover part of the image, not none or all of it")
    total = a.sum()
    if not total > 0:
        return float("nan")
    return float(a[m].sum() / total / area)


def rectangle_mask(height: int, width: int, fraction: float, rng: np.random.Generator | None = None,
                   corner: int | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A rectangle covering ``fraction`` of the image (same aspect ratio as the image).

    Placed at a random position drawn from ``rng``, or in ``corner`` 0..3 (top-left, top-right, bottom-left,
    bottom-right). Returns ``(bool mask H x W, (top, left, bottom, right))``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"mask_fraction={fraction} is not allowed; use a number between 0 and 1")
    side = math.sqrt(fraction)
    mh, mw = max(1, round(height * side)), max(1, round(width * side))
    if corner is not None:
        top = 0 if corner in (0, 1) else height - mh
        left = 0 if corner in (0, 2) else width - mw
    else:
        rng = rng if rng is not None else np.random.default_rng(0)
        top, left = int(rng.integers(0, height - mh + 1)), int(rng.integers(0, width - mw + 1))
    mask = np.zeros((height, width), dtype=bool)
    mask[top:top + mh, left:left + mw] = True
    return mask, (top, left, top + mh, left + mw)


def distortion_focus(model: nn.Module, references: References, distortion: str = "gaussian_blur", level: int = 4,
                     mask_fraction: float = 0.25, method: str = "ig", seed: int = 0, *,
                     placement: str = "random", control: bool = True, transform: Callable | None = None,
                     target_fn: TargetFn | None = None, keep_maps: bool = True, **attr_options: Any) -> FocusResult:
    """Distort a known rectangle of each clean reference; measure the attribution focus on it.

    For each reference: crop it like the model's preprocessing, draw a rectangle covering ``mask_fraction``
    (``placement`` "random" from ``seed``, or "quadrants": the four corners in turn), apply ``distortion`` at
    ``level`` inside it only, attribute the score (``method``, absolute maps) and compute :func:`focus_ratio`.
    With ``control`` the clean image is attributed too, with the same mask: its focus (``focus_clean``) is what
    the content alone draws to that region, and ``focus - focus_clean`` what the distortion adds.
    """
    if placement not in ("random", "quadrants"):
        raise ValueError(f"placement={placement!r} is not allowed; use 'random' or 'quadrants'")
    rng = np.random.default_rng(seed)
    random_init = is_random_init(model)
    rows, images, masks, maps, boxes = [], [], [], [], []
    for i, (name, reference) in enumerate(as_named(references, "reference").items()):
        x_clean, crop = to_model_input(model, reference, transform)
        corner = i % 4 if placement == "quadrants" else None
        mask, box = rectangle_mask(crop.shape[0], crop.shape[1], mask_fraction, rng, corner)
        distorted = apply_distortion(crop, distortion, level, rng=rng, mask=mask)
        x_dist = pixels_to_input(model, distorted, transform)
        batch = torch.stack([x_dist, x_clean]) if control else x_dist[None]
        attr = attribute(model, batch, method, target_fn=target_fn, absolute=True, **attr_options)
        scores = score_tensors(model, batch, target_fn=target_fn)
        changed = float((distorted != crop).any(axis=2)[mask].mean())
        row = {"reference": name, "distortion": distortion, "level": level, "method": method,
               "mask_fraction": float(mask.mean()), "mask_top": box[0], "mask_left": box[1], "mask_bottom": box[2],
               "mask_right": box[3], "mask_pixels_changed": changed, "focus": focus_ratio(attr[0], mask),
               "score_distorted": float(scores[0]), "score_unit": score_unit(target_fn)}
        if control:
            row.update(focus_clean=focus_ratio(attr[1], mask), score_clean=float(scores[1]),
                       score_drop=float(scores[1] - scores[0]))
        rows.append(row)
        if keep_maps:
            images.append(distorted)
            masks.append(mask)
            maps.append(attr[0])
            boxes.append(box)
    table = with_notes(pd.DataFrame(rows), random_init, model)
    summary = _focus_summary(table, distortion, level, method, mask_fraction, random_init)
    return FocusResult(summary, table, random_init, images, masks, torch.stack(maps) if maps else None, boxes)


def _focus_summary(table: pd.DataFrame, distortion: str, level: int, method: str, mask_fraction: float,
                   random_init: bool) -> dict[str, Any]:
    summary = {"n_images": len(table), "distortion": distortion, "level": level, "method": method,
               "mask_fraction": mask_fraction, "focus_mean": _mean(table, "focus"),
               "focus_median": float(table["focus"].median()) if len(table) else float("nan"),
               "share_focus_above_1": float((table["focus"] > 1).mean()) if len(table) else float("nan")}
    if "focus_clean" in table:
        gain = table["focus"] - table["focus_clean"]
        summary.update(focus_clean_mean=_mean(table, "focus_clean"), focus_gain_mean=float(gain.mean()),
                       focus_gain_se=_standard_error(gain), share_gain_above_0=float((gain > 0).mean()),
                       score_drop_mean=_mean(table, "score_drop"))
    summary.update(score_unit=table["score_unit"].iloc[0] if len(table) else "", random_init=random_init,
                   note=table["note"].iloc[0] if len(table) else note_for(random_init))
    return summary


def _standard_error(values: pd.Series) -> float:
    """Standard error of the mean of the finite values (NaN below two)."""
    v = values.dropna().to_numpy(dtype=np.float64)
    return float(v.std(ddof=1) / math.sqrt(v.size)) if v.size >= 2 else float("nan")


# ---------------------------------------------------------------------------------------------- content vs distortion
def eta_squared(values: Sequence[float] | np.ndarray, groups: Sequence[Any] | np.ndarray) -> float:
    """Share of the variance of ``values`` explained by ``groups``: SS_between / SS_total.

    NaN values are dropped; NaN when fewer than two values remain or ``SS_total == 0``.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups, dtype=object)
    if v.shape != g.shape:
        raise ValueError(f"values {v.shape} and groups {g.shape} must have the same length")
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    if v.size < 2:
        return float("nan")
    ss_total = float(((v - v.mean()) ** 2).sum())
    if ss_total == 0:
        return float("nan")
    frame = pd.DataFrame({"v": v, "g": g})
    stats = frame.groupby("g", sort=False)["v"].agg(["mean", "size"])
    ss_between = float((stats["size"] * (stats["mean"] - v.mean()) ** 2).sum())
    return ss_between / ss_total


def content_vs_distortion(model: nn.Module, references: References, types: Iterable[str] | None = None,
                          levels: Iterable[int] = (1, 2, 3, 4, 5), seed: int = 0, batch_size: int = 32, *,
                          include_reference: bool = True, transform: Callable | None = None,
                          target_fn: TargetFn | None = None) -> CVDResult:
    """Score references x ``types`` x ``levels``; how much of the score variance each factor explains.

    Distortions are applied to the model-input crop (what the model sees), with one seed per (reference, type)
    so that the levels of a cell are nested. ``include_reference`` adds the clean crops as level 0
    (distortion "reference") for the curves; the eta squared values and rank correlations use the distorted
    grid only (level >= 1):

    * ``eta2_level``, ``eta2_content``, ``eta2_type``: one-way eta squared of the score by level, by reference,
      by type. A score that tracks quality has ``eta2_level`` well above ``eta2_content``.
    * ``srcc_level``: Spearman correlation of score and level over the grid (negative = worse with level);
      ``srcc_level_within``: its mean over (reference, type) cells.
    """
    types = list(DEFAULT_TYPES if types is None else types)
    levels = sorted(set(int(v) for v in levels))

    rows, scores = [], []
    grid = _distorted_grid(model, references, types, levels, seed, include_reference, transform)
    for chunk in _chunks(grid, batch_size):  # only one batch of tensors in memory at a time
        rows += [row for row, _ in chunk]
        scores.append(score_tensors(model, torch.stack([x for _, x in chunk]), batch_size, target_fn))
    table = pd.DataFrame(rows, columns=["reference", "distortion", "level"])
    table["score"] = np.concatenate(scores) if scores else np.zeros(0)
    table["score_unit"] = score_unit(target_fn)
    random_init = is_random_init(model)
    table = with_notes(table, random_init, model)
    return CVDResult(cvd_summary(table, random_init), table, random_init)


def _distorted_grid(model: nn.Module, references: References, types: list[str], levels: list[int], seed: int,
                    include_reference: bool, transform: Callable | None) -> Iterator[tuple[dict, Tensor]]:
    """Yield ``(row, input tensor)`` for every reference (level 0) and reference x type x level."""
    for r, (name, reference) in enumerate(as_named(references, "reference").items()):
        x_clean, crop = to_model_input(model, reference, transform)
        if include_reference:
            yield {"reference": name, "distortion": "reference", "level": 0}, x_clean
        for t, kind in enumerate(types):
            for level in levels:  # a fresh generator with the same seed per level: nested levels
                distorted = apply_distortion(crop, kind, level, rng=np.random.default_rng([seed, r, t]))
                yield {"reference": name, "distortion": kind, "level": level}, pixels_to_input(model, distorted,
                                                                                               transform)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cvd_summary(table: pd.DataFrame, random_init: bool = False) -> dict[str, Any]:
    """The content-vs-distortion numbers of a table with ``reference, distortion, level, score``."""
    grid = table[table["level"] >= 1]
    summary = {"n_images": len(grid), "n_references": grid["reference"].nunique(),
               "n_types": grid["distortion"].nunique(), "levels": sorted(grid["level"].unique().tolist()),
               "eta2_level": eta_squared(grid["score"], grid["level"]),
               "eta2_content": eta_squared(grid["score"], grid["reference"]),
               "eta2_type": eta_squared(grid["score"], grid["distortion"]),
               "srcc_level": _spearman(grid["level"], grid["score"]),
               "srcc_level_within": _nanmean([_spearman(c["level"], c["score"])
                                              for _, c in grid.groupby(["reference", "distortion"])])}
    summary["dominant"] = ("distortion level" if summary["eta2_level"] > summary["eta2_content"]
                           else "content" if summary["eta2_content"] > summary["eta2_level"] else "undecided")
    note = table["note"].iloc[0] if "note" in table and len(table) else note_for(random_init)
    summary.update(random_init=random_init, note=note)
    return summary


def _spearman(x: Iterable[float], y: Iterable[float]) -> float:
    x, y = np.asarray(list(x), dtype=np.float64), np.asarray(list(y), dtype=np.float64)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y)[0])


def _nanmean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _mean(table: pd.DataFrame, column: str) -> float:
    return float(table[column].mean()) if len(table) else float("nan")


# ---------------------------------------------------------------------------------------------- comparison
UNITS = {"focus_mean": "ratio (1 = no preference)", "focus_median": "ratio (1 = no preference)",
         "share_focus_above_1": "share of images", "share_gain_above_0": "share of images",
         "focus_clean_mean": "ratio (1 = no preference)",
         "focus_gain_mean": "focus - focus_clean", "focus_gain_se": "focus - focus_clean",
         "score_drop_mean": "{unit}", "eta2_level": "share of {unit} variance",
         "eta2_content": "share of {unit} variance", "eta2_type": "share of {unit} variance",
         "srcc_level": "rank correlation", "srcc_level_within": "rank correlation",
         "scene_drift_mean": "KL (nats)", "top_scene_agreement": "share of images"}
"""The unit of each metric of :func:`compare_models` (``{unit}``: the scores' unit, "margin" or "p(good)")."""
FOCUS_METRICS = ("focus_mean", "focus_clean_mean", "focus_gain_mean", "focus_gain_se", "share_gain_above_0",
                 "score_drop_mean")
"""The focus rows of :func:`compare_models`: focus beside its clean control and their difference (the share of
photos with focus above 1 stays in the summary, but says little without the control)."""


def compare_models(models: Mapping[str, nn.Module], references: References, *,
                   distortion: str | Sequence[str] = "gaussian_blur", level: int = 4, mask_fraction: float = 0.25,
                   method: str = "ig", types: Iterable[str] | None = None, levels: Iterable[int] = (1, 2, 3, 4, 5),
                   seed: int = 0, batch_size: int = 32, scene_images: Tensor | References | None = None,
                   teacher: nn.Module | None = None, return_tables: bool = False, keep_maps: bool = False,
                   **attr_options: Any) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, Any]]:
    """Run the three diagnostics for every model; one tidy table ``model, diagnostic, metric, unit, value``.

    ``models``: labels -> models, e.g. ``{"zero-shot": frozen_clip(m), "adapted": m, "adapted + QGR": m_qgr}``.
    ``distortion``: the focus test's distortion, or a list of them (then one ``distortion_focus: TYPE``
    diagnostic per type, the per-type tables of :func:`clipiqa.explain.reading.type_table`). The scene drift uses
    ``scene_images`` (default: the clean references) against ``teacher`` (default: the first model with adapters
    off). With ``return_tables`` also the detailed tables (``focus``, ``content``, ``scene``), each with a
    ``model`` column, ready for the plots; with ``keep_maps`` also ``focus_results``: ``{(model, distortion):
    FocusResult}`` with the maps and rectangles (:func:`clipiqa.explain.plots.plot_focus_maps`).
    """
    kinds = [distortion] if isinstance(distortion, str) else list(distortion)
    types = None if types is None else list(types)
    levels = tuple(levels)
    rows, focus_tables, cvd_tables, results = [], [], [], {}
    for label, model in models.items():
        for kind in kinds:
            focus = distortion_focus(model, references, kind, level, mask_fraction, method, seed,
                                     keep_maps=keep_maps, **attr_options)
            name = "distortion_focus" if isinstance(distortion, str) else f"distortion_focus: {kind}"
            rows += _metric_rows(label, name, focus.summary, FOCUS_METRICS)
            focus_tables.append(focus.table.assign(model=label))
            results[(label, kind)] = focus
        cvd = content_vs_distortion(model, references, types, levels, seed, batch_size)
        rows += _metric_rows(label, "content_vs_distortion", cvd.summary,
                             ("eta2_level", "eta2_content", "eta2_type", "srcc_level", "srcc_level_within"))
        cvd_tables.append(cvd.table.assign(model=label))
    scene = scene_drift_table(models, scene_images if scene_images is not None else references, teacher, batch_size)
    for _, r in summarize_scene_drift(scene).iterrows():
        rows += _metric_rows(r["model"], "scene_drift", r, ("scene_drift_mean", "top_scene_agreement"))
    random_init = any(is_random_init(m) for m in models.values())
    table = pd.DataFrame(rows, columns=["model", "diagnostic", "metric", "value"])
    unit = focus_tables[0]["score_unit"].iloc[0] if focus_tables and len(focus_tables[0]) else "margin"
    table.insert(3, "unit", table["metric"].map(lambda m: UNITS.get(m, "").format(unit=unit)))
    table = with_notes(table, random_init, next(iter(models.values())))
    table.attrs["random_init"] = random_init
    if not return_tables:
        return table
    tables: dict[str, Any] = {"focus": _move_model_first(pd.concat(focus_tables, ignore_index=True)),
                              "content": _move_model_first(pd.concat(cvd_tables, ignore_index=True)),
                              "scene": scene}
    if keep_maps:
        tables["focus_results"] = results
    return table, tables


def _metric_rows(label: str, diagnostic: str, summary: Mapping[str, Any], metrics: Sequence[str]) -> list[dict]:
    return [{"model": label, "diagnostic": diagnostic, "metric": m, "value": float(summary[m])}
            for m in metrics if m in summary]


def _move_model_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["model"] + [c for c in table.columns if c != "model"]]


__all__ = ["FocusResult", "CVDResult", "focus_ratio", "rectangle_mask", "distortion_focus",
           "eta_squared", "content_vs_distortion", "cvd_summary", "scene_drift_table", "summarize_scene_drift",
           "compare_models", "to_model_input", "pixels_to_input", "model_preprocess", "split_transform",
           "score_tensors", "note_for", "score_unit", "UNITS", "FrozenCLIP", "frozen_clip"]
