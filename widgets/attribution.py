"""AttributionViewer: where does the quality score look, before and after adaptation?

Pick an image and an attribution method; the viewer shows the image as the model sees it (resized and centre
cropped like its preprocessing), the attribution overlay of the zero-shot model ("before") and of the adapted
model ("after") side by side, with their scores (p(good), the score of notebook 01, and the logit margin
``z_good - z_bad`` that the maps explain) and a colour bar that says what the colours mean. The overlay strength
is a slider (redraws without recomputing). "Diagnostics" adds numbers for the selected image, in a table that
names the image and follows the picker: distortion focus (apply *this image's* distortion type and level, when
the images come from a table with ``distortion``/``level`` columns, to a known rectangle: share of attribution
mass inside it relative to its area, 1 = no preference, beside the same rectangle of the undistorted image, and
the reading of the difference), the margin drop caused by that distortion, and the scene drift from zero-shot
CLIP with the top scene ("plant" there is botanical: "plant (botanical)"); below it, the test's own attribution
figure with the rectangle drawn. The rectangle is distorted on the image's clean reference when the table holds
it (same ``content_id``, distortion ``reference``), else on the image as shown. An image of unknown distortion (a
file list, your own photos) is tested with :data:`DEFAULT_FOCUS` and the table says so.

Changes of the selection are computed in a background thread, so the panel answers at once: a "computing ..."
line names the selection being computed and the figure and table are dimmed until it is shown. Only the latest
selection is computed: quick clicks do not queue (a request that was overtaken before it started is never
computed), and a result that was overtaken while it was computed is not drawn. The panel always ends showing the
selection in the dropdowns, figure and table alike. One computation runs at a time (a lock shared with
``render()`` and ``diagnostics()`` called from code); ``wait()`` waits for the panel to be idle.
"""
from __future__ import annotations

import os
import textwrap
import threading
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from clipiqa.explain import ATTRIBUTION_METHODS, attribute, frozen_clip
from clipiqa.explain.diagnostics import distortion_focus, scene_drift_table, score_tensors, to_model_input
from clipiqa.explain.plots import draw_box, plot_attribution
from clipiqa.explain.reading import DIRECTION, focus_verdict, gain_stats
from clipiqa.imageio import load_rgb_array
from clipiqa.inference import p_high_target
from clipiqa.session import Session

from ._common import banner, figure_png, model_caveat, note, table_html
from ._images import image_info, named_images

# Settings that keep each method interactive on a CPU (about a second per map on ViT-B/32).
DEFAULT_FOCUS = ("gaussian_blur", 4)
"""The focus test's distortion and level for an image whose own distortion is unknown or that is clean."""
FAST_OPTIONS = {"ig": {"n_steps": 16, "internal_batch_size": 8}, "smoothgrad": {"nt_samples": 8},
                "occlusion": {"perturbations_per_eval": 32}}
BUSY_CSS = ("<style>.clipiqa-busy{opacity:0.35;filter:grayscale(0.7);transition:opacity .15s}"
            ".clipiqa-viewer-status div{margin:2px 0}</style>")


class AttributionViewer(w.VBox):
    """Attribution maps before/after adaptation for a few images.

    model_or_session: an ``IQAModel`` (the "after" model) or a :class:`~clipiqa.session.Session` (its model).
    images: image paths, a table with a ``path`` column (with ``distortion`` and ``level`` columns the focus
        diagnostic uses each image's own distortion), or a ``{name: uint8 array}`` dict; None = the session's
        labelled images (else its first images), at most ``max_images``.
    before_model: the "before" model; default the zero-shot view of the same model (adapters off, same weights).
    method: the initial attribution method (default the first of ``methods``, all of
        ``clipiqa.explain.ATTRIBUTION_METHODS``).
    method_options: per-method settings, e.g. ``{"ig": {"n_steps": 32}}`` (defaults: :data:`FAST_OPTIONS`).
    auto: draw at once and redraw on every change of image, method, overlay or sign (else only on *Explain*).
    Methods for code and tests: ``render()``, ``maps(name, method)``, ``diagnostics()`` (synchronous),
    ``request()`` (what a change or a click does: in the background), ``wait()``; state: ``figure_png``,
    ``shown`` (the ``(image, method)`` on screen), ``busy``, ``rendered`` (every ``(image, method)`` drawn, in
    order) and ``dropped`` (those computed but overtaken, never drawn).
    """

    def __init__(self, model_or_session: Any, images: Any = None, before_model: Any = None, *,
                 methods: list[str] | None = None, method: str | None = None, method_options: dict | None = None,
                 max_images: int = 50, auto: bool = True):
        self.session = model_or_session if isinstance(model_or_session, Session) else None
        self.model = self.session.model if self.session is not None else model_or_session
        if self.session is not None and not self.session.adapted:
            self.model = frozen_clip(self.model)  # an unadapted session model means zero-shot, not untrained prompts
        if images is None and self.session is not None:
            images = list(self.session.labels) or self.session.images
        if images is None:
            raise ValueError("give images (paths, a table with 'path', or a name -> array dict)")
        self.image_info = image_info(images, max_images)
        self.images = named_images(images, max_images)
        if not self.images:
            raise ValueError("no images to explain")
        self.before_model = before_model if before_model is not None else frozen_clip(self.model)
        self.adapted = self.session.adapted if self.session is not None else self.before_model is not self.model
        self.method_options = {k: dict(v) for k, v in FAST_OPTIONS.items()}
        for k, v in (method_options or {}).items():
            self.method_options.setdefault(k, {}).update(v)
        self.random_init = bool(getattr(self.model, "random_init", False))
        self.caveat = model_caveat(self.model)
        self.auto = auto
        self._cache: dict[tuple, dict] = {}
        self._compute = threading.RLock()  # one computation on the models at a time (worker and direct calls)
        self._state = threading.Condition()  # guards the request counters and the worker
        self._wanted = self._done = 0  # the latest request, the latest one finished
        self._table_wanted = False
        self._worker: threading.Thread | None = None
        self._table_df: pd.DataFrame | None = None
        self._table_for: tuple[str, str] | None = None
        self.figure_png = b""
        self.shown: tuple[str, str] | None = None
        self.rendered: list[tuple[str, str]] = []
        self.dropped: list[tuple[str, str]] = []
        self._build_controls(methods, method)
        if auto:
            for control in (self.image_picker, self.method_picker, self.alpha, self.signed):
                control.observe(lambda _: self.request(), names="value")
        else:  # a shown table would describe another image: cleared (press Diagnostics again)
            for control in (self.image_picker, self.method_picker):
                control.observe(lambda _: self._clear_table(), names="value")
        super().__init__(children=[
            w.HTML(BUSY_CSS), self.banner, w.HBox([self.image_picker, self.method_picker]),
            w.HBox([self.alpha, self.signed]), w.HBox([self.explain_button, self.diag_button]), self.status,
            self.view, self.table, self.focus_view, self.message])
        self.add_class("clipiqa-attribution-viewer")
        if auto:  # the first figure in the cell's own run: Run All shows it when the cell ends
            self._safely(self.render)

    def _build_controls(self, methods: list[str] | None, method: str | None) -> None:
        style = {"description_width": "initial"}
        self.banner = banner(self.random_init, toy=bool(self.caveat) and not self.random_init)
        self.image_picker = w.Dropdown(options=list(self.images), description="Image", style=style,
                                       layout=w.Layout(width="360px"))
        options = list(methods or ATTRIBUTION_METHODS)
        self.method_picker = w.Dropdown(options=options, value=method or options[0], description="Method",
                                        style=style)
        self.alpha = w.FloatSlider(value=0.55, min=0.0, max=1.0, step=0.05, description="Overlay",
                                   continuous_update=False, style=style)
        self.signed = w.Checkbox(value=False, description="signed (red raises, blue lowers the score)",
                                 indent=False)
        self.explain_button = w.Button(description="Explain", icon="search", button_style="primary")
        self.diag_button = w.Button(description="Diagnostics", icon="table")
        self.status = w.HTML()
        self.status.add_class("clipiqa-viewer-status")
        self.view = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.table = w.HTML()
        self.focus_view = w.Image(format="png", layout=w.Layout(max_width="620px", display="none"))
        self.message = w.HTML()
        self.explain_button.on_click(lambda _: self.request())
        self.diag_button.on_click(lambda _: self.request(table=True))

    # ------------------------------------------------------------------ requests (background)
    @property
    def busy(self) -> bool:
        """Whether a selection is being computed (the panel shows "computing ...")."""
        with self._state:
            return self._done != self._wanted

    @property
    def diagnostics_table(self) -> pd.DataFrame | None:
        """The diagnostics table on screen (None when none is shown); read from code, it first waits for a
        computation in progress, so that it describes the selection in the dropdowns."""
        if threading.current_thread() is not self._worker:
            self.wait()
        return self._table_df

    def request(self, table: bool = False) -> None:
        """Compute and show the selection in the dropdowns, in the background (what a change or a click does);
        returns at once. ``table``: also the diagnostics table (it follows the selection once shown)."""
        with self._state:
            self._wanted += 1
            self._table_wanted = self._table_wanted or table
            self._set_busy(True)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True, name="clipiqa-attribution-viewer")
                self._worker.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every request is shown (or ``timeout`` seconds); True when the panel is idle."""
        with self._state:
            return self._state.wait_for(lambda: self._done == self._wanted, timeout)

    def _work(self) -> None:
        while True:
            with self._state:
                if self._done == self._wanted:
                    self._worker = None
                    self._set_busy(False)
                    self._state.notify_all()
                    return
                request = self._wanted
            self._serve(request)
            with self._state:
                self._done = max(self._done, request)
                if self._done == self._wanted:  # caught up: idle before the figures are read
                    self._worker = None
                    self._set_busy(False)
                    self._state.notify_all()
                    return

    def _stale(self, request: int) -> bool:
        return self._wanted != request

    def _serve(self, request: int) -> None:
        """Compute the selection of ``request``; draw it unless a newer request came meanwhile."""
        name, method = self.image_picker.value, self.method_picker.value
        try:
            with self._compute:
                if self._stale(request):
                    return  # overtaken before it started: never computed
                maps = self.maps(name, method)
                png = self._figure(name, method, maps)
            if self._stale(request):
                self.dropped.append((name, method))
                return
            self._show_figure(name, method, png)
            follow = self.auto and self._table_df is not None and self._table_for != (name, method)
            if self._table_wanted or follow:  # the overlay slider alone does not recompute the table
                with self._compute:
                    result = self._diagnostics_for(name, method)
                if self._stale(request):
                    self.dropped.append((name, method))
                    return
                self._show_table(*result, selection=(name, method))
                self._table_wanted = False
        except Exception as e:  # shown in the panel; a stale failure is not news
            if not self._stale(request):
                self.message.value = note(f"{type(e).__name__}: {e}", "error")

    def _set_busy(self, on: bool) -> None:
        """The busy state: "computing ..." naming the selection, figure and table dimmed; else what is shown."""
        for view in (self.view, self.table, self.focus_view):
            (view.add_class if on else view.remove_class)("clipiqa-busy")
        if on:
            self.status.value = note(f"computing {self.method_picker.value} for {self.image_picker.value} ... "
                                     "(the figure below is the previous selection until then)", "warn")
        elif self.shown is not None:
            self.status.value = note(f"showing {self.shown[1]} for {self.shown[0]}", "ok")

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
        with self._compute:
            if key not in self._cache:
                self._cache[key] = self._compute_maps(name, method)
            return self._cache[key]

    def _compute_maps(self, name: str, method: str) -> dict:
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
        return out

    def render(self) -> bytes:
        """Compute (or reuse) the maps for the selected image and method and draw them now; returns the PNG."""
        name, method = self.image_picker.value, self.method_picker.value
        with self._compute:
            png = self._figure(name, method, self.maps(name, method))
        self._show_figure(name, method, png)
        return png

    def _figure(self, name: str, method: str, m: dict) -> bytes:
        alpha, signed = float(self.alpha.value), bool(self.signed.value) and method != "gradcam"

        def draw(fig):
            axes = fig.subplots(1, 3)
            axes[0].imshow(m["crop"])
            axes[0].set_axis_off()
            axes[0].set_title(f"{name}\n(as the model sees it)", fontsize=9)
            plot_attribution(m["crop"], m["before"], ax=axes[1], alpha=alpha, signed=signed,
                             title=f"before (zero-shot)\np(good) {m['score_before']:.3f}, "
                                   f"margin {m['margin_before']:+.2f}")
            after = "after (adapted)" if self.adapted else "after (= zero-shot: not adapted)"
            plot_attribution(m["crop"], m["after"], ax=axes[2], alpha=alpha, signed=signed,
                             title=f"{after}\np(good) {m['score_after']:.3f}, margin {m['margin_after']:+.2f}")
            colour_bar(fig, axes[1:], signed)
            fig.suptitle(f"{method} attributions of the margin z_good - z_bad", fontsize=9)
            self._caveat_line(fig)

        return figure_png(draw, figsize=(10.8, 4.0))

    def _caveat_line(self, fig, width: int = 110) -> None:
        """The model's caveat (toy or random init) under a figure of the panel, wrapped at ``width`` characters."""
        if self.caveat:
            fig.supxlabel(textwrap.fill(self.caveat, width), fontsize=8,
                          color="#a12a2a" if self.random_init else "#1f4e6b")

    def _show_figure(self, name: str, method: str, png: bytes) -> None:
        self.figure_png = png
        self.view.value = png
        self.shown = (name, method)
        self.rendered.append((name, method))
        same = "" if self.adapted else " The model is not adapted yet, so before and after are the same."
        self.message.value = note(f"{method} on {name}.{same}", "info")
        if not self.busy:  # drawn by a direct call (the first figure, render()): say what is shown
            self._set_busy(False)

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
        """Distortion focus, margin drop and scene drift of the before and after models on the selected image,
        now. ``distortion``/``level``: the focus test's (default: :meth:`focus_setting`, the image's own)."""
        name, method = self.image_picker.value, self.method_picker.value
        with self._compute:
            result = self._diagnostics_for(name, method, distortion, level)
        self._show_table(*result, selection=(name, method))
        return result[0]

    def _diagnostics_for(self, name: str, method: str, distortion: str | None = None, level: int | None = None):
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
        rows, results = [], {}
        drift = scene_drift_table(models, {name: image}, teacher=self.before_model)
        for label, model in models.items():
            result = distortion_focus(model, {name: base}, distortion, level, method=method, **options)
            focus = result.table.iloc[0]
            d = drift[drift["model"] == label].iloc[0]
            rows.append({"image": name, "model": label, "method": method, "focus_test": f"{distortion} {level}",
                         "focus": focus["focus"], "focus_clean": focus.get("focus_clean", np.nan),
                         "attribution": DIRECTION[gain_stats(result.table)["direction"]],
                         "margin_drop": focus.get("score_drop", np.nan), "scene_drift": d["scene_drift"],
                         "top_scene": d["top_scene_label"]})
            results[label] = result
        on = f"its clean reference {clean_name}" if clean_name else "the image as shown"
        caption = (f"{name}: focus = share of |attribution| inside a rectangle of {on} distorted with {distortion} "
                   f"level {level} ({why}), relative to the rectangle's area (1 = no preference); focus_clean = "
                   "the same rectangle without the distortion: content alone may draw the attribution there, so "
                   "read focus against focus_clean (attribution: onto the damage, away from it, or no shift). "
                   "margin_drop: margin z_good - z_bad of the clean minus the distorted image. scene_drift: "
                   "KL(zero-shot || model) of the scene distribution. Verdicts: " +
                   " | ".join(f"{label}: {focus_verdict(r.table)}" for label, r in results.items()))
        if self.caveat:
            caption = self.caveat + ". " + caption
        return pd.DataFrame(rows), caption, self._focus_figure(results)

    def _focus_figure(self, results: dict) -> bytes:
        def draw(fig):
            axes = fig.subplots(1, len(results))
            for ax, (label, r) in zip(np.atleast_1d(axes), results.items()):
                row = r.table.iloc[0]
                plot_attribution(r.images[0], r.maps[0], ax=ax, alpha=float(self.alpha.value),
                                 title=f"{label}\nfocus {row['focus']:.2f} (clean {row['focus_clean']:.2f})")
                draw_box(ax, r.boxes[0], f"{row['distortion']} {row['level']}")
            fig.suptitle("the focus test: |attribution| on the photo with the distorted rectangle (dashed)",
                         fontsize=8)
            self._caveat_line(fig, 70)

        return figure_png(draw, figsize=(6.4, 3.6))

    def _show_table(self, table: pd.DataFrame, caption: str, focus_png: bytes, selection: tuple[str, str]) -> None:
        self.table.value = table_html(table, caption=caption)
        self.focus_view.value = focus_png
        self.focus_view.layout.display = None
        self._table_df, self._table_for = table, selection

    def _clear_table(self) -> None:
        """Without auto: the selection changed under a shown table; clear it so that it never describes another
        image than the one on screen."""
        if self._table_df is None:
            return
        self._table_df = self._table_for = None
        self.focus_view.layout.display = "none"
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
