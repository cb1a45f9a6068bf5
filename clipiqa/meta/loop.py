"""``meta_pretrain``: the meta-training loop (epochs of meta steps, periodic state, stop and resume) and the files a
finished run writes. The run's state is one :class:`~clipiqa.meta.run.MetaRun`; a meta step is in ``steps``, the
held-out evaluation that selects the meta init in ``selection``, the periodic checkpoint in ``state``."""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from .. import distributed as ddp
from ..checkpoint import save_checkpoint
from ..csvio import write_csv
from ..data.synthetic_tasks import LABEL_KIND
from ..data.tasks import Task
from ..history import MetaHistory
from ..threads import sharing_cpus
from .config import MIN_REL_MOVE, MetaConfig
from .run import Hooks, MetaRun
from .selection import barely_moved, evaluate, run_notes, selection_note
from .state import replace_dir, resume as resume_state, save_state
from .steps import meta_step, released_step
from .tasks import meta_batches


def meta_pretrain(model, tasks: Sequence[Task], config: MetaConfig | None = None, *,
                  on_step: Callable[[dict], None] | None = None, out_dir: str | os.PathLike | None = None,
                  resume: bool = True, stop: Callable[[], bool] | None = None,
                  on_task_start: Callable[[str, dict], None] | None = None,
                  on_task_end: Callable[[str, dict, dict | None], None] | None = None) -> MetaHistory:
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
    hooks = Hooks(on_step=on_step, stop=stop, on_task_start=on_task_start, on_task_end=on_task_end)
    run = MetaRun.start(model, list(tasks), config, hooks)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and resume:
        resume_state(out, run)
    writes = out if out is not None and ddp.is_main() else None  # only rank 0 writes files
    if run.position.meta_step == 0 and not run.history.evals:
        evaluate(run, 0)
    with sharing_cpus():  # the cores other work leaves free now (clipiqa.threads), restored after
        stopped = _train(run, writes)
    _conclude(run, stopped, writes)
    _write_results(run, writes)
    ddp.barrier()
    return run.history


def _train(run: MetaRun, writes: Path | None) -> bool:
    """Meta steps from the run's position to the end of the last epoch, evaluating and saving state after the
    epochs that ask for it; True when a stop request ended it (at the last completed meta step)."""
    config, pos = run.config, run.position
    step = released_step if config.algorithm == "released" else meta_step
    while pos.epoch <= config.epochs:
        batches = meta_batches(run.train_names, config, pos.epoch)
        while pos.step_in_epoch < len(batches):
            record = step(run, batches[pos.step_in_epoch])
            if record is None:
                return True
            run.advance(record, len(batches))
            if run.hooks.stop_requested(run.device):
                return True
        epoch = pos.epoch
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            evaluate(run, epoch)
        run.next_epoch()
        if writes is not None and (epoch % config.checkpoint_every == 0 or epoch == config.epochs):
            save_state(writes, run)
    return False


def _conclude(run: MetaRun, stopped: bool, writes: Path | None) -> None:
    """Leave the last meta parameters in the model, save the state of a stopped run, and record how the run
    ended: its movement, its notes (and a warning when a completed run barely moved), its seconds."""
    history = run.history
    run.runner.load(run.theta)
    history.stopped = stopped
    if stopped and writes is not None:
        save_state(writes, run)
    history.rel_move = run.rel_move()
    selected_move = run.rel_move(run.best) if run.best is not None else None
    history.note = "; ".join(run_notes(history, run.config, run.best is None, selected_move))
    if not stopped and history.rel_move < MIN_REL_MOVE and ddp.is_main():
        warnings.warn(barely_moved(history.rel_move), RuntimeWarning, stacklevel=3)
    history.seconds = time.perf_counter() - run.t0


def _write_results(run: MetaRun, out: Path | None) -> None:
    """Leave the selected parameters in the model; with ``out``, write ``last``, ``best`` and ``history.csv``.
    Both cards carry the outer optimizer used, their ``rel_move`` and the run's note (the released-loop label
    among them)."""
    runner, history, config = run.runner, run.history, run.config
    if out is not None:
        training = {"kind": "meta-pretrain" + (" (released loop, comparison only)"
                                               if config.algorithm == "released" else ""),
                    **config.to_dict(), "outer": config.outer().to_dict()}
        card = {"trainable": config.trainable, "training": training,
                "data": {"train_tasks": history.train_tasks, "holdout_tasks": history.holdout_tasks,
                         "holdout_excluded_images": history.holdout_excluded,
                         "label_kind": "task labels as given (synthetic tasks: " + LABEL_KIND + ")"}}
        if history.note:
            card["extra"] = {"note": history.note}
        out.mkdir(parents=True, exist_ok=True)
        runner.load(run.theta)
        _save_checkpoint_dir(run.model, out / "last", card, {
            "meta_step": history.steps[-1]["meta_step"] if history.steps else 0, "rel_move": run.rel_move()})
        runner.load(run.selected)
        selected_move = run.rel_move(run.selected)
        _save_checkpoint_dir(run.model, out / "best", card, {
            "heldout_srcc": history.best_score, "selection_metric": config.selection_metric,
            "selected_epoch": history.best_epoch, "selected_meta_step": history.best_meta_step,
            "selected_on": "held-out source tasks: " + ", ".join(history.holdout_tasks),
            "rel_move": selected_move, "selection_note": selection_note(history.best_epoch, selected_move)})
        write_csv(history.to_frame(), out / "history.csv")
    runner.load(run.selected)
    run.model.eval()


def _save_checkpoint_dir(model, path: Path, card: dict, metrics: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    save_checkpoint(model, tmp, metrics=metrics, **card)
    replace_dir(tmp, path)
