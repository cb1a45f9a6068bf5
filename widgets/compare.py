"""ComparePanel: few-shot adaptation with vs without QGR, run by the evaluation protocol on identical splits.

The panel does not train anything itself: it calls :func:`clipiqa.protocol.run_protocol` with three arms on the
same seeded splits (``standard_splits``: 80/20, by content when the labels have content groups) and the same
few-shot draw per split:

* ``zero-shot``: the frozen CLIP with antonym prompts (no training), for reference;
* ``QGR off`` and ``QGR on``: a pair of protocol arms that differ in the regularizer only (same recipe, same
  trainable set, same initialisation, same seeds): ``ft`` / ``ft+qgr`` for the paper's trainable set (``last-blocks``),
  ``coop+vpt`` / ``coop+vpt+qgr`` for prompts only, ``coop`` / ``coop+qgr`` for the text context only
  (:data:`PAIRS`).

The panel's settings reach both arms as the protocol's ``overrides`` (epochs, lr, lam, ``qgr_stats=True`` so the
QGR-off arm records gradient cosines too). Stop ends the run between (split, arm) runs; the summary then uses
only the splits that every arm finished, so both arms are always averaged over the same k splits. When QGR on
and QGR off give the same numbers on every split, the panel says so ("identical: QGR never changed a gradient",
or "identical results" when the QGR-on gradient records show projections) instead of drawing an empty difference
chart. With a :class:`~clipiqa.session.Session` rated by two or more people, the human ceiling
(``session.agreement()``) is drawn beside the SRCCs. The summary is the protocol's own
(:func:`clipiqa.protocol.summarize_methods`), so the panel and ``clipiqa bench`` report the same numbers for the
same arguments; the figures are drawn by :mod:`clipiqa.widgets.compare_plots`.

Its ~450 lines are one panel: the pure helpers for the result (pairs, ties, paired differences) and the panel class
with its controls, background run and view.
"""
from __future__ import annotations

import inspect
import math
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import ipywidgets as w
import pandas as pd
import torch

from clipiqa.adapters import LAST_BLOCKS, trainable_set
from clipiqa.caveats import RANDOM_INIT, TOY
from clipiqa.data import standard_splits
from clipiqa.factory import load_model
from clipiqa.presets import DEFAULT_MODEL, get_preset
from clipiqa.protocol import METHODS, PER_SPLIT_COLUMNS, run_protocol, summarize_methods
from clipiqa.protocol import complete_splits as protocol_complete_splits
from clipiqa.recipes import RECIPES
from clipiqa.session import Session

from ._common import BackgroundRun, banner, caveat_text, figure_png, note, table_html
from .compare_plots import draw_srcc, draw_traces

ARMS = ("zero-shot", "QGR off", "QGR on")
PAIRS = {LAST_BLOCKS: ("ft", "ft+qgr"), "prompts": ("coop+vpt", "coop+vpt+qgr"), "text": ("coop", "coop+qgr")}
"""Trainable set -> (QGR off, QGR on) protocol arms."""
TIE_METRICS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic", "final_loss")
"""Two arms tie on a split when every one of these is equal (identical predictions give identical values)."""
TIE_TEXT = "identical: QGR never changed a gradient"
ACTED_TIE_TEXT = "identical results: QGR projected gradients, but no metric changed"


def tie_text(paired: dict) -> str:
    """How a tie is named: :data:`TIE_TEXT` unless the QGR-on histories show projected tensors
    (``paired["qgr_acted"]``, set by the panel from the histories; unknown counts as not acted)."""
    return ACTED_TIE_TEXT if paired.get("qgr_acted") else TIE_TEXT


@dataclass
class CompareResult:
    """One comparison.

    per_split: the protocol's rows (one per split and arm) plus ``arm`` (zero-shot, QGR off, QGR on) and
        ``complete`` (the split was finished by every arm).
    summary: one row per arm over the complete splits only (``splits`` = how many).
    paired: QGR on - QGR off over the complete splits (``mean_diff``, ``wins``, ``losses``, ``ties``,
        ``splits``, ``identical``), or None when no split is complete.
    histories: ``{(split, arm): History}`` when the protocol provides them (gradient-cosine traces).
    ceiling: the human ceiling of the session's ratings (``clipiqa.agreement.Ceiling``), or None.
    protocol: the :class:`clipiqa.protocol.ProtocolResult` behind it all.
    """

    per_split: pd.DataFrame
    summary: pd.DataFrame
    histories: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    random_init: bool = False
    stopped: bool = False
    complete_splits: list = field(default_factory=list)
    n_splits: int = 0
    paired: dict | None = None
    ceiling: Any = None
    methods: dict = field(default_factory=dict)
    protocol: Any = None
    toy: bool = False

    @property
    def caveat(self) -> str:
        """What every figure of this result must say (random init, toy, or '')."""
        return caveat_text(self.random_init, self.toy)

    @property
    def identical(self) -> bool:
        """QGR on and QGR off gave the same numbers on every complete split."""
        return bool(self.paired and self.paired["identical"])

    @property
    def paired_text(self) -> str:
        return paired_text(self.paired, len(self.complete_splits), self.n_splits, self.stopped)


# --------------------------------------------------------------------------------------------- pure summaries
def with_arms(per_split: pd.DataFrame, methods: dict[str, str]) -> pd.DataFrame:
    """The protocol's rows with an ``arm`` column (``methods``: arm -> protocol method)."""
    arm_of = {m: a for a, m in methods.items()}
    out = per_split.copy()
    out.insert(out.columns.get_loc("method"), "arm", out["method"].map(arm_of))
    return out


def complete_splits(per_split: pd.DataFrame, arms=ARMS) -> list[int]:
    """Splits on which every arm has a row (a stopped comparison's last split may be partial)."""
    return protocol_complete_splits(per_split, arms, column="arm")


SUMMARY_COLUMNS = ("srcc_mean", "srcc_median", "srcc_std", "plcc_mean", "chance_band")
"""The columns of the protocol's summary the panel shows, beside ``splits`` (the protocol's ``n_ok``)."""


def summarize_arms(per_split: pd.DataFrame, complete: list[int], arms=ARMS) -> pd.DataFrame:
    """One row per arm over the ``complete`` splits only: SRCC mean/median/std, PLCC mean, chance band and the
    number of splits (the same for every arm, by construction). The numbers are the protocol's own summary
    (:func:`clipiqa.protocol.summarize_methods`, as ``clipiqa bench`` reports them), with ``method`` naming the
    protocol arm behind each panel arm."""
    part = per_split[per_split["split"].isin(complete)]
    part = part.reindex(columns=list(dict.fromkeys([*part.columns, *PER_SPLIT_COLUMNS])))  # a table of a few columns
    summary = summarize_methods(part.assign(method=part["arm"]), list(arms))
    out = summary[["method", *SUMMARY_COLUMNS, "n_ok"]].rename(columns={"method": "arm", "n_ok": "splits"})
    methods = [str(part.loc[part["arm"] == arm, "method"].iloc[0]) if (part["arm"] == arm).any() else ""
               for arm in arms]
    out.insert(1, "method", methods)
    out["splits"] = out["splits"].astype(int)
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    return (math.isnan(a) and math.isnan(b)) or a == b


def paired_difference(per_split: pd.DataFrame, complete: list[int]) -> dict | None:
    """QGR on - QGR off per complete split: mean SRCC difference, wins, losses, ties (equal SRCC) and whether
    the two arms are identical on every split (every :data:`TIE_METRICS` value equal). None without a split."""
    part = per_split[per_split["split"].isin(complete) & per_split["arm"].isin(["QGR on", "QGR off"])]
    if part.empty:
        return None
    on = part[part["arm"] == "QGR on"].set_index("split").sort_index()
    off = part[part["arm"] == "QGR off"].set_index("split").sort_index()
    splits = sorted(set(on.index) & set(off.index))
    if not splits:
        return None
    diff = on.loc[splits, "srcc"].astype(float) - off.loc[splits, "srcc"].astype(float)
    identical = all(_same(on.at[s, m], off.at[s, m]) for s in splits for m in TIE_METRICS if m in part)
    return {"mean_diff": float(diff.mean()), "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum()),
            "ties": int((diff == 0).sum()), "splits": len(splits), "identical": bool(identical),
            "diff": {int(s): float(d) for s, d in diff.items()}}


def paired_text(paired: dict | None, k: int, n: int, stopped: bool) -> str:
    """The comparison in one sentence; says when it rests on fewer splits than asked for, and names ties."""
    scope = f"{k} split{'s' if k != 1 else ''} per arm"
    if stopped:
        scope += f" (stopped: {k} of {n} splits finished by every arm; only those are summarised)"
    if paired is None:
        return (f"no split was finished by every arm ({n} asked for): nothing to compare yet" if stopped else
                "nothing to compare")
    if paired["identical"]:
        return (f"{tie_text(paired)}: QGR on and QGR off gave the same predictions on every split ({scope}); "
                "no difference to report.")
    return (f"QGR on - off over {scope}: mean SRCC difference {paired['mean_diff']:+.3f}; QGR better on "
            f"{paired['wins']}, worse on {paired['losses']}, equal on {paired['ties']} of {paired['splits']}.")


def qgr_acted(histories: dict, complete: list[int]) -> bool | None:
    """Whether QGR projected any tensor in the QGR-on runs of the complete splits (from ``frac_projected`` of
    their step records); None when no history has that record."""
    seen = None
    for (split, arm), history in histories.items():
        steps = history.steps_frame() if arm == "QGR on" and split in complete else None
        if steps is not None and "frac_projected" in steps:
            seen = bool(seen) or bool((steps["frac_projected"].fillna(0) > 0).any())
    return seen


# --------------------------------------------------------------------------------------------- the panel
class ComparePanel(BackgroundRun, w.VBox):
    """Compare adaptation with and without QGR on identical splits, through ``clipiqa.protocol.run_protocol``.

    source: a :class:`~clipiqa.session.Session` (its labels and model preset; with two or more raters the human
        ceiling is shown) or a labelled table (``path``, ``q`` in [0, 1], optional ``content_id``) with
        ``model_factory`` (or ``model_name``/``weights``/``device``).
    model_factory: ``(prompts=None) -> IQAModel`` (e.g. ``functools.partial(clipiqa.load_model, name, weights,
        device)``): the protocol asks it for models with the arms' prompts.
    shots, n_splits, epochs, lam, trainable, seed: the initial settings (controls can change them); lr: None =
        each arm's recipe's; other keywords are ``AdaptConfig`` overrides for both arms (e.g. ``n_views=1``).
    Methods for code and tests: ``compare()`` (blocking, returns a :class:`CompareResult`), ``run(block=False)``
    (``block=True`` returns the result or raises the error the panel showed), ``stop()``, ``wait(timeout)``;
    state: ``result``, ``status``, ``error``.
    """

    def __init__(self, source: Any, *, shots: int = 20, n_splits: int = 3, epochs: int = 20, lam: float = 5.0,
                 lr: float | None = None, trainable: str | None = None, seed: int = 0,
                 model_factory: Callable[..., Any] | None = None, model_name: str = DEFAULT_MODEL,
                 weights: str | None = None, device: str | None = None, n_boot: int = 500, **adapt_options):
        self.session = source if isinstance(source, Session) else None
        if self.session is not None:
            s = self.session
            self.table_source: Callable[[], pd.DataFrame] = s.labelled_table
            model_factory = model_factory or partial(load_model, s.model_name, s.weights, s.device)
            self._random_init, self._toy = s.random_init, s.toy
        elif isinstance(source, pd.DataFrame):
            self.table_source = lambda: source
            model_factory = model_factory or partial(load_model, model_name, weights, device)
            self._random_init = get_preset(model_name).random_init and weights is None
            self._toy = get_preset(model_name).toy and weights is None
        else:
            raise TypeError(f"ComparePanel needs a Session or a labelled DataFrame; got {type(source).__name__}")
        _check_factory(model_factory)
        self.model_factory = model_factory
        self.seed = seed
        self.n_boot = n_boot
        self.adapt_options = adapt_options
        self.result: CompareResult | None = None
        self.error: BaseException | None = None
        self._status = "idle"
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        trainable = trainable_set(trainable or (LAST_BLOCKS if torch.cuda.is_available() else "prompts"))
        style = {"description_width": "initial"}
        self.banner = banner(self._random_init, toy=self._toy)
        self.shots = w.BoundedIntText(value=shots, min=2, max=100000, description="Shots per split", style=style,
                                      layout=w.Layout(width="180px"))
        self.n_splits = w.BoundedIntText(value=n_splits, min=1, max=100, description="Splits", style=style,
                                         layout=w.Layout(width="130px"))
        self.epochs = w.BoundedIntText(value=epochs, min=1, max=10000, description="Epochs", style=style,
                                       layout=w.Layout(width="140px"))
        self.trainable = w.Dropdown(options=[("last-blocks: ft vs ft+qgr", LAST_BLOCKS),
                                             ("prompts: coop+vpt vs +qgr", "prompts"),
                                             ("text: coop vs coop+qgr", "text")],
                                    value=trainable, description="Trains", style=style,
                                    layout=w.Layout(width="280px"))
        self._lr_given = lr is not None
        self.lr = w.BoundedFloatText(value=lr if lr is not None else self._recipe_lr(trainable), min=1e-7,
                                     max=10.0, description="lr", style=style, layout=w.Layout(width="150px"))
        self.lam = w.BoundedFloatText(value=lam, min=0.01, max=1000.0, description="QGR lam", style=style,
                                      layout=w.Layout(width="150px"))
        self.trainable.observe(self._on_trainable, names="value")
        self.run_button = w.Button(description="Run comparison", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                                    tooltip="stop after the current arm; only splits every arm finished count")
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
            w.HBox([self.trainable, self.lr, self.lam]), w.HBox([self.run_button, self.stop_button]),
            w.HBox([self.progress, self.status_label]), self.table, self.plots, self.traces, self.message])
        self.add_class("clipiqa-compare-panel")

    # ------------------------------------------------------------------ settings
    @staticmethod
    def _recipe_lr(trainable: str) -> float:
        return float(RECIPES[METHODS[PAIRS[trainable][0]].recipe].settings.get("lr", 1e-3))

    def _on_trainable(self, change) -> None:
        if not self._lr_given:  # follow the recipe of the new pair unless the user set an lr
            self.lr.value = self._recipe_lr(change["new"])

    @property
    def methods(self) -> dict[str, str]:
        """Arm -> protocol method for the current trainable set."""
        off, on = PAIRS[self.trainable.value]
        return {"zero-shot": "zero-shot", "QGR off": off, "QGR on": on}

    def overrides(self) -> dict[str, Any]:
        """What the panel's settings change in both adapted arms' recipe (``run_protocol(overrides=...)``)."""
        epochs = int(self.epochs.value)
        out: dict[str, Any] = {"epochs": epochs, "qgr": {"lam": float(self.lam.value)}, "qgr_stats": True}
        recipe = RECIPES[METHODS[self.methods["QGR off"]].recipe].settings
        if float(self.lr.value) != float(recipe.get("lr", math.nan)):
            out["lr"] = float(self.lr.value)
        if recipe.get("warmup_epochs", 0) >= epochs:  # CoOp's warm-up epoch needs a budget after it
            out["warmup_epochs"] = 0
        out.update(self.adapt_options)
        return out

    # ------------------------------------------------------------------ the computation
    def compare(self, on_progress: Callable[[dict], None] | None = None,
                stop: Callable[[], bool] | None = None) -> CompareResult:
        """Run the three arms on every split (blocking) and return the result (also kept in ``self.result``).
        ``stop`` (default: the panel's Stop) is polled between (split, arm) runs."""
        table = self.table_source()
        if len(table) < 8:
            raise ValueError(f"the comparison needs at least 8 labelled images (got {len(table)}): each split keeps "
                             "20 % for testing and draws the training labels from the rest")
        n_splits = int(self.n_splits.value)
        pool = min(len(s.train) for s in standard_splits(table, n_splits=n_splits, seed=self.seed))
        shots = min(int(self.shots.value), pool)
        methods = self.methods
        protocol = run_protocol(table, methods=list(methods.values()), shots=shots, n_splits=n_splits,
                                seed=self.seed, model_factory=self.model_factory, overrides=self.overrides(),
                                on_progress=on_progress, n_boot=self.n_boot,
                                stop=stop if stop is not None else self._stop_event.is_set)
        per_split = with_arms(protocol.per_split, methods)
        complete = complete_splits(per_split)
        per_split["complete"] = per_split["split"].isin(complete)
        summary = summarize_arms(per_split, complete)
        paired = paired_difference(per_split, complete)
        histories = {(s, arm): h for arm, m in methods.items() for (s, method), h in protocol.histories.items()
                     if method == m}
        notes = [f"{n_splits} seeded splits with {shots} labels each, identical for every arm (split_hash and "
                 f"labelled_hash columns); arms: QGR off = {methods['QGR off']}, QGR on = {methods['QGR on']} "
                 "(same recipe, seeds and initialisation; only QGR differs). The SRCC CI is a bootstrap over test "
                 "images; inside the chance band means no better than random."]
        if shots < int(self.shots.value):
            notes.append(f"shots capped at {shots}: the smallest training side of the splits")
        failed = per_split[per_split["status"] != "ok"]
        if len(failed):
            r = failed.iloc[0]
            notes.append(f"{len(failed)} arm run(s) did not finish; first: {r['arm']} on split {r['split']}: "
                         f"{r['error']}")
        if protocol.random_init:
            notes.insert(0, RANDOM_INIT.then("this shows the comparison runs, not which arm is better"))
        elif self._toy:
            notes.insert(0, TOY.text)
        ceiling = None
        if self.session is not None and len(self.session.raters) >= 2:
            ceiling = self.session.agreement(n_boot=self.n_boot)
            notes.append(ceiling.text())
        if paired is not None:
            paired["qgr_acted"] = qgr_acted(histories, complete)
        summary.attrs["paired"] = paired
        self.result = CompareResult(per_split, summary, histories, notes, protocol.random_init, protocol.stopped,
                                    complete, n_splits, paired, ceiling, methods, protocol,
                                    toy=self._toy and not protocol.random_init)
        return self.result

    # ------------------------------------------------------------------ run / stop in the background
    def run(self, block: bool = False):
        """Start the comparison in the background; ``block``: wait and return the result, or raise the error the
        panel showed."""
        if self.running:
            raise RuntimeError("a comparison is already running")
        self._stop_event.clear()
        self.result, self.error = None, None
        self._status = self.status_label.value = "running"
        self.progress.value, self.progress.bar_style = 0, ""
        self.run_button.disabled, self.stop_button.disabled = True, False
        return self._launch(self._work, "clipiqa-compare", block)

    def stop(self) -> None:
        """Stop after the current (split, arm) run; the summary keeps only splits every arm finished."""
        if self.running:
            self._stop_event.set()
            self._status = self.status_label.value = "stopping after the current arm"

    def wait(self, timeout: float | None = None) -> CompareResult | None:
        self._join(timeout)
        return self.result

    def _run_clicked(self) -> None:
        try:
            self.run()
        except Exception as e:
            self.message.value = note(f"{type(e).__name__}: {e}", "error")

    def _work(self) -> None:
        arm_of = {m: a for a, m in self.methods.items()}

        def progress(p):
            self.progress.value = p["done"] / p["total"]
            self.status_label.value = (f"split {p['split'] + 1}: {arm_of.get(p['method'], p['method'])} done "
                                       f"({p['done']}/{p['total']})")
        try:
            result = self.compare(on_progress=progress)
            self.show(result)
            self._status = "stopped" if result.stopped else "done"
            self.progress.bar_style = "warning" if result.stopped else "success"
        except Exception as e:  # shown in the panel; run(block=True) re-raises it
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
        headline = result.paired_text
        self.table.value = table_html(result.summary, caption=" ".join(_sentence(n) for n in result.notes))
        tie_label = tie_text(result.paired) if result.paired else ""
        self.plots.value = figure_png(lambda fig: draw_srcc(fig, result, ARMS, tie_label), figsize=(10, 3.4))
        self.traces.value = figure_png(lambda fig: draw_traces(fig, result), figsize=(10, 3.0))
        warn = [result.caveat + "."] if result.caveat else []
        self.message.value = note(" ".join([headline, *warn]), "warn" if warn or result.stopped else "info")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _check_factory(factory: Callable[..., Any]) -> None:
    """The protocol calls ``factory(prompts=...)`` for the adapted arms: refuse a factory that cannot take it."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if "prompts" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    raise TypeError("model_factory must accept prompts=... (the protocol builds each arm's model with its prompts); "
                    "use functools.partial(clipiqa.load_model, name, weights, device)")

