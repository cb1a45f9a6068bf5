"""One meta step over a meta batch of tasks: the textbook step (Reptile or FOMAML: visit each task from theta,
all-reduce the directions, one outer update) and the released loop's dataset phase (comparison only). Both take
the run (:class:`~clipiqa.meta.run.MetaRun`), leave its new meta parameters in ``run.theta`` and in the model,
and return the step's record, or None when a stop request ended the step (the run is then as before it)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import distributed as ddp
from ..history import DivergedError
from .outer import mean_direction, param_hash
from .run import MetaRun


def meta_step(run: MetaRun, batch: list[str]) -> dict | None:
    """The textbook meta step over ``batch`` (this rank visits its share of it). Directions and loss sums are
    all-reduced, so every rank applies the same outer update."""
    runner, theta, device = run.runner, run.theta, run.device
    summed = {n: torch.zeros_like(t) for n, t in theta.items()}
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # loss_first, loss_last, query_loss, n
    step_no = run.position.meta_step + 1
    local_stop, starts = False, []
    for name in ddp.shard(batch):
        runner.load(theta)
        starts.append(run.task_start(name, step_no, "train"))
        try:
            visit = runner.visit(name, theta, ("inner", run.position.epoch, step_no, name), run.hooks.stop,
                                 run.inner_reporter(step_no), run.hooks.on_task_end)
        except DivergedError as e:
            runner.load(theta)
            raise DivergedError(f"task {name!r} at meta step {step_no}: {e}", run.history) from e
        if visit.direction is None:
            local_stop = True
            break
        for n in summed:
            summed[n] += visit.direction[n]
        stats += torch.tensor([visit.loss_first, visit.loss_last,
                               0.0 if math.isnan(visit.query_loss) else visit.query_loss, 1.0],
                              dtype=torch.float64, device=device)
    runner.load(theta)
    if ddp.all_reduce_max(local_stop, device=device) > 0:
        return None
    run.add_task_starts(ddp.gather_objects(starts), batch)
    ddp.all_reduce_sum_(list(summed.values()))
    ddp.all_reduce_sum_([stats])
    new_theta = _outer_step(run, mean_direction(summed, len(batch)), step_no)
    s = [v / len(batch) for v in stats.tolist()]
    return _step_record(batch, theta, new_theta, run.outer.lr(step_no), s[0], s[1],
                        s[2] if run.config.algorithm == "fomaml" else float("nan"))


def released_step(run: MetaRun, batch: list[str]) -> dict | None:
    """One dataset phase of the ``released`` loop (comparison only): the inner model continues from where it
    was (never reset to theta) through the phase's tasks, then ``theta += beta * (phi - theta)``. Every rank
    runs the whole phase; rank 0's inner model is broadcast. A stop restores the phase's start."""
    runner, released, theta = run.runner, run.released, run.theta
    step_no = run.position.meta_step + 1
    snapshot = released.snapshot()
    runner.load(released.phi)
    firsts, lasts, queries, starts, local_stop = [], [], [], [], False
    for name in batch:
        starts.append(run.task_start(name, step_no, "train"))
        try:
            losses = runner.released_visit(name, released.optimizer, ("released", run.position.epoch, step_no, name),
                                           run.hooks.stop, run.inner_reporter(step_no))
        except DivergedError as e:
            released.restore(snapshot)
            runner.load(theta)
            raise DivergedError(f"task {name!r} at meta step {step_no}: {e}", run.history) from e
        if losses is None:
            local_stop = True
            break
        if run.hooks.on_task_end is not None:
            run.hooks.on_task_end(name, {n: p.detach() for n, p in runner.named}, None)
        firsts.append(losses[0][0])
        lasts.append(losses[0][-1])
        queries.append(losses[1][-1])
    if ddp.all_reduce_max(local_stop, device=run.device) > 0:
        released.restore(snapshot)
        runner.load(theta)
        return None
    released.phi = runner.theta()
    ddp.broadcast_(released.tensors())
    run.history.task_starts.extend(starts)
    new_theta = _outer_step(run, {n: released.phi[n] - theta[n] for n in theta}, step_no)
    return _step_record(batch, theta, new_theta, run.outer.lr(step_no), float(np.mean(firsts)),
                        float(np.mean(lasts)), float(np.mean(queries)))


def _outer_step(run: MetaRun, direction: dict[str, torch.Tensor], step_no: int) -> dict[str, torch.Tensor]:
    """The outer update along ``direction``; the new meta parameters go into the run and the model."""
    new_theta = run.outer.step(run.theta, direction, step_no)
    run.runner.load(new_theta)
    run.theta = new_theta
    return new_theta


def _step_record(batch: list[str], theta, new_theta, lr: float, loss_first: float, loss_last: float,
                 query_loss: float) -> dict:
    return {"kind": "step", "tasks": ";".join(batch), "n_tasks": len(batch), "loss_first": loss_first,
            "loss_last": loss_last, "query_loss": query_loss, "meta_lr": lr,
            "update_norm": float(torch.sqrt(sum(((new_theta[n] - theta[n]).double() ** 2).sum()
                                                for n in theta)).item()),
            "theta_hash": param_hash(new_theta)}
