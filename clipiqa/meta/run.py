"""The state of one meta-training run, owned by one object: :class:`MetaRun` (the runner, the meta parameters and
where they started, the best ones so far, the position, the history, the outer optimizer, the released loop's
inner model) with the caller's :class:`Hooks`. The steps (``steps``), the held-out evaluation (``selection``) and
the periodic checkpoint (``state``) read and update it; ``loop.meta_pretrain`` drives it."""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .. import distributed as ddp
from ..data.tasks import Task
from ..history import MetaHistory
from .config import MetaConfig
from .outer import Outer, param_hash, relative_movement
from .runner import Runner
from .tasks import exclude_shared_images, meta_batches, split_tasks


@dataclass
class Position:
    """Where the run is: ``epoch`` in progress, meta steps done in it, meta steps done in all."""

    epoch: int = 1
    step_in_epoch: int = 0
    meta_step: int = 0


@dataclass
class ReleasedLoop:
    """The ``released`` loop's inner model: its parameters ``phi`` (never reset to theta) and its one Adam
    optimizer for the whole run; both go into the periodic checkpoint."""

    phi: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer

    def tensors(self) -> list[torch.Tensor]:
        """phi and the Adam moments: what rank 0 broadcasts so that every rank holds the same inner model."""
        moments = [t for st in self.optimizer.state.values() for k, t in sorted(st.items())
                   if k in ("exp_avg", "exp_avg_sq")]
        return list(self.phi.values()) + moments

    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict]:
        """``(phi, optimizer state)`` copies, to :meth:`restore` when a phase does not complete."""
        return {n: t.clone() for n, t in self.phi.items()}, copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snapshot: tuple[dict[str, torch.Tensor], dict]) -> None:
        self.phi = snapshot[0]
        self.optimizer.load_state_dict(snapshot[1])


@dataclass
class Hooks:
    """What the caller of ``meta_pretrain`` passed to watch and stop the run (each may be None)."""

    on_step: Callable[[dict], None] | None = None
    stop: Callable[[], bool] | None = None
    on_task_start: Callable[[str, dict], None] | None = None
    on_task_end: Callable[[str, dict, dict | None], None] | None = None

    def emit(self, record: dict) -> None:
        if self.on_step is not None:
            self.on_step(record)

    def stop_requested(self, device) -> bool:
        """Collective stop: True on every rank when any rank's ``stop()`` is True."""
        return ddp.all_reduce_max(bool(self.stop is not None and self.stop()), device=device) > 0


@dataclass
class MetaRun:
    """One meta-training run: the runner (model, trainable tensors, per-task data), the meta parameters ``theta``,
    the start ``theta0``, the best held-out state ``best``, the outer optimizer, the released loop's inner model
    (``released``, None for Reptile/FOMAML), the position, the history and the hooks. A periodic checkpoint saves
    and restores exactly this (``state``)."""

    runner: Runner
    theta: dict[str, torch.Tensor]
    theta0: dict[str, torch.Tensor]
    outer: Outer
    history: MetaHistory
    hooks: Hooks
    train_names: list[str]
    held_names: list[str]
    t0: float
    position: Position = field(default_factory=Position)
    best: dict[str, torch.Tensor] | None = None
    released: ReleasedLoop | None = None

    @classmethod
    def start(cls, model, tasks: Sequence[Task], config: MetaConfig, hooks: Hooks) -> "MetaRun":
        """Split ``tasks`` into training and held-out tasks (held-out ones without the images training tasks
        hold too), make the model's trainable set the same on every rank and record where it starts."""
        t0 = time.perf_counter()
        train_tasks, held = split_tasks(tasks, config.holdout_tasks, config.seed)
        held, excluded = held_out_views(held, train_tasks)
        train_names, held_names = [t.name for t in train_tasks], [t.name for t in held]
        assert not set(train_names) & set(held_names), "selection must never read tasks used for training"
        runner = Runner(model, config, train_tasks + held)
        theta = runner.theta()
        ddp.broadcast_(list(theta.values()))
        runner.load(theta)
        per_epoch = len(meta_batches(train_names, config, 1))  # the outer step-size schedule spans the run
        released = None
        if config.algorithm == "released":
            released = ReleasedLoop(phi={n: t.clone() for n, t in theta.items()},
                                    optimizer=torch.optim.Adam(runner.params, lr=config.inner_lr))
        history = MetaHistory(config=config.to_dict(), train_tasks=train_names, holdout_tasks=held_names,
                              trainable=runner.names, initial_hash=param_hash(theta),
                              outer=config.outer().to_dict(), holdout_excluded=excluded)
        return cls(runner=runner, theta=theta, theta0={n: t.clone() for n, t in theta.items()},
                   outer=Outer(config.outer(), config.epochs * per_epoch), history=history, hooks=hooks,
                   train_names=train_names, held_names=held_names, t0=t0, released=released)

    # ------------------------------------------------------------------ what the run holds
    @property
    def config(self) -> MetaConfig:
        return self.runner.config

    @property
    def model(self):
        return self.runner.model

    @property
    def device(self):
        return self.runner.model.device

    @property
    def total_steps(self) -> int:
        return self.outer.total_steps

    def rel_move(self, theta: dict[str, torch.Tensor] | None = None) -> float:
        """``|theta - theta0| / |theta0|`` of ``theta`` (default: the current meta parameters)."""
        return relative_movement(self.theta if theta is None else theta, self.theta0)

    @property
    def selected(self) -> dict[str, torch.Tensor]:
        """The parameters the run ends with: the best held-out state, else the last meta parameters."""
        return self.best if self.best is not None else self.theta

    # ------------------------------------------------------------------ task visits
    def task_start(self, name: str, meta_step: int, phase: str) -> dict:
        """The record of a task visit starting from the model's current parameters (and the caller's hook)."""
        start = {"meta_step": meta_step, "task": name, "phase": phase, "hash": param_hash(self.runner.named)}
        if self.hooks.on_task_start is not None:
            self.hooks.on_task_start(name, dict(self.runner.named))
        return start

    def add_task_starts(self, parts: list[list[dict]], names: list[str]) -> None:
        """Task-start records gathered from all ranks, in the order of ``names`` (a one-process run's order)."""
        rank = {n: i for i, n in enumerate(names)}
        self.history.task_starts.extend(sorted((r for part in parts for r in part), key=lambda r: rank[r["task"]]))

    def inner_reporter(self, meta_step: int) -> Callable[[dict], None]:
        """What a task visit calls with each inner-step record."""
        epoch = self.position.epoch
        return lambda record: self.hooks.emit({"epoch": epoch, "meta_step": meta_step, **record})

    # ------------------------------------------------------------------ progress
    def advance(self, record: dict, steps_in_epoch: int) -> None:
        """Count the meta step just taken, complete its ``record`` and report it."""
        pos = self.position
        pos.step_in_epoch += 1
        pos.meta_step += 1
        record.update(epoch=pos.epoch, meta_step=pos.meta_step, step_in_epoch=pos.step_in_epoch,
                      steps_per_epoch=steps_in_epoch, total_steps=self.total_steps, rel_move=self.rel_move(),
                      seconds=time.perf_counter() - self.t0)
        self.history.steps.append(record)
        self.hooks.emit(record)

    def next_epoch(self) -> None:
        self.position.epoch, self.position.step_in_epoch = self.position.epoch + 1, 0


def held_out_views(held: list[Task], train: list[Task]) -> tuple[list[Task], dict[str, int]]:
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
                          "select anything; use at least 2 levels", RuntimeWarning, stacklevel=4)
    return views, excluded
