"""Selection of the meta init on held-out source tasks: the held-out evaluation that keeps the best meta parameters,
and what a finished run must say about what it selected (released loop, no selection, barely moved)."""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import distributed as ddp
from ..history import MetaHistory
from .config import MIN_REL_MOVE, RELEASED_NOTE, MetaConfig
from .run import MetaRun


def evaluate(run: MetaRun, epoch: int) -> dict:
    """Score the held-out source tasks from the current meta parameters (sharded over ranks and gathered), record
    the row in the history, report it, and keep the parameters when they score at least as well as the best so
    far: ties go to the latest epoch, because a held-out SRCC on a handful of images ties often (ranks barely
    change) and keeping the first of equals would keep the untouched start."""
    row = _score_held_out(run, epoch)
    row["rel_move"] = run.rel_move()
    run.hooks.emit(row)
    history, score = run.history, row["srcc"]
    if math.isfinite(score) and (history.best_score is None or score >= history.best_score):
        history.best_score, history.best_epoch, history.best_meta_step = score, epoch, run.position.meta_step
        run.best = {n: t.clone() for n, t in run.theta.items()}
    return row


def _score_held_out(run: MetaRun, epoch: int) -> dict:
    """Held-out source tasks only: mean SRCC (init and adapted), per task too; appended to ``history.evals``."""
    runner, theta, held, meta_step = run.runner, run.theta, run.held_names, run.position.meta_step
    local, starts = {}, []
    for name in ddp.shard(held):
        runner.load(theta)
        starts.append(run.task_start(name, meta_step, "eval"))
        local[name] = runner.evaluate_task(name, theta)
    merged: dict[str, dict] = {}
    gathered = ddp.gather_objects((local, starts))
    for part, _ in gathered:
        merged.update(part)
    run.add_task_starts([part_starts for _, part_starts in gathered], held)
    assert set(merged) <= set(held), "evaluation must read held-out source tasks only"
    runner.load(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan means
        adapted = float(np.nanmean([merged[n]["adapted"] for n in held])) if held else float("nan")
        init = float(np.nanmean([merged[n]["init"] for n in held])) if held else float("nan")
    row = {"kind": "eval", "epoch": epoch, "meta_step": meta_step,
           "srcc": adapted if run.config.selection_metric == "adapted" else init,
           "srcc_adapted": adapted, "srcc_init": init}
    for n in held:
        row[f"srcc_adapted:{n}"] = merged[n]["adapted"]
        row[f"srcc_init:{n}"] = merged[n]["init"]
    run.history.evals.append(row)
    return row


def barely_moved(rel_move: float) -> str:
    """The warning of a run whose meta parameters moved less than ``MIN_REL_MOVE`` of their norm."""
    return (f"meta pre-training moved the meta parameters by only {100 * rel_move:.3g} % of their norm "
            f"(|theta - theta0| / |theta0| < {100 * MIN_REL_MOVE:g} %): the meta init is practically the start "
            "init. Raise meta_lr (--meta-lr), use outer_optimizer='adam', or train more epochs")


def selection_note(best_epoch: int | None, selected_move: float | None) -> str:
    """What a selected meta init that is (practically) the start must say: empty when it moved at least
    ``MIN_REL_MOVE`` (1 %) of the norm, else which of the two cases it is. ``selected_move`` is
    ``|theta_selected - theta0| / |theta0|``."""
    if best_epoch is None or selected_move is None or not selected_move < MIN_REL_MOVE:
        return ""
    if selected_move == 0.0:
        return (f"best/ is the initial state, untouched (selected at epoch {best_epoch}: no later evaluation scored "
                "higher on the held-out tasks); it is not a meta-learned init. Use last/, or train with a larger "
                "meta_lr / more epochs / more held-out tasks")
    return (f"best/ (epoch {best_epoch}) moved only {100 * selected_move:.3g} % of its norm from the initial state "
            f"(< {100 * MIN_REL_MOVE:g} %): practically the start init, not a meta-learned one")


def run_notes(history: MetaHistory, config: MetaConfig, no_selection: bool,
              selected_move: float | None = None) -> list[str]:
    """What to know about a finished (or stopped) run, fresh each time (a resumed run does not repeat notes)."""
    notes = [RELEASED_NOTE] if config.algorithm == "released" else []
    if no_selection:
        notes.append("no held-out evaluation gave a finite SRCC: the selected parameters are the last ones")
    notes.append(selection_note(history.best_epoch, selected_move))
    notes = [n for n in notes if n]
    if not history.stopped and history.rel_move is not None and history.rel_move < MIN_REL_MOVE:
        notes.append(barely_moved(history.rel_move))
    return notes
