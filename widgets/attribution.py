"""AttributionViewer: where does the quality score look, before and after adaptation?

Pick an image and an attribution method; the viewer shows the image as the model sees it (resized and centre
cropped like its preprocessing), the attribution overlay of the zero-shot model ("before") and of the adapted
model ("after") side by side, with their scores and a colour bar that says what the colours mean. The overlay
strength is a slider (redraws without recomputing). "Diagnostics" adds numbers for the selected image, in a table
that names the image and follows the picker: distortion focus (apply *this image's* distortion type and level,
when the images come from a table with ``distortion``/``level`` columns, to a known rectangle: share of
attribution mass inside it relative to its area, 1 = no preference, with the undistorted control), the score drop
caused by that distortion, and the scene drift from zero-shot CLIP with the top scene ("plant" there is botanical:
"plant (botanical)"). The rectangle is distorted on the image's clean reference when the table holds it (same
``content_id``, distortion ``reference``), else on the image as shown. An image of unknown distortion (a file
list, your own photos) is tested with :data:`DEFAULT_FOCUS` and the table says so.
"""
from __future__ import annotations

import os
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from clipiqa.explain import METHODS, attribute, zero_shot
from clipiqa.explain.diagnostics import distortion_focus, scene_drift_table, score_tensors, to_model_input
from clipiqa.explain.plots import plot_attribution
from clipiqa.imageio import load_rgb_array
from clipiqa.inference import p_high_target
from clipiqa.session import Session

from ._common import banner, figure_png, model_caveat, note, table_html

# Settings that keep each method interactive on a CPU (about a second per map on ViT-B/32).
DEFAULT_FOCUS = ("gaussian_blur", 4)
"""The focus test's distortion and level for an image whose own distortion is unknown or that is clean."""
FAST_OPTIONS = {"ig": {"n_steps": 16, "internal_batch_size": 8}, "smoothgrad": {"nt_samples": 8},
                "occlusion": {"perturbations_per_eval": 32}}


class AttributionViewer(w.VBox):
    """Attribution maps before/after adaptation for a few images.

    model_or_session: an ``IQAModel`` (the "after" model) or a :class:`~clipiqa.session.Session` (its model).
    images: image paths, a table with a ``path`` column (with ``distortion`` and ``level`` columns the focus
        diagnostic uses each image's own distortion), or a ``{name: uint8 array}`` dict; None = the session's
        labelled images (else its first images), at most ``max_images``.
    before_model: the "before" model; default the zero-shot view of the same model (adapters off, same weights).
    method: the initial attribution method (default the first of ``methods``, all of ``clipiqa.explain.METHODS``).
    method_options: per-method settings, e.g. ``{"ig": {"n_steps": 32}}`` (defaults: :data:`FAST_OPTIONS`).
    auto: draw at once and redraw on every change of image, method, overlay or sign (else only on *Explain*).
    Methods for code and tests: ``render()``, ``maps(name, method)``, ``diagnostics()``; state: ``figure_png``.
    """

    def __init__(self, model_or_session: Any, images: Any = None, before_model: Any = None, *,
                 methods: list[str] | None = None, method: str | None = None, method_options: dict | None = None,
                 max_images: int = 50, auto: bool = True):
        self.session = model_or_session if isinstance(model_or_session, Session) else None
        self.model = self.session.model if self.session is not None else model_or_session
        if self.session is not None and not self.session.adapted:
            self.model = zero_shot(self.model)  # an unadapted session model means zero-shot, not untrained prompts
        if images is None and self.session is not None:
            images = list(self.session.labels) or self.session.images
        if images is None:
            raise ValueError("give images (paths, a table with 'path', or a name -> array dict)")
        self.image_info = _image_info(images, max_images)
        self.images = _named_images(images, max_images)
        if not self.images:
            raise ValueError("no images to explain")
        self.before_model = before_model if before_model is not None else zero_shot(self.model)
        self.adapted = self.session.adapted if self.session is not None else self.before_model is not self.model
        self.method_options = {k: dict(v) for k, v in FAST_OPTIONS.items()}
        for k, v in (method_options or {}).items():
            self.method_options.setdefault(k, {}).update(v)
        self.random_init = bool(getattr(self.model, "random_init", False))
        self.caveat = model_caveat(self.model)
        self._cache: dict[tuple, dict] = {}
        self.figure_png = b""
        self.diagnostics_table: pd.DataFrame | None = None
        style = {"description_width": "initial"}
        self.banner = banner(self.random_init, toy=bool(self.caveat) and not self.random_init)
        self.image_picker = w.Dropdown(options=list(self.images), description="Image", style=style,
                                       layout=w.Layout(width="360px"))
        options = list(methods or METHODS)
        self.method_picker = w.Dropdown(options=options, value=method or options[0], description="Method",
                                        style=style)
        self.alpha = w.FloatSlider(value=0.55, min=0.0, max=1.0, step=0.05, description="Overlay",
                                   continuous_update=False, style=style)
        self.signed = w.Checkbox(value=False, description="signed (red raises, blue lowers the score)",
                                 indent=False)
        self.explain_button = w.Button(description="Explain", icon="search", button_style="primary")
        self.diag_button = w.Button(description="Diagnostics", icon="table")
        self.view = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.table = w.HTML()
        self.message = w.HTML()
        self.explain_button.on_click(lambda _: self._safely(self.render))
        self.diag_button.on_click(lambda _: self._safely(self.diagnostics))
        if auto:
            for control in (self.image_picker, self.method_picker, self.alpha, self.signed):
                control.observe(lambda _: self._safely(self.render), names="value")
        for control in (self.image_picker, self.method_picker):  # the table follows the picked image and method
            control.observe(lambda _: self._diagnostics_follow(auto), names="value")
        super().__init__(children=[
            self.banner, w.HBox([self.image_picker, self.method_picker]), w.HBox([self.alpha, self.signed]),
            w.HBox([self.explain_button, self.diag_button]), self.view, self.table, self.message])
        self.add_class("clipiqa-attribution-viewer")
        if auto:
            self._safely(self.render)

    # ------------------------------------------------------------------ computation
    def image(self, name: str) -> np.ndarray:
        """The uint8 RGB array of an image (files are read on first use)."""
        value = self.images[name]
        if isinstance(value, (str, os.PathLike)):
            value = self.images[name] = load_rgb_array(value)
        return value

    def _crop(self, name: str):
        return to_model_input(self.model, self.image(name))

    def maps(self, name: str | None = None, method: str | None = None) -> dict:
        """Attribution maps and scores of the before and after models for one image and method (cached)."""

        name = name or self.image_picker.value
        method = method or self.method_picker.value
        key = (name, method)
        if key not in self._cache:
            x, crop = self._crop(name)
            batch = x[None]
            options = self.method_options.get(method, {})
            out = {"crop": crop}
            for side, model in (("before", self.before_model), ("after", self.model)):
                out[side] = attribute(model, batch, method, **options)[0]
                out[f"margin_{side}"] = float(score_tensors(model, batch)[0])  # what the maps explain
                out[f"score_{side}"] = float(score_tensors(model, batch, target_fn=p_high_target)[0])
            if not all(torch.isfinite(out[s]).all() for s in ("before", "after")):
                raise ValueError(f"{method} gave non-finite attributions for {name}")
            self._cache[key] = out
        return self._cache[key]

    def render(self) -> bytes:
        """Compute (or reuse) the maps for the selected image and method and draw them; returns the PNG."""
        name, method = self.image_picker.value, self.method_picker.value
        m = self.maps(name, method)
        alpha, signed = float(self.alpha.value), bool(self.signed.value) and method != "gradcam"

        def draw(fig):
            axes = fig.subplots(1, 3)
            axes[0].imshow(m["crop"])
            axes[0].set_axis_off()
            axes[0].set_title(f"{name}\n(as the model sees it)", fontsize=9)
            plot_attribution(m["crop"], m["before"], ax=axes[1], alpha=alpha, signed=signed,
                             title=f"before (zero-shot): score {m['score_before']:.3f}, "
                                   f"margin {m['margin_before']:+.2f}")
            after = "after (adapted)" if self.adapted else "after (= zero-shot: not adapted)"
            plot_attribution(m["crop"], m["after"], ax=axes[2], alpha=alpha, signed=signed,
                             title=f"{after}: score {m['score_after']:.3f}, margin {m['margin_after']:+.2f}")
            colour_bar(fig, axes[1:], signed)
            fig.suptitle(f"{method} attributions" + (f" - {self.caveat}" if self.caveat else ""),
                         color="#a12a2a" if self.random_init else "black", fontsize=10)

        self.figure_png = figure_png(draw, figsize=(10.8, 3.8))
        self.view.value = self.figure_png
        same = "" if self.adapted else " The model is not adapted yet, so before and after are the same."
        self.message.value = note(f"{method} on {name}.{same}", "info")
        return self.figure_png

    def focus_setting(self, name: str | None = None) -> tuple[str, int, str]:
        """``(distortion, level, why)`` the focus test uses for an image: its own distortion and level when the
        images came from a table that says them, else :data:`DEFAULT_FOCUS` (and why)."""
        info = self.image_info.get(name or self.image_picker.value, {})
        distortion, level = info.get("distortion"), info.get("level")
        if distortion and distortion != "reference" and level:
            return str(distortion), int(level), "this image's own distortion"
        why = "a clean image" if distortion == "reference" else "this image's distortion is unknown"
        return DEFAULT_FOCUS[0], DEFAULT_FOCUS[1], f"{why}: the default test"

    def diagnostics(self, distortion: str | None = None, level: int | None = None) -> pd.DataFrame:
        """Distortion focus, score drop and scene drift of the before and after models on the selected image.
        ``distortion``/``level``: the focus test's (default: :meth:`focus_setting`, the image's own)."""
        name, method = self.image_picker.value, self.method_picker.value
        own, own_level, why = self.focus_setting(name)
        if distortion is None:
            distortion, level = own, own_level if level is None else level
        else:
            level, why = (DEFAULT_FOCUS[1] if level is None else level), "as asked"
        image = self.image(name)
        clean_name = self.image_info.get(name, {}).get("clean")
        base = self.image(clean_name) if clean_name else image
        options = self.method_options.get(method, {})
        models = {"before (zero-shot)": self.before_model, "after (this model)": self.model}
        rows = []
        drift = scene_drift_table(models, {name: image}, teacher=self.before_model)
        for label, model in models.items():
            focus = distortion_focus(model, {name: base}, distortion, level, method=method, keep_maps=False,
                                     **options).table.iloc[0]
            d = drift[drift["model"] == label].iloc[0]
            rows.append({"image": name, "model": label, "method": method, "focus_test": f"{distortion} {level}",
                         "focus": focus["focus"], "focus_clean": focus.get("focus_clean", np.nan),
                         "score_drop": focus.get("score_drop", np.nan), "scene_drift": d["scene_drift"],
                         "top_scene": d["top_scene_label"]})
        table = pd.DataFrame(rows)
        on = f"its clean reference {clean_name}" if clean_name else "the image as shown"
        caption = (f"{name}: focus = share of |attribution| inside a rectangle of {on} distorted with {distortion} "
                   f"level {level} ({why}), relative to the rectangle's area (1 = no preference; focus_clean = the "
                   "same rectangle without the distortion). scene_drift: KL(zero-shot || model) of the scene "
                   "distribution.")
        if self.caveat:
            caption = self.caveat + ". " + caption
        self.table.value = table_html(table, caption=caption)
        self.diagnostics_table = table
        return table

    def _diagnostics_follow(self, auto: bool) -> None:
        """After the image or method changed: recompute a table that is shown (auto), else clear it, so a table
        never describes another image than the one on screen."""
        if self.diagnostics_table is None:
            return
        if auto:
            self._safely(self.diagnostics)
        else:
            self.diagnostics_table = None
            self.table.value = note(f"press Diagnostics for {self.image_picker.value}", "info")

    def _safely(self, action) -> None:
        try:
            action()
        except Exception as e:  # show the problem in the panel
            self.message.value = note(f"{type(e).__name__}: {e}", "error")


def colour_bar(fig, axes, signed: bool) -> None:
    """The colour bar of the overlays (:func:`clipiqa.explain.plots.plot_attribution` scales each map to its
    99th percentile of |attribution|: 1 = that percentile, so colours compare within a map, not across maps)."""
    norm = Normalize(-1, 1) if signed else Normalize(0, 1)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap="RdBu_r" if signed else "inferno"), ax=list(axes),
                       shrink=0.8, pad=0.02)
    bar.set_label("attribution: red raises, blue lowers\n(scaled to its 99th pct.)" if signed
                  else "|attribution|\n(scaled to its 99th pct.)", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _image_info(images: Any, limit: int) -> dict[str, dict]:
    """Per image name: ``distortion``, ``level`` and ``clean`` (the name of its clean reference in the same
    table, if there) when ``images`` is a table with those columns; else nothing."""
    if not isinstance(images, pd.DataFrame) or "distortion" not in images:
        return {}
    names = list(_named_images(images, limit))
    table = images.head(limit)
    name_of = dict(zip(table["path"].map(os.fspath), names))
    refs = {}
    if "content_id" in table:
        refs = {r["content_id"]: name_of[os.fspath(r["path"])] for _, r in table.iterrows()
                if r["distortion"] == "reference"}
    info = {}
    for name, (_, row) in zip(names, table.iterrows()):
        level = row.get("level")
        info[name] = {"distortion": None if pd.isna(row["distortion"]) else str(row["distortion"]),
                      "level": None if level is None or pd.isna(level) else int(level),
                      "clean": refs.get(row.get("content_id")) if row["distortion"] != "reference" else None}
    return info


def _named_images(images: Any, limit: int) -> dict:
    """``{name: path or array}`` from paths, a table with ``path``, or a dict (files are read later)."""
    if isinstance(images, dict):
        return {str(k): v if isinstance(v, (str, os.PathLike)) else np.asarray(v)
                for k, v in list(images.items())[:limit]}
    if isinstance(images, pd.DataFrame):
        images = list(images["path"])
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    out = {}
    for p in list(images)[:limit]:
        name = os.path.basename(os.fspath(p))
        if name in out:
            name = os.fspath(p)
        out[name] = os.fspath(p)
    return out
