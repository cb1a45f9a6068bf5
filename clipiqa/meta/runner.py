"""One meta-training run's worker: it holds the model, the trainable tensors and each task's support/query split,
and runs task visits (inner loop, direction for the outer step), released-loop visits and held-out evaluations."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.demo import stable_seed
from ..data.image_cache import ImageCache
from ..data.tasks import Task
from ..data.transforms import eval_transform, spec_for, train_transform
from ..finetune import EncodedSet, compute_gradients, train_step
from ..inference import predict_batches
from ..metrics import srcc
from .config import MetaConfig
from .tasks import task_split


@dataclass
class Visit:
    """What one task visit returns."""

    direction: dict[str, torch.Tensor] | None   # phi - theta (Reptile) or -grad (FOMAML); None when stopped
    loss_first: float = float("nan")
    loss_last: float = float("nan")
    query_loss: float = float("nan")


class Runner:
    """Holds the model, the trainable tensors and the per-task data; runs task visits and evaluations."""

    def __init__(self, model, config: MetaConfig, tasks: Sequence[Task]):
        self.model, self.config = model, config
        self.step_config = config.adapt_config()
        self.names = model.set_trainable(config.trainable, config.tuned_blocks)
        self.params = [p for _, p in model.named_parameters() if p.requires_grad]
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        model.eval()
        self.start = model.first_trainable_visual_block()
        if config.augment != "none":  # the evaluation transform follows the training one (saved in the card)
            model.transform_spec = spec_for(model, config.augment)
        self.eval_tf = eval_transform(model.transform_spec)
        self.train_tf = self.eval_tf if config.augment == "none" else train_transform(model, config.augment)
        self.images = ImageCache(max_images=config.image_cache)
        self.splits = {t.name: task_split(t, config) for t in tasks}
        self.view_cache: dict[str, EncodedSet] = {}

    # ------------------------------------------------------------------ parameters
    def theta(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.named}

    def load(self, theta: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(theta[n])

    # ------------------------------------------------------------------ randomness
    @contextmanager
    def seeded(self, *parts: Any) -> Iterator[np.random.Generator]:
        """torch (crops, dropout) and numpy (batches) draws from a seed derived from ``parts`` only."""
        s = stable_seed(self.config.seed, *parts)
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s % (2 ** 63))
            yield np.random.default_rng(s)

    # ------------------------------------------------------------------ batches
    def _batch(self, table: pd.DataFrame, rng: np.random.Generator, transform) -> tuple:
        n = len(table)
        index = np.sort(rng.choice(n, size=min(self.config.batch_size, n), replace=False))
        rows = table.iloc[index]
        encoded = EncodedSet(self.model, self.images.get(rows["path"]), transform, 1, self.start,
                             self.config.eval_batch_size)
        q = torch.tensor(rows["q"].to_numpy(dtype=float), dtype=torch.float32, device=self.model.device)
        k = len(index)
        return encoded, torch.arange(k), torch.zeros(k, dtype=torch.long), q

    def _cached_batch(self, name: str, table: pd.DataFrame, rng: np.random.Generator) -> tuple:
        if name not in self.view_cache:
            with self.seeded("views", name):
                self.view_cache[name] = EncodedSet(self.model, self.images.get(table["path"]), self.train_tf,
                                                   self.config.n_views, self.start, self.config.eval_batch_size)
        encoded = self.view_cache[name]
        n = len(table)
        index = torch.from_numpy(np.sort(rng.choice(n, size=min(self.config.batch_size, n), replace=False)))
        view = torch.from_numpy(rng.integers(0, self.config.n_views, size=len(index)))
        q = torch.tensor(table["q"].to_numpy(dtype=float), dtype=torch.float32, device=self.model.device)
        return encoded, index, view, q

    def support_batch(self, name: str, rng: np.random.Generator) -> tuple:
        support = self.splits[name][0]
        if self.config.n_views:
            return self._cached_batch(name, support, rng)
        return self._batch(support, rng, self.train_tf)

    # ------------------------------------------------------------------ one task
    def step(self, batch: tuple, optimizer) -> dict:
        encoded, index, view, q = batch
        return train_step(self.model, encoded, index, view, q, optimizer, self.params, self.step_config)

    def inner_loop(self, name: str, rng: np.random.Generator, stop: Callable[[], bool] | None,
                   on_inner: Callable[[dict], None] | None) -> list[float] | None:
        """``inner_steps`` Adam steps on the task's support from the current parameters; None when stopped."""
        optimizer = torch.optim.Adam(self.params, lr=self.config.inner_lr)
        self.model.train()
        losses = []
        for k in range(1, self.config.inner_steps + 1):
            if stop is not None and stop():
                return None
            record = self.step(self.support_batch(name, rng), optimizer)
            losses.append(record["loss"])
            if on_inner is not None:
                on_inner({"kind": "inner", "task": name, "inner_step": k, **record})
        return losses

    def query_gradient(self, name: str, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], float]:
        """The (QGR-combined) quality-loss gradient on a query batch at the current parameters."""
        self.model.train()
        for p in self.params:
            p.grad = None
        encoded, index, view, q = self._batch(self.splits[name][1], rng, self.train_tf)
        record = compute_gradients(self.model, encoded, index, view, q, self.params, self.step_config)
        grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in self.named}
        for p in self.params:
            p.grad = None
        return grads, record["loss"]

    def visit(self, name: str, theta: Mapping[str, torch.Tensor], seed_parts: tuple,
              stop: Callable[[], bool] | None, on_inner: Callable[[dict], None] | None,
              on_task_end: Callable[..., None] | None) -> Visit:
        """Start from theta, adapt on support, return the task's direction for the outer step."""
        self.load(theta)
        with self.seeded(*seed_parts) as rng:
            losses = self.inner_loop(name, rng, stop, on_inner)
            if losses is None:
                return Visit(direction=None)
            phi = {n: p.detach() for n, p in self.named}
            if self.config.algorithm == "reptile":
                direction, grads, query_loss = {n: phi[n] - theta[n] for n in theta}, None, float("nan")
            else:
                grads, query_loss = self.query_gradient(name, rng)
                direction = {n: -g for n, g in grads.items()}
        if on_task_end is not None:
            on_task_end(name, phi, grads)
        return Visit(direction, losses[0], losses[-1], query_loss)

    def released_visit(self, name: str, optimizer, seed_parts: tuple, stop: Callable[[], bool] | None,
                       on_inner: Callable[[dict], None] | None) -> tuple[list[float], list[float]] | None:
        """The released loop's task visit, from the current parameters (never reset to theta) with the run's
        one ``optimizer``: ``inner_steps`` times a support step then a query step. Returns the support and the
        query losses, or None when stopped."""
        self.model.train()
        support_losses, query_losses = [], []
        with self.seeded(*seed_parts) as rng:
            for k in range(1, self.config.inner_steps + 1):
                if stop is not None and stop():
                    return None
                support = self.step(self.support_batch(name, rng), optimizer)
                if stop is not None and stop():
                    return None
                query = self.step(self._batch(self.splits[name][1], rng, self.train_tf), optimizer)
                support_losses.append(support["loss"])
                query_losses.append(query["loss"])
                if on_inner is not None:
                    on_inner({"kind": "inner", "task": name, "inner_step": k, **support,
                              "query_loss": query["loss"]})
        return support_losses, query_losses

    # ------------------------------------------------------------------ evaluation
    def query_srcc(self, name: str) -> float:
        """SRCC of the logit margins of the current parameters on the task's query (one centre crop, through
        :func:`clipiqa.inference.predict_batches`: eval mode, head in fp32)."""
        query = self.splits[name][1]
        size = self.config.eval_batch_size
        batches = (torch.stack([self.eval_tf(im) for im in self.images.get(query["path"].iloc[i:i + size])])
                   for i in range(0, len(query), size))
        margins = predict_batches(self.model, batches, amp=self.config.amp).margin
        return srcc(margins.numpy(), query["q"].to_numpy())

    def evaluate_task(self, name: str, theta: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """SRCC on the task's query of theta itself and after ``inner_steps`` steps on its support."""
        self.load(theta)
        init = self.query_srcc(name)
        with self.seeded("eval", name) as rng:
            self.inner_loop(name, rng, None, None)
        adapted = self.query_srcc(name)
        self.load(theta)
        return {"init": init, "adapted": adapted}

