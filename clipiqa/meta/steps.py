"""One meta step over a meta batch of tasks: the textbook step (Reptile or FOMAML: visit each task from theta,
all-reduce the directions, one outer update) and the released loop's dataset phase (comparison only)."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from .. import distributed as ddp
from ..history import DivergedError, History
from .config import MetaConfig
from .outer import _mean, param_hash
from .runner import _Runner
from .state import _Position, _Released, _Run


def _meta_step(runner: _Runner, run: _Run, batch: list[str], pos: _Position, config: MetaConfig,
               history: History, stop, emit, on_task_start, on_task_end):
    """One meta step over ``batch`` (this rank's share of it); returns ``(new theta, record)`` or
    ``(None, None)`` when stopped. Directions and loss sums are all-reduced, so every rank applies the same
    outer update."""
    theta = run.theta
    device = runner.model.device
    summed = {n: torch.zeros_like(t) for n, t in theta.items()}
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # loss_first, loss_last, query_loss, n
    step_no = pos.meta_step + 1
    local_stop, starts = False, []
    for name in ddp.shard(batch):
        runner.load(theta)
        starts.append({"meta_step": step_no, "task": name, "phase": "train", "hash": param_hash(runner.named)})
        if on_task_start is not None:
            on_task_start(name, dict(runner.named))
        on_inner = lambda r, name=name: emit({"epoch": pos.epoch, "meta_step": step_no, **r})  # noqa: E731
        try:
            visit = runner.visit(name, theta, ("inner", pos.epoch, step_no, name), stop, on_inner, on_task_end)
        except DivergedError as e:
            runner.load(theta)
            raise DivergedError(f"task {name!r} at meta step {step_no}: {e}", history) from e
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
        return None, None
    history.task_starts.extend(_in_order(ddp.gather_objects(starts), batch))
    ddp.all_reduce_sum_(list(summed.values()))
    ddp.all_reduce_sum_([stats])
    new_theta = run.outer.step(theta, _mean(summed, len(batch)), step_no)
    runner.load(new_theta)
    s = stats.tolist()
    return new_theta, _step_record(batch, theta, new_theta, run.outer.lr(step_no), s[0] / len(batch),
                                   s[1] / len(batch),
                                   s[2] / len(batch) if config.algorithm == "fomaml" else float("nan"))


def _step_record(batch: list[str], theta, new_theta, lr: float, loss_first: float, loss_last: float,
                 query_loss: float) -> dict:
    return {"kind": "step", "tasks": ";".join(batch), "n_tasks": len(batch), "loss_first": loss_first,
            "loss_last": loss_last, "query_loss": query_loss, "meta_lr": lr,
            "update_norm": float(torch.sqrt(sum(((new_theta[n] - theta[n]).double() ** 2).sum()
                                                for n in theta)).item()),
            "theta_hash": param_hash(new_theta)}


def _released_step(runner: _Runner, run: _Run, batch: list[str], pos: _Position, config: MetaConfig,
                   history: History, stop, emit, on_task_start, on_task_end):
    """One dataset phase of the ``released`` loop (comparison only): the inner model continues from where it
    was (never reset to theta) through the phase's tasks, then ``theta += beta * (phi - theta)``. Every rank
    runs the whole phase; rank 0's inner model is broadcast. A stop restores the phase's start."""
    released = run.released
    theta, device = run.theta, runner.model.device
    step_no = pos.meta_step + 1
    start_phi = {n: t.clone() for n, t in released.phi.items()}
    start_optimizer = copy.deepcopy(released.optimizer.state_dict())
    runner.load(released.phi)
    firsts, lasts, queries, starts, local_stop = [], [], [], [], False
    for name in batch:
        starts.append({"meta_step": step_no, "task": name, "phase": "train", "hash": param_hash(runner.named)})
        if on_task_start is not None:
            on_task_start(name, dict(runner.named))
        on_inner = lambda r, name=name: emit({"epoch": pos.epoch, "meta_step": step_no, **r})  # noqa: E731
        try:
            losses = runner.released_visit(name, released.optimizer, ("released", pos.epoch, step_no, name), stop,
                                           on_inner)
        except DivergedError as e:
            _restore_released(runner, released, start_phi, start_optimizer, theta)
            raise DivergedError(f"task {name!r} at meta step {step_no}: {e}", history) from e
        if losses is None:
            local_stop = True
            break
        if on_task_end is not None:
            on_task_end(name, {n: p.detach() for n, p in runner.named}, None)
        firsts.append(losses[0][0])
        lasts.append(losses[0][-1])
        queries.append(losses[1][-1])
    if ddp.all_reduce_max(local_stop, device=device) > 0:
        _restore_released(runner, released, start_phi, start_optimizer, theta)
        return None, None
    released.phi = runner.theta()
    ddp.broadcast_(released.tensors())
    history.task_starts.extend(starts)
    direction = {n: released.phi[n] - theta[n] for n in theta}
    new_theta = run.outer.step(theta, direction, step_no)
    runner.load(new_theta)
    return new_theta, _step_record(batch, theta, new_theta, run.outer.lr(step_no), float(np.mean(firsts)),
                                   float(np.mean(lasts)), float(np.mean(queries)))


def _restore_released(runner: _Runner, released: _Released, phi: dict, optimizer_state: dict, theta) -> None:
    released.phi = phi
    released.optimizer.load_state_dict(optimizer_state)
    runner.load(theta)


def _in_order(parts: list[list[dict]], names: list[str]) -> list[dict]:
    """Records gathered from all ranks, in the order of ``names`` (the order of a one-process run)."""
    rank = {n: i for i, n in enumerate(names)}
    return sorted((r for part in parts for r in part), key=lambda r: rank[r["task"]])

