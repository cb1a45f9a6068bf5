"""ComparePanel: few-shot adaptation with vs without QGR on the same splits, draws, seeds and initialisation.

For each seeded split (``clipiqa.data.standard_splits``: 80/20, by content when the labels have content
groups) one draw of N labelled images is taken from the 80 % side (``few_shot``) and shared by every arm:

* ``zero-shot``: the frozen CLIP with antonym prompts (no training), for reference;
* ``QGR off``: ``adapt(fresh model, draw, with_qgr(config, False))``;
* ``QGR on``: ``adapt(fresh model, draw, with_qgr(config, True))``: the only difference.

Both adapted arms start from the same seeded prompt initialisation and use the same training seed, so the
difference between them is the regularizer alone. Each row of the result records the split hash, so "identical
splits" can be checked. The test SRCC carries a bootstrap CI and the chance band for the test size.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import ipywidgets as w
import numpy as np
import pandas as pd

from ._common import RANDOM_INIT_TEXT, BackgroundRun, banner, figure_png, note, table_html

ARMS = ("zero-shot", "QGR off", "QGR on")


@dataclass
class CompareResult:
    """``per_split``: one row per split and arm; ``summary``: one row per arm; ``histories[(split, arm)]``."""

    per_split: pd.DataFrame
    summary: pd.DataFrame
    histories: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    random_init: bool = False
    stopped: bool = False


class ComparePanel(BackgroundRun, w.VBox):
    """Compare adaptation with and without QGR on identical splits.

    source: a :class:`~clipiqa.session.Session` (its labels and model preset) or a labelled table (``path``,
        ``q`` in [0, 1], optional ``content_id``) with ``model_factory`` (or ``model_name``/``weights``/``device``).
    shots, n_splits, epochs, lam, lr, trainable, seed: the initial settings (controls can change them); other
        keywords are ``AdaptConfig`` fields shared by both arms (e.g. ``n_views=1``).
    Methods for code and tests: ``compare()`` (blocking, returns a :class:`CompareResult`), ``run(block=False)``,
    ``stop()``, ``wait(timeout)``; state: ``result``, ``status``.
    """

    def __init__(self, source: Any, *, shots: int = 20, n_splits: int = 3, epochs: int = 20, lam: float = 5.0,
                 lr: float = 1e-3, trainable: str | None = None, seed: int = 0,
                 model_factory: Callable[[], Any] | None = None, model_name: str = "vitb16-openai",
                 weights: str | None = None, device: str | None = None, n_boot: int = 500, **adapt_options):
        import torch
        from clipiqa.session import Session
        if isinstance(source, Session):
            self.table_source: Callable[[], pd.DataFrame] = source.labelled_table
            self.model_factory = model_factory or source.fresh_model
            self._random_init = source.random_init
        elif isinstance(source, pd.DataFrame):
            self.table_source = lambda: source
            if model_factory is None:
                from functools import partial

                from clipiqa.model import load_model
                model_factory = partial(load_model, model_name, weights, device)
            self.model_factory = model_factory
            from clipiqa.presets import get_preset
            self._random_init = get_preset(model_name).random_init and weights is None
        else:
            raise TypeError(f"ComparePanel needs a Session or a labelled DataFrame; got {type(source).__name__}")
        self.seed = seed
        self.n_boot = n_boot
        self.adapt_options = adapt_options
        self.result: CompareResult | None = None
        self.error: BaseException | None = None
        self._status = "idle"
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        trainable = trainable or ("paper" if torch.cuda.is_available() else "prompts")
        style = {"description_width": "initial"}
        self.banner = banner(self._random_init)
        self.shots = w.BoundedIntText(value=shots, min=2, max=100000, description="Shots per split", style=style,
                                      layout=w.Layout(width="180px"))
        self.n_splits = w.BoundedIntText(value=n_splits, min=1, max=100, description="Splits", style=style,
                                         layout=w.Layout(width="130px"))
        self.epochs = w.BoundedIntText(value=epochs, min=1, max=10000, description="Epochs", style=style,
                                       layout=w.Layout(width="140px"))
        self.lr = w.BoundedFloatText(value=lr, min=1e-7, max=10.0, description="lr", style=style,
                                     layout=w.Layout(width="150px"))
        self.lam = w.BoundedFloatText(value=lam, min=0.01, max=1000.0, description="QGR lam", style=style,
                                      layout=w.Layout(width="150px"))
        self.trainable = w.Dropdown(options=["paper", "prompts", "text"], value=trainable, description="Trains",
                                    style=style, layout=w.Layout(width="180px"))
        self.run_button = w.Button(description="Run comparison", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.run_button.on_click(lambda _: self._run_clicked())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = w.FloatProgress(value=0, min=0, max=1, description="Progress", style=style)
        self.status_label = w.Label("idle")
        self.table = w.HTML()
        self.plots = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.traces = w.Image(format="png", layout=w.Layout(max_width="900px"))
        self.message = w.HTML()
        super().__init__(children=[
            self.banner, w.HBox([self.shots, self.n_splits, self.epochs]),
            w.HBox([self.lr, self.lam, self.trainable]), w.HBox([self.run_button, self.stop_button]),
            w.HBox([self.progress, self.status_label]), self.table, self.plots, self.traces, self.message])
        self.add_class("clipiqa-compare-panel")

    def config(self):
        from clipiqa.finetune import AdaptConfig
        from clipiqa.qgr import QGRConfig
        return AdaptConfig(trainable=self.trainable.value, epochs=int(self.epochs.value), lr=float(self.lr.value),
                           seed=self.seed, qgr=QGRConfig(lam=float(self.lam.value)), **self.adapt_options)

    # ------------------------------------------------------------------ the computation
    def compare(self, on_progress: Callable[[dict], None] | None = None) -> CompareResult:
        """Run every arm on every split (blocking) and return the result (also kept in ``self.result``)."""
        from clipiqa.finetune import adapt, with_qgr
        from clipiqa.data import few_shot, split_hash, standard_splits
        from clipiqa.metrics import bootstrap_ci, chance_band, correlations, summarize
        from clipiqa.scoring import score_files
        table = self.table_source()
        if len(table) < 8:
            raise ValueError(f"the comparison needs at least 8 labelled images (got {len(table)}): each split keeps "
                             "20 % for testing and draws the training labels from the rest")
        config = self.config()
        shots, n_splits = int(self.shots.value), int(self.n_splits.value)
        splits = standard_splits(table, n_splits=n_splits, seed=self.seed)
        rows, histories, total, done = [], {}, n_splits * len(ARMS), 0
        stopped = False
        random_init = self._random_init
        for i, split in enumerate(splits):
            draw = few_shot(split.train, min(shots, len(split.train)), split.seed)
            target = split.test["q"].to_numpy(float)
            base = {"split": i, "split_seed": split.seed, "split_hash": split.hash,
                    "labelled_hash": split_hash(draw), "n_train": len(draw), "n_test": len(split.test)}
            for arm in ARMS:
                if self._stop_event.is_set():
                    stopped = True
                    break
                t0 = time.perf_counter()
                model = self.model_factory()
                random_init = random_init or bool(model.random_init)
                history = None
                if arm != "zero-shot":
                    cfg = with_qgr(replace(config, seed=split.seed), arm == "QGR on")
                    history = adapt(model, draw, cfg, stop=self._stop_event.is_set)
                    histories[(i, arm)] = history
                    stopped = stopped or history.stopped
                if arm == "zero-shot":
                    with model.adapters_off():
                        scored = score_files(model, list(split.test["path"]))
                else:
                    scored = score_files(model, list(split.test["path"]))
                pred = scored["score"].to_numpy(float)
                ok = np.isfinite(pred)
                metrics = correlations(pred[ok], target[ok])
                lo, hi = bootstrap_ci(pred[ok], target[ok], "srcc", n_boot=self.n_boot, seed=split.seed)
                rows.append({**base, "arm": arm, "srcc": metrics["srcc"], "krcc": metrics["krcc"],
                             "plcc": metrics["plcc"], "srcc_ci_lo": lo, "srcc_ci_hi": hi,
                             "chance_band": chance_band(int(ok.sum())) if ok.sum() >= 2 else np.nan,
                             "steps": 0 if history is None else len(history.steps),
                             "stopped": bool(history is not None and history.stopped),
                             "seconds": time.perf_counter() - t0, "random_init": random_init})
                done += 1
                if on_progress is not None:
                    on_progress({"done": done, "total": total, "split": i, "arm": arm})
            if stopped:
                break
        per_split = pd.DataFrame(rows)
        summary = self._summary(per_split, summarize)
        notes = [f"{len(splits)} seeded splits, {shots} labels each, identical for every arm (split_hash column); "
                 "the SRCC CI is a bootstrap over test images; inside the chance band means no better than "
                 "random"]
        if random_init:
            notes.insert(0, RANDOM_INIT_TEXT + ": this shows the comparison runs, not which arm is better")
        if stopped:
            notes.append("stopped early: some arms or splits are missing or under-trained")
        self.result = CompareResult(per_split, summary, histories, notes, random_init, stopped)
        return self.result

    @staticmethod
    def _summary(per_split: pd.DataFrame, summarize) -> pd.DataFrame:
        rows = []
        for arm in ARMS:
            sub = per_split[per_split["arm"] == arm] if len(per_split) else per_split
            if not len(sub):
                continue
            s = summarize(sub["srcc"])
            rows.append({"arm": arm, "srcc_mean": s["mean"], "srcc_median": s["median"], "srcc_std": s["std"],
                         "plcc_mean": sub["plcc"].mean(), "chance_band": sub["chance_band"].mean(),
                         "splits": s["n"]})
        out = pd.DataFrame(rows)
        if len(per_split) and {"QGR on", "QGR off"} <= set(per_split["arm"]):
            wide = per_split.pivot(index="split", columns="arm", values="srcc").dropna()
            if len(wide):
                diff = wide["QGR on"] - wide["QGR off"]
                out.attrs["paired"] = {"mean_diff": float(diff.mean()), "wins": int((diff > 0).sum()),
                                       "splits": int(len(diff))}
        return out

    # ------------------------------------------------------------------ run / stop in the background
    def run(self, block: bool = False):
        if self.running:
            raise RuntimeError("a comparison is already running")
        self._stop_event.clear()
        self.result, self.error = None, None
        self._status = self.status_label.value = "running"
        self.progress.value, self.progress.bar_style = 0, ""
        self.run_button.disabled, self.stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._work, daemon=True, name="clipiqa-compare")
        self._thread.start()
        return self.wait() if block else None

    def stop(self) -> None:
        if self.running:
            self._stop_event.set()
            self._status = self.status_label.value = "stopping"

    def wait(self, timeout: float | None = None) -> CompareResult | None:
        self._join(timeout)
        return self.result

    def _run_clicked(self) -> None:
        try:
            self.run()
        except Exception as e:
            self.message.value = note(f"{type(e).__name__}: {e}", "error")

    def _work(self) -> None:
        def progress(p):
            self.progress.value = p["done"] / p["total"]
            self.status_label.value = f"split {p['split'] + 1}: {p['arm']} done ({p['done']}/{p['total']})"
        try:
            result = self.compare(on_progress=progress)
            self.show(result)
            self._status = "stopped" if result.stopped else "done"
            self.progress.bar_style = "warning" if result.stopped else "success"
        except Exception as e:  # shown in the panel
            self.error = e
            self._status = f"error: {type(e).__name__}: {e}"
            self.progress.bar_style = "danger"
            self.message.value = note(self._status, "error")
        finally:
            self.status_label.value = self._status
            self.run_button.disabled, self.stop_button.disabled = False, True

    # ------------------------------------------------------------------ display
    def show(self, result: CompareResult | None = None) -> None:
        """Fill the table, the SRCC plots and the gradient-cosine traces from a result."""
        result = result or self.result
        if result is None:
            return
        paired = result.summary.attrs.get("paired")
        caption = " ".join(result.notes)
        if paired:
            caption = (f"QGR on - off: mean SRCC difference {paired['mean_diff']:+.3f}, QGR better on "
                       f"{paired['wins']} of {paired['splits']} splits. ") + caption
        self.table.value = table_html(result.summary, caption=caption)
        self.plots.value = figure_png(lambda fig: _draw_srcc(fig, result), figsize=(10, 3.4))
        self.traces.value = figure_png(lambda fig: _draw_traces(fig, result), figsize=(10, 3.0))
        self.message.value = note(caption, "warn" if result.random_init else "info")


def _draw_srcc(fig, result: CompareResult) -> None:
    import seaborn as sns
    df = result.per_split
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    if len(df):
        band = float(df["chance_band"].mean())
        ax1.axhspan(-band, band, color="grey", alpha=0.15, label="chance band")
        for _, sub in df.groupby("split"):
            sub = sub.set_index("arm").reindex([a for a in ARMS if a in set(sub["arm"])])
            ax1.plot(range(len(sub)), sub["srcc"].to_numpy(), color="#bbbbbb", lw=0.8, zorder=1)
        sns.stripplot(data=df, x="arm", y="srcc", hue="arm", order=list(ARMS), ax=ax1, size=6, legend=False,
                      jitter=False, zorder=2)
        sns.pointplot(data=df, x="arm", y="srcc", order=list(ARMS), ax=ax1, color="black", markers="_",
                      linestyles="none", errorbar="sd")
        ax1.legend(fontsize=8, loc="lower right")
        wide = df.pivot(index="split", columns="arm", values="srcc")
        if {"QGR on", "QGR off"} <= set(wide.columns):
            diff = (wide["QGR on"] - wide["QGR off"]).dropna()
            ax2.bar([str(s) for s in diff.index], diff.to_numpy(),
                    color=["#2c7bb6" if d > 0 else "#d7191c" for d in diff])
            ax2.axhline(0, color="black", lw=0.8)
    ax1.set_ylim(-1.05, 1.05)
    ax1.set_title("test SRCC per split (lines join the same split)", fontsize=10)
    ax2.set_title("QGR on - QGR off, per split", fontsize=10)
    ax2.set_xlabel("split")
    if result.random_init:
        fig.suptitle(RANDOM_INIT_TEXT, color="#a15c00", fontsize=10)


def _draw_traces(fig, result: CompareResult) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    colours = {"QGR off": "#d7191c", "QGR on": "#2c7bb6"}
    for (split, arm), history in sorted(result.histories.items()):
        steps = history.steps_frame()
        if not len(steps):
            continue
        label = arm if split == 0 else None
        ax1.plot(steps["step"], steps["cosine"], color=colours[arm], alpha=0.7, lw=1, label=label)
        ax2.plot(steps["step"], steps["frac_projected"], color=colours[arm], alpha=0.7, lw=1, label=label)
    ax1.axhline(0, color="black", lw=0.6)
    ax1.set_title("cosine(quality gradient, semantic gradient)", fontsize=10)
    ax2.set_title("share of tensors projected by QGR", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        if result.histories:
            ax.legend(fontsize=8)
    if result.random_init:
        fig.suptitle(RANDOM_INIT_TEXT, color="#a15c00", fontsize=10)
