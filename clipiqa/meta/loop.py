"""``meta_pretrain``: the meta-training loop (epochs of meta steps, periodic state, stop and resume), the held-out
evaluation that selects the meta init, and the files a finished run writes."""
from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import distributed as ddp
from ..checkpoint import save_checkpoint
from ..threads import sharing_cpus
from ..csvio import write_csv
from ..data.demo import stable_seed
from ..data.synthetic_tasks import LABEL_KIND
from ..data.tasks import Task
from ..history import History
from .config import MIN_REL_MOVE, RELEASED_NOTE, MetaConfig
from .outer import _Outer, param_hash, relative_movement
from .runner import _Runner
from .state import _load_state, _Position, _Released, _replace_dir, _Run, _save_state
from .steps import _in_order, _meta_step, _released_step
from .tasks import exclude_shared_images, released_phases, split_tasks


def _meta_batches(names: list[str], config: MetaConfig, epoch: int) -> list[list[str]]:
    """The meta steps of one epoch: shuffled meta batches of ``tasks_per_batch`` (``released``: dataset phases)."""
    if config.algorithm == "released":
        return released_phases(names, config.seed, epoch)
    order = np.random.default_rng(stable_seed(config.seed, "order", epoch)).permutation(len(names))
    shuffled = [names[i] for i in order]
    return [shuffled[i:i + config.tasks_per_batch] for i in range(0, len(shuffled), config.tasks_per_batch)]


def _poll(stop: Callable[[], bool] | None, device) -> bool:
    """Collective stop: True on every rank when any rank's ``stop()`` is True."""
    return ddp.all_reduce_max(bool(stop is not None and stop()), device=device) > 0


def meta_pretrain(model, tasks: Sequence[Task], config: MetaConfig | None = None, *,
                  on_step: Callable[[dict], None] | None = None, out_dir: str | os.PathLike | None = None,
                  resume: bool = True, stop: Callable[[], bool] | None = None,
                  on_task_start: Callable[[str, dict], None] | None = None,
                  on_task_end: Callable[[str, dict, dict | None], None] | None = None) -> History:
    """Meta-learn an initialisation of ``model``'s trainable tensors over source ``tasks``; returns the history.

    The model ends holding the **selected** meta parameters (best mean held-out SRCC; the last ones when no
    evaluation gave a finite SRCC). With ``out_dir`` (written by rank 0 only): ``best/`` and ``last/`` clipiqa
    checkpoints (``best`` is the meta init for ``clipiqa adapt --init``), ``history.csv``, and periodic state in
    ``state/`` every ``checkpoint_every`` epochs and when stopped; ``resume=True`` continues from it with exactly
    the numbers of an uninterrupted run (only ``epochs`` may differ from the saved settings; the outer
    optimizer's moments, the start parameters and the released loop's inner model are restored too).

    on_step: called with every record: ``kind="inner"`` (one inner step of a task visit on this rank),
        ``"step"`` (a meta step: losses, outer step size ``meta_lr``, update norm, ``rel_move``, ``theta_hash``
        after the update) and ``"eval"``.
    stop: polled before every inner step and after every outer step; True ends the run at the last completed
        meta step (saving state when ``out_dir`` is given). Under torchrun any rank's stop stops all.
    on_task_start(name, params) / on_task_end(name, phi, query_grad): instrumentation; ``params``/``phi`` are
        the live trainable tensors (clone them to keep), ``query_grad`` is None for Reptile and released.

    Warns (``RuntimeWarning``, and says so in ``history.note``) when a completed run leaves the meta parameters
    within ``MIN_REL_MOVE`` (1 %) of where they started. There is no target-data argument: selection reads
    held-out *source* tasks only, without the images that training tasks hold too.
    """
    config = config or MetaConfig()
    t0 = time.perf_counter()
    tasks = list(tasks)
    train_tasks, held = split_tasks(tasks, config.holdout_tasks, config.seed)
    held, excluded = _held_out_views(held, train_tasks)
    train_names, held_names = [t.name for t in train_tasks], [t.name for t in held]
    assert not set(train_names) & set(held_names), "selection must never read tasks used for training"
    runner = _Runner(model, config, train_tasks + held)
    theta = runner.theta()
    ddp.broadcast_(list(theta.values()))
    runner.load(theta)
    steps_per_epoch = len(_meta_batches(train_names, config, 1))
    total_steps = config.epochs * steps_per_epoch
    run = _Run(theta=theta, theta0={n: t.clone() for n, t in theta.items()},
               outer=_Outer(config.outer(), total_steps))
    if config.algorithm == "released":
        run.released = _Released(phi={n: t.clone() for n, t in theta.items()},
                                 optimizer=torch.optim.Adam(runner.params, lr=config.inner_lr))
    history = History(config=config.to_dict(), train_tasks=train_names, holdout_tasks=held_names,
                          trainable=runner.names, initial_hash=param_hash(theta),
                          outer=config.outer().to_dict(), holdout_excluded=excluded)
    out = Path(out_dir) if out_dir is not None else None
    pos = _Position()
    if out is not None and resume:
        loaded = _load_state(out, model, runner, run, history)
        if loaded is not None:
            pos, history = loaded
            history.resumed_from = pos.meta_step
            history.config = config.to_dict()
            history.stopped = False
    write = out is not None and ddp.is_main()
    emit = on_step or (lambda record: None)
    device = model.device

    def evaluate(epoch: int) -> None:
        row = _evaluate(runner, run.theta, held_names, config, epoch, pos.meta_step, history, on_task_start)
        row["rel_move"] = relative_movement(run.theta, run.theta0)
        emit(row)
        score = row["srcc"]
        # ties go to the latest epoch: a held-out SRCC on a handful of images ties often (ranks barely change),
        # and keeping the first of equals would keep the untouched start
        if math.isfinite(score) and (history.best_score is None or score >= history.best_score):
            history.best_score, history.best_epoch, history.best_meta_step = score, epoch, pos.meta_step
            run.best = {n: t.clone() for n, t in run.theta.items()}

    if pos.meta_step == 0 and not history.evals:
        evaluate(0)
    stopped = False
    with sharing_cpus():  # the cores other work leaves free now (clipiqa.threads), restored after
        while pos.epoch <= config.epochs and not stopped:
            batches = _meta_batches(train_names, config, pos.epoch)
            while pos.step_in_epoch < len(batches):
                batch = batches[pos.step_in_epoch]
                step = _released_step if config.algorithm == "released" else _meta_step
                new_theta, record = step(runner, run, batch, pos, config, history, stop, emit, on_task_start,
                                         on_task_end)
                if new_theta is None:
                    stopped = True
                    break
                run.theta = new_theta
                pos.step_in_epoch += 1
                pos.meta_step += 1
                record.update(epoch=pos.epoch, meta_step=pos.meta_step, step_in_epoch=pos.step_in_epoch,
                              steps_per_epoch=len(batches), total_steps=total_steps,
                              rel_move=relative_movement(run.theta, run.theta0), seconds=time.perf_counter() - t0)
                history.steps.append(record)
                emit(record)
                if _poll(stop, device):
                    stopped = True
                    break
            if stopped:
                break
            epoch = pos.epoch
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                evaluate(epoch)
            pos.epoch, pos.step_in_epoch = epoch + 1, 0
            if write and (epoch % config.checkpoint_every == 0 or epoch == config.epochs):
                _save_state(out, model, runner, run, pos, history)
    runner.load(run.theta)
    history.stopped = stopped
    if stopped and write:
        _save_state(out, model, runner, run, pos, history)
    history.rel_move = relative_movement(run.theta, run.theta0)
    selected_move = relative_movement(run.best, run.theta0) if run.best is not None else None
    history.note = "; ".join(_notes(history, config, run.best is None, selected_move))
    if not stopped and history.rel_move < MIN_REL_MOVE and ddp.is_main():
        warnings.warn(_barely_moved(history.rel_move), RuntimeWarning, stacklevel=2)
    history.seconds = time.perf_counter() - t0
    _finish(model, runner, run, history, out if write else None)
    ddp.barrier()
    return history


def _held_out_views(held: list[Task], train: list[Task]) -> tuple[list[Task], dict[str, int]]:
    """Held-out tasks without the images training tasks hold too, and how many each lost."""
    views, excluded = [], {}
    for task in held:
        view, dropped = exclude_shared_images(task, train)
        views.append(view)
        if dropped:
            excluded[task.name] = dropped
        if view.table["q"].nunique() < 2 and ddp.is_main():
            warnings.warn(f"held-out task {task.name!r} has a single label value once the images training tasks "
                          "share are left out (e.g. one distortion level): its SRCC is undefined and it cannot "
                          "select anything; use at least 2 levels", RuntimeWarning, stacklevel=3)
    return views, excluded


def _barely_moved(rel_move: float) -> str:
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


def _notes(history: History, config: MetaConfig, no_selection: bool,
           selected_move: float | None = None) -> list[str]:
    """What to know about a finished (or stopped) run, fresh each time (a resumed run does not repeat notes)."""
    notes = [RELEASED_NOTE] if config.algorithm == "released" else []
    if no_selection:
        notes.append("no held-out evaluation gave a finite SRCC: the selected parameters are the last ones")
    notes.append(selection_note(history.best_epoch, selected_move))
    notes = [n for n in notes if n]
    if not history.stopped and history.rel_move is not None and history.rel_move < MIN_REL_MOVE:
        notes.append(_barely_moved(history.rel_move))
    return notes



def _evaluate(runner: _Runner, theta, held: list[str], config: MetaConfig, epoch: int, meta_step: int,
              history: History, on_task_start) -> dict:
    """Held-out source tasks only: mean SRCC (init and adapted), sharded over ranks and gathered."""
    local, starts = {}, []
    for name in ddp.shard(held):
        runner.load(theta)
        starts.append({"meta_step": meta_step, "task": name, "phase": "eval", "hash": param_hash(runner.named)})
        if on_task_start is not None:
            on_task_start(name, dict(runner.named))
        local[name] = runner.evaluate_task(name, theta)
    merged: dict[str, dict] = {}
    gathered = ddp.gather_objects((local, starts))
    for part, _ in gathered:
        merged.update(part)
    history.task_starts.extend(_in_order([part_starts for _, part_starts in gathered], held))
    assert set(merged) <= set(held), "evaluation must read held-out source tasks only"
    runner.load(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan means
        adapted = float(np.nanmean([merged[n]["adapted"] for n in held])) if held else float("nan")
        init = float(np.nanmean([merged[n]["init"] for n in held])) if held else float("nan")
    row = {"kind": "eval", "epoch": epoch, "meta_step": meta_step,
           "srcc": adapted if config.selection_metric == "adapted" else init,
           "srcc_adapted": adapted, "srcc_init": init}
    for n in held:
        row[f"srcc_adapted:{n}"] = merged[n]["adapted"]
        row[f"srcc_init:{n}"] = merged[n]["init"]
    history.evals.append(row)
    return row


def _finish(model, runner: _Runner, run: _Run, history: History, out: Path | None) -> None:
    """Leave the selected parameters in the model; write ``last``, ``best`` and ``history.csv``. Both cards carry
    the outer optimizer used, their ``rel_move`` and the run's note (the released-loop label among them)."""
    theta, selected = run.theta, run.best if run.best is not None else run.theta
    config = runner.config
    training = {"kind": "meta-pretrain" + (" (released loop, comparison only)" if config.algorithm == "released"
                                           else ""), **config.to_dict(), "outer": config.outer().to_dict()}
    card = {"trainable": config.trainable, "training": training,
            "data": {"train_tasks": history.train_tasks, "holdout_tasks": history.holdout_tasks,
                     "holdout_excluded_images": history.holdout_excluded,
                     "label_kind": "task labels as given (synthetic tasks: " + LABEL_KIND + ")"}}
    if history.note:
        card["extra"] = {"note": history.note}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        runner.load(theta)
        _save_checkpoint_dir(model, out / "last", card, {
            "meta_step": history.steps[-1]["meta_step"] if history.steps else 0,
            "rel_move": relative_movement(theta, run.theta0)})
        runner.load(selected)
        _save_checkpoint_dir(model, out / "best", card, {
            "heldout_srcc": history.best_score, "selection_metric": config.selection_metric,
            "selected_epoch": history.best_epoch, "selected_meta_step": history.best_meta_step,
            "selected_on": "held-out source tasks: " + ", ".join(history.holdout_tasks),
            "rel_move": relative_movement(selected, run.theta0),
            "selection_note": selection_note(history.best_epoch, relative_movement(selected, run.theta0))})
        write_csv(history.to_frame(), out / "history.csv")
    runner.load(selected)
    model.eval()


def _save_checkpoint_dir(model, path: Path, card: dict, metrics: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    save_checkpoint(model, tmp, metrics=metrics, **card)
    _replace_dir(tmp, path)
