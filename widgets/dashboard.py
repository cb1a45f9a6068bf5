"""The line dashboard: what an operator sees of a line's quality scores, and nothing else.

One panel over a session's line log (:mod:`clipiqa.pilot.watch`): the active model version, a drift alarm, the
trend of the margins with the rolling reject rate, the latest rejects as thumbnails, the latest scores, and the
label queue. ``refresh()`` re-reads the log (and, with ``folder``, first scores the images that arrived there:
the dashboard is then the line monitor too); ``start(interval)`` refreshes every few seconds from a background
thread until ``stop()``. It runs as a Voila app (``clipiqa dashboard SESSION``) or in a notebook (08).
"""
from __future__ import annotations

import html
import json
import os
import threading
import time
from pathlib import Path

import ipywidgets as w
import numpy as np

from clipiqa.labelstore import DB_NAME
from clipiqa.pilot.gate import Gate, model_identity
from clipiqa.pilot.watch import LineLog, model_version, watch_once

from ._common import banner, figure_png, integer_ticks, table_html, thumbnail_bytes


class LineDashboard(w.VBox):
    """Dashboard of the session in ``session_folder`` (its line log, active version, label queue)."""

    def __init__(self, session_folder: str | os.PathLike, folder: str | os.PathLike | None = None,
                 gate: str | os.PathLike | Gate | None = None, model=None, window: int = 20, n_latest: int = 12,
                 reference: int = 50):
        self.session_folder = Path(session_folder)
        self.folder = None if folder is None else Path(folder)
        self.gate = Gate.load(gate) if isinstance(gate, (str, os.PathLike)) else gate
        self.window, self.n_latest, self.reference = window, n_latest, reference
        self.line_log = LineLog(self.session_folder / DB_NAME)
        self._model = model
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.error = ""
        self.header = w.HTML()
        self.caveat = w.HTML()
        self.alarm = w.HTML()
        self.trend = w.Image(format="png")
        self.rejects = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.latest = w.HTML()
        self.queue = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__([self.header, self.caveat, self.alarm, self.refresh_button, self.trend,
                          w.HTML("<b>Latest rejects</b>"), self.rejects, w.HTML("<b>Latest scores</b>"), self.latest,
                          w.HTML("<b>Label queue</b> (images worth a label next)"), self.queue])
        self.refresh()

    # ------------------------------------------------------------------ model and version
    def _settings(self) -> dict:
        try:
            return json.loads((self.session_folder / "settings.json").read_text())
        except (OSError, ValueError):
            return {}

    def active_version(self) -> str:
        return self._settings().get("checkpoint") or "zero-shot"

    def model(self):
        """The session's active model (loaded once; reloaded when the active version changes)."""
        if self._model is None or getattr(self, "_model_for", None) != self.active_version():
            from clipiqa.factory import load_model
            s = self._settings()
            ckpt = self.session_folder / "checkpoints" / s["checkpoint"] if s.get("checkpoint") else None
            self._model = load_model(s.get("model_name") or "lesson", s.get("weights"), s.get("device") or "cpu",
                                     prompts=str(ckpt) if ckpt else None)
            self._ckpt, self._model_for = ckpt, self.active_version()
        return self._model

    # ------------------------------------------------------------------ refreshing
    def refresh(self) -> None:
        """Score what arrived in ``folder`` (if given), then redraw every part from the log."""
        with self._lock:
            try:
                if self.folder is not None and self.folder.is_dir():
                    from clipiqa.imageio import list_images
                    model = self.model()
                    version = model_version(model_identity(model, getattr(self, "_ckpt", None)))
                    gate = self.gate
                    if gate is not None:
                        gate.check_model(model_identity(model, getattr(self, "_ckpt", None)))
                    watch_once(model, list_images([str(self.folder)]), self.line_log, version, gate=gate,
                               reference=self.reference, window=self.reference)
                self.error = ""
            except Exception as e:  # noqa: BLE001 - an operator's screen shows the problem instead of dying
                self.error = f"{type(e).__name__}: {e}"
            try:
                self._draw()
            except Exception as e:  # noqa: BLE001 - same: say it on the screen, keep refreshing
                self.header.value += f'<div style="color:#a00">cannot draw: {html.escape(str(e))}</div>'

    def _draw(self) -> None:
        rows = [r for r in self.line_log.rows() if r["status"] == "ok"]
        stamp = time.strftime("%H:%M:%S")
        self.header.value = (f"<h3>Line dashboard</h3><div>session <code>{html.escape(str(self.session_folder))}"
                             f"</code>; active version <b>{html.escape(self.active_version())}</b>; "
                             f"{len(rows)} images scored; updated {stamp}</div>"
                             + (f'<div style="color:#a00">{html.escape(self.error)}</div>' if self.error else ""))
        if self._model is not None:
            self.caveat.value = banner(self._model.random_init, toy=self._model.source.toy).value
        drift = self.line_log.con.execute("SELECT drifted, reason, time FROM drift_log ORDER BY id DESC LIMIT 1").fetchone()
        if drift and drift[0]:
            self.alarm.value = (f'<div class="clipiqa-drift-alarm" style="background:#f8d7da;border:1px solid '
                                f'#a00;padding:6px"><b>DRIFT</b>: {html.escape(drift[1])} ({drift[2]})</div>')
        else:
            self.alarm.value = f"<div>no drift alarm{f' ({html.escape(drift[1])})' if drift else ''}</div>"
        margins = np.array([r["margin"] for r in rows], dtype=float)
        rejected = np.array([r["decision"] == "reject" for r in rows], dtype=float)
        window = self.window

        def draw(fig):
            ax = fig.add_subplot(1, 1, 1)
            ax.plot(np.arange(1, len(margins) + 1), margins, ".", ms=4, label="logit margin")
            if self.gate is not None:
                ax.axhline(self.gate.threshold, color="red", lw=1, label="gate threshold")
            ax.set_xlabel("image (order scored)")
            ax.set_ylabel("margin")
            if self.gate is not None and len(rejected):
                rate = np.convolve(rejected, np.ones(window) / window, mode="valid") if len(rejected) >= window \
                    else np.array([])
                ax2 = ax.twinx()
                ax2.plot(np.arange(window, len(rejected) + 1), rate, color="tab:orange",
                         label=f"reject rate (last {window})")
                ax2.set_ylim(0, 1)
                ax2.set_ylabel("reject rate")
            integer_ticks(ax)
            ax.legend(loc="best", fontsize=8)
        self.trend.value = figure_png(draw, figsize=(8, 2.8))
        rejects = [r for r in rows if r["decision"] == "reject"][-6:]
        thumbs = []
        for r in reversed(rejects):
            try:
                data, _ = thumbnail_bytes(r["path"], 120)  # a moved file: a grey placeholder
            except Exception:  # noqa: BLE001 - never let one thumbnail stop the dashboard
                continue
            thumbs.append(w.VBox([w.Image(value=data, format="jpeg", width=120),
                                  w.HTML(f"<small>{html.escape(os.path.basename(r['path']))}<br>"
                                         f"margin {r['margin']:.3f}</small>")]))
        self.rejects.children = thumbs or [w.HTML("<i>none</i>")]
        import pandas as pd
        latest = pd.DataFrame([{"file": os.path.basename(r["path"]), "time": r["time"][11:19],
                                "margin": r["margin"], "score": r["score"], "decision": r["decision"] or ""}
                               for r in reversed(rows[-self.n_latest:])])
        self.latest.value = table_html(latest) if len(latest) else "<i>no image scored yet</i>"
        queue = self.line_log.label_requests()
        self.queue.value = ("<ul>" + "".join(f"<li>{html.escape(os.path.basename(p))}: {html.escape(reason)}</li>"
                                             for p, reason in queue[:15]) + "</ul>") if queue else "<i>empty</i>"

    # ------------------------------------------------------------------ live
    def start(self, interval: float = 5.0) -> None:
        """Refresh every ``interval`` seconds from a background thread (widget values sync from any thread)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._halt.clear()

        def loop():
            while not self._halt.wait(interval):
                self.refresh()
        self._thread = threading.Thread(target=loop, name="clipiqa-dashboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
