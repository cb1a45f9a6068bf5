"""AdaptPanel: settings, Run/Stop, and live progress, loss and SRCC curves for ``Session.adapt``.

Training runs in a background thread, so the notebook stays usable (other cells run, Stop is clickable).
The thread only *sets widget traits* (progress value, label text, the PNG bytes of the curves); it never
prints or displays into an ``Output`` widget, which ipykernel 7 does not route from threads (ipywidgets
#4001). Stop sets a ``threading.Event`` that ``clipiqa.adapt`` polls after every step.
"""
from __future__ import annotations

import threading
import time

import ipywidgets as w
import torch

from clipiqa.adapters import LAST_BLOCKS, trainable_set
from clipiqa.finetune import AdaptationDivergedError, AdaptConfig
from clipiqa.metrics import chance_band
from clipiqa.palette import CHANCE, arm_colour
from clipiqa.qgr import QGRConfig
from clipiqa.session import Session

from ._common import BackgroundRun, banner, caveat_text, figure_png, integer_ticks, note

DEVICES = ("auto", "cuda", "cpu")


class AdaptPanel(BackgroundRun, w.VBox):
    """Few-shot adaptation of a :class:`~clipiqa.session.Session`'s model on its labels.

    Methods for code and tests: ``run(block=False)``, ``stop()``, ``wait(timeout)``, ``config()``; state:
    ``history`` (the last ``clipiqa.adapt.History``), ``status`` ("idle", "running", "stopping", "done",
    "stopped", "diverged: ..." or "error: ..."), ``records`` (the live step/eval records).

    Keyword arguments set the initial values of the controls (epochs, shots, lr, trainable, device, qgr, lam,
    selection); ``redraw_every`` throttles the curve redraws (seconds); ``test``: labelled images of other
    contents to measure on after each epoch instead of the labels ``shots`` leaves over (``Session.adapt(test=)``);
    ``zero_shot``: the frozen model's SRCC on those test images, drawn as a horizontal reference line on the SRCC
    curve; any other keyword is an ``AdaptConfig`` field without a control (e.g. ``n_views=1``,
    ``batch_size=32``, ``augment="grmp"``).
    """

    def __init__(self, session: Session, *, epochs: int = 50, shots: int = 0, lr: float = 1e-3,
                 trainable: str | None = None, device: str = "auto", qgr: bool = True, lam: float = 5.0,
                 selection: str = "fixed", redraw_every: float = 1.0, test=None, zero_shot: float | None = None,
                 **adapt_options):
        self.session = session
        self.test = test
        self.zero_shot = zero_shot
        self.redraw_every = redraw_every
        self.adapt_options = adapt_options
        self.history = None
        self.error: BaseException | None = None
        self.records: list[dict] = []
        self._status = "idle"
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._last_draw = 0.0
        self._n_test = 0
        if trainable is None:
            trainable = LAST_BLOCKS if torch.cuda.is_available() else "prompts"
        style = {"description_width": "initial"}
        self.banner = banner(session.random_init, toy=session.toy)
        self.device = w.Dropdown(options=list(DEVICES), value=device, description="Device", style=style)
        # what each set trains, not where it runs: with the frozen prefix cached, the paper's set is the faster
        # one at ViT-B/32 on a CPU too (README "Real mode on a CPU")
        self.trainable = w.Dropdown(options=[("last 4 blocks + text context (paper)", LAST_BLOCKS),
                                             ("prompts only (text + visual tokens)", "prompts"),
                                             ("text context only", "text")],
                                    value=trainable_set(trainable), description="Trains", style=style)
        self.selection = w.Dropdown(options=[("fixed budget", "fixed"), ("best on held-out 20 %", "val")],
                                    value=selection, description="Model selection", style=style)
        self.shots = w.BoundedIntText(value=shots, min=0, max=100000, description="Shots (0 = all labels)",
                                      style=style, layout=w.Layout(width="200px"))
        self.epochs = w.BoundedIntText(value=epochs, min=1, max=10000, description="Epochs", style=style,
                                       layout=w.Layout(width="150px"))
        self.lr = w.BoundedFloatText(value=lr, min=1e-7, max=10.0, step=1e-4, description="lr", style=style,
                                     layout=w.Layout(width="160px"))
        self.qgr = w.Checkbox(value=qgr, description="QGR (gradient regularization)", indent=False)
        self.lam = w.BoundedFloatText(value=lam, min=0.0, max=1000.0, step=0.5, description="lam", style=style,
                                      layout=w.Layout(width="130px"))
        self.run_button = w.Button(description="Run", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.use_button = w.Button(description="Use this stopped checkpoint", icon="check",
                                   tooltip="make the stopped (under-trained) run's checkpoint the session's model",
                                   layout=w.Layout(width="auto", display="none"))
        self.run_button.on_click(lambda _: self._run_clicked())
        self.stop_button.on_click(lambda _: self.stop())
        self.use_button.on_click(lambda _: self._safely(self.use_checkpoint))
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress", style=style,
                                        layout=w.Layout(width="420px"))
        self.status_label = w.Label(value="idle")
        self.curves = w.Image(format="png", layout=w.Layout(max_width="820px"))
        self.message = w.HTML()
        super().__init__(children=[
            self.banner,
            w.HBox([self.device, self.trainable, self.selection]),
            w.HBox([self.shots, self.epochs, self.lr]),
            w.HBox([self.qgr, self.lam]),
            w.HBox([self.run_button, self.stop_button, self.use_button]),
            w.HBox([self.progress, self.status_label]),
            self.curves, self.message])
        self.add_class("clipiqa-adapt-panel")
        self._say(f"{len(session.labels)} labels in {session.labels_path}")

    # ------------------------------------------------------------------ settings
    def config(self):
        """The ``AdaptConfig`` the controls describe (raises ValueError on bad settings)."""
        return AdaptConfig(trainable=self.trainable.value, epochs=int(self.epochs.value), lr=float(self.lr.value),
                           selection=self.selection.value,
                           qgr=QGRConfig(lam=float(self.lam.value), enabled=bool(self.qgr.value)),
                           **self.adapt_options)

    # ------------------------------------------------------------------ run / stop
    def run(self, block: bool = False):
        """Start adaptation with the current settings; with ``block`` wait for it and return the History, or
        raise the error the panel showed (no weights, too few labels, divergence, ...), so that a notebook's
        next cell never runs on a result that does not exist."""
        if self.running:
            raise RuntimeError("adaptation is already running; press Stop or wait for it")
        config = self.config()
        shots = int(self.shots.value) or None
        device = None if self.device.value == "auto" else self.device.value
        self._stop_event.clear()
        self.records, self.history, self.error = [], None, None
        self.use_button.layout.display = "none"
        n = len(self.session.labels)
        self._n_test = n - shots if shots is not None and shots < n and n - shots >= 3 else 0
        if self.test is not None:
            self._n_test = len(self.test)
        self.progress.value, self.progress.bar_style = 0.0, ""
        self._set_status("running")
        self.run_button.disabled, self.stop_button.disabled = True, False
        held_out = f", SRCC on the other {self._n_test} after each epoch" if self._n_test else ""
        if self.test is not None:
            held_out = f", SRCC on {self._n_test} test images of other contents after each epoch"
        self._say(f"running: {config.epochs} epochs on {min(shots or n, n)} labels{held_out} "
                  f"({config.trainable}, QGR {'lam ' + str(config.qgr.lam) if config.qgr.active else 'off'})")
        self._draw(force=True)  # clear the previous run's curves
        return self._launch(self._work, "clipiqa-adapt", block, config, shots, device)

    def stop(self) -> None:
        """Ask the training to stop after the current step (the checkpoint is still saved, marked stopped, but
        not activated: see :meth:`use_checkpoint`)."""
        if self.running:
            self._stop_event.set()
            self._set_status("stopping")

    def wait(self, timeout: float | None = None):
        """Wait for the run to finish (at most ``timeout`` seconds); returns the History (None if not done or if
        the run failed: ``error`` holds the exception then)."""
        self._join(timeout)
        return self.history

    def use_checkpoint(self) -> str | None:
        """Make the last run's checkpoint the session's model (what the *Use this stopped checkpoint* button
        does after a stopped run: such a checkpoint is saved but not activated on its own)."""
        name = self.session.last_checkpoint
        if name is None:
            self._say("no checkpoint from this panel yet: press Run first", "warn")
            return None
        self.session.use_checkpoint(name)
        self.use_button.layout.display = "none"
        self._say(f"checkpoint {name} (stopped early, under-trained) is now active: the session scores with it",
                  "warn")
        return name

    def _run_clicked(self) -> None:
        self._safely(lambda: self.run(block=False))

    def _safely(self, action) -> None:
        try:
            action()
        except Exception as e:  # a click must show its error in the panel
            self._say(f"{type(e).__name__}: {e}", "error")

    def _work(self, config, shots, device) -> None:
        status = "error"
        try:
            self.history = self.session.adapt(config, on_step=self._on_step, stop=self._stop_event.is_set,
                                              shots=shots, device=device, test=self.test)
            stopped = self.history.stopped
            status = "stopped" if stopped else "done"
            self.progress.bar_style = "warning" if stopped else "success"
            ckpt = self.session.last_checkpoint
            took = f"after {len(self.history.steps)} steps in {self.history.seconds:.1f} s"
            if stopped:
                active = self.session.active_checkpoint
                keeps = f"checkpoint {active}" if active else "zero-shot CLIP"
                self.use_button.layout.display = None
                self._say(f"stopped early {took}: checkpoint {ckpt} is saved (marked stopped) but not active, "
                          f"because it is under-trained; the session still scores with {keeps}. Use it anyway "
                          "with the button or session.use_checkpoint(name).", "warn")
            else:
                self._say(f"finished {took}; checkpoint {ckpt} saved and now active", "ok")
        except AdaptationDivergedError as e:
            self.history, self.error = e.history, e
            status = f"diverged: {e}"
            self.progress.bar_style = "danger"
            self._say(str(e), "error")
        except Exception as e:  # shown in the panel; the kernel thread must not die silently
            self.error = e
            status = f"error: {type(e).__name__}: {e}"
            self.progress.bar_style = "danger"
            self._say(f"{type(e).__name__}: {e}", "error")
        finally:
            self._draw(force=True)
            self.run_button.disabled, self.stop_button.disabled = False, True
            self._set_status(status)  # last: once it says done/stopped, the panel is ready for the next run

    # ------------------------------------------------------------------ live updates (from the thread)
    def _on_step(self, record: dict) -> None:
        self.records.append(dict(record))
        if record.get("kind") == "step":
            total = max(int(record.get("total_steps", 1)), 1)
            self.progress.value = min(record["step"] / total, 1.0)
            stopping = " (stopping)" if self._stop_event.is_set() else ""
            self.status_label.value = (f"step {record['step']}/{total}, epoch {record['epoch']}, "
                                       f"loss {record['loss']:.4f}{stopping}")
        self._draw()

    def _set_status(self, status: str) -> None:
        self._status = status
        self.status_label.value = status

    def _say(self, text: str, kind: str = "info") -> None:
        self.message.value = note(text, kind)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.redraw_every:
            return
        self._last_draw = now
        steps = [r for r in self.records if r.get("kind") == "step"]
        evals = [r for r in self.records if r.get("kind") == "eval"]
        caveat = caveat_text(self.session.random_init, self.session.toy)
        n_test, zero_shot = self._n_test, self.zero_shot

        def draw(fig):
            ax1, ax2 = fig.subplots(1, 2)
            if steps:
                x = [r["step"] for r in steps]
                dots = {"marker": "o", "ms": 3} if len(x) < 30 else {}  # a lone first point stays visible
                ax1.plot(x, [r["loss"] for r in steps], label="quality loss", **dots)
                ax1.plot(x, [r["loss_semantic"] for r in steps], label="semantic loss", alpha=0.7, **dots)
                ax1.legend(fontsize=8)
            ax1.set_xlabel("step")
            ax1.set_title("training losses", fontsize=10)
            keys = sorted({k for r in evals for k in r if k.startswith("srcc_")})
            for k in keys:
                ax2.plot([r["epoch"] for r in evals], [r[k] for r in evals], marker="o", ms=3,
                         label=k.replace("srcc_", "SRCC "))
            if keys and n_test >= 3 and "srcc_test" in keys:
                h = chance_band(n_test)
                ax2.axhspan(-h, h, color=CHANCE, alpha=0.15, label=f"chance band (n={n_test})")
            if zero_shot is not None:
                ax2.axhline(zero_shot, color=arm_colour("zero-shot"), ls="--", lw=1.2,
                            label=f"zero-shot, no labels ({zero_shot:.2f})")
            if keys:
                ax2.legend(fontsize=8)
            else:
                ax2.text(0.5, 0.5, "no held-out labels:\nset shots below the number of labels\n"
                         "or model selection = held-out", ha="center", va="center", fontsize=9,
                         transform=ax2.transAxes)
            ax2.set_ylim(-1.05, 1.05)
            ax2.set_xlabel("epoch")
            ax2.set_title("SRCC on held-out labels", fontsize=10)
            integer_ticks(ax1, ax2)
            if caveat:
                fig.suptitle(caveat, color="#a15c00", fontsize=10)

        try:
            self.curves.value = figure_png(draw, figsize=(9, 3.2))
        except Exception as e:  # drawing must never kill training
            self._say(f"could not draw the curves: {e}", "warn")
