"""Few-shot fine-tuning with quality-aware gradient regularization (DESIGN 2.2, 2.3, 2.5).

``adapt(model, labelled, config)`` reads top to bottom:

1. choose the trainable set (``paper``: text context + tuned copies of the last k blocks; ``prompts``);
2. build ``n_views`` crops per training image and cache, per view, the activations entering the first trainable
   block (the frozen prefix, run once in eval mode) and the frozen teacher's scene logits;
3. per step: finish the forward from the cache, compute the quality and semantic losses, let QGR combine their
   gradients, take an SGD step; report every step to ``on_step``;
4. after each epoch optionally evaluate, and keep the state the selection mode asks for.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .configs import invalid
from .data.transforms import VARIANTS, eval_transform, train_transform
from .imageio import load_image
from .losses import quality_loss, scene_drift, semantic_loss
from .metrics import srcc
from .qgr import QGRConfig, qgr_step

SELECTION_MODES = ("fixed", "val", "test-oracle")
OPTIMISTIC_NOTE = "test-oracle: best epoch picked on the test split (the released code's protocol) - optimistic"


class AdaptationDivergedError(RuntimeError):
    """A non-finite loss or gradient; the model keeps the last good state and ``history`` holds the steps."""

    def __init__(self, message: str, history: "History"):
        super().__init__(message)
        self.history = history


def _fail(field_name: str, value: Any, allowed: str) -> None:
    invalid("AdaptConfig", field_name, value, allowed)


@dataclass(frozen=True)
class AdaptConfig:
    """Few-shot fine-tuning settings; defaults follow the released code (DESIGN 2.5)."""

    trainable: str = "paper"
    tuned_blocks: int = 4
    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.0
    batch_size: int = 192
    augment: str = "model"            # "none", "model" (crop + flip), "paper" (244 squash, crop + flip, ImageNet)
    n_views: int = 4                  # cached crops per training image (1 when augment == "none")
    qgr: QGRConfig = field(default_factory=QGRConfig)
    selection: str = "fixed"
    val_fraction: float = 0.2
    cache_prefix: bool = True
    seed: int = 0
    amp: bool | None = None           # bf16 autocast; None = on for CUDA
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.qgr, dict):
            object.__setattr__(self, "qgr", QGRConfig(**self.qgr))
        if self.trainable not in ("paper", "prompts", "text"):
            _fail("trainable", self.trainable, "use 'paper', 'prompts' or 'text'")
        for name in ("epochs", "batch_size", "n_views", "tuned_blocks", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                _fail(name, value, "use a positive integer")
        for name in ("lr", "weight_decay", "momentum"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                _fail(name, value, "use a finite number >= 0")
        if self.lr <= 0:
            _fail("lr", self.lr, "use a positive learning rate")
        if self.augment not in ("none",) + VARIANTS:
            _fail("augment", self.augment, "use 'none', 'model' or 'paper'")
        if self.selection not in SELECTION_MODES:
            _fail("selection", self.selection, f"use one of {', '.join(SELECTION_MODES)}")
        if not 0 < self.val_fraction < 1:
            _fail("val_fraction", self.val_fraction, "use a fraction in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["qgr"] = asdict(self.qgr)
        return d


@dataclass
class History:
    """What happened: one row per step and per evaluation, plus the selection outcome."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    selected_epoch: int | None = None
    stopped: bool = False
    note: str = ""
    seconds: float = 0.0
    trainable: list[str] = field(default_factory=list)

    def steps_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.steps)

    def evals_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals)


# --------------------------------------------------------------------------------------------- caching
class EncodedSet:
    """Per image and view: the activations entering visual block ``start`` (or the images when start == 0)
    and the frozen teacher's scene logits. Built once; a step only runs the trainable part."""

    def __init__(self, model, images: list, transform, n_views: int, start: int, batch_size: int,
                 cache: bool = True, teacher: bool = True):
        self.start = start if cache else 0
        self.n_views = n_views
        inputs, teachers = [], []
        with torch.no_grad():
            for v in range(n_views):
                views = torch.stack([transform(im) for im in images])
                hidden, logits = [], []
                for chunk in views.split(batch_size):
                    chunk = chunk.to(model.device)
                    if teacher:  # evaluation sets need no teacher
                        with model.adapters_off():
                            logits.append(model.scene_logits(chunk).float())
                    hidden.append(model.visual_prefix(chunk, self.start) if self.start else chunk)
                inputs.append(torch.cat(hidden))
                teachers.append(torch.cat(logits) if logits else None)
        self.inputs = torch.stack(inputs, dim=1)  # [N, V, ...]
        self.teacher = torch.stack(teachers, dim=1) if teacher else None  # [N, V, K]

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, index: torch.Tensor, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index, view = index.to(self.inputs.device), view.to(self.inputs.device)
        return self.inputs[index, view], self.teacher[index, view]


def forward_cached(model, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quality and scene logits from cached activations entering block ``start`` (images when start == 0)."""
    features = model.encode_image_from(x, start) if start else model.encode_image(x)
    return model.heads(features)


# --------------------------------------------------------------------------------------------- evaluation
def predict_encoded(model, encoded: EncodedSet, batch_size: int) -> np.ndarray:
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for chunk in encoded.inputs[:, 0].split(batch_size):
            q, _ = forward_cached(model, chunk, encoded.start)
            out.append(q.float().softmax(-1)[:, 0].cpu())
    model.train(was)
    return torch.cat(out).numpy()


def _adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.adapter_parameters()}


def _load_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.adapter_parameters():
            p.copy_(state[n])


# --------------------------------------------------------------------------------------------- training
def adapt(model, labelled: pd.DataFrame, config: AdaptConfig | None = None, *,
          on_step: Callable[[dict], None] | None = None, test: pd.DataFrame | None = None,
          stop: Callable[[], bool] | None = None, images: list | None = None) -> History:
    """Fine-tune ``model`` in place on ``labelled`` (columns ``path``, ``q`` in [0, 1]) and return the History.

    test: only for ``selection="test-oracle"`` (optimistic, labelled so) or to log test SRCC per epoch.
    stop: a callable polled every step (e.g. ``threading.Event().is_set``); True ends training after that step.
    images: preloaded PIL images in ``labelled`` order (skips reading files).
    """
    config = config or AdaptConfig()
    if "q" not in labelled or "path" not in labelled:
        raise ValueError("labelled table needs columns 'path' and 'q' (quality in [0, 1], higher = better); "
                         f"got {list(labelled.columns)}")
    q_values = pd.to_numeric(labelled["q"], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(q_values)) or q_values.min() < 0 or q_values.max() > 1:
        raise ValueError("labelled q must lie in [0, 1] (higher = better) with no missing values; got range "
                         f"[{np.nanmin(q_values)}, {np.nanmax(q_values)}] with {int(np.isnan(q_values).sum())} NaN")
    if len(labelled) < 2:
        raise ValueError(f"need at least 2 labelled images to adapt; got {len(labelled)}")
    if config.selection == "test-oracle" and test is None:
        raise ValueError("selection='test-oracle' needs the test table (and is optimistic by construction)")
    t0 = time.perf_counter()
    history = History(config=config.to_dict(), note=OPTIMISTIC_NOTE if config.selection == "test-oracle" else "")
    train, val = labelled.reset_index(drop=True), None
    if config.selection == "val":
        from .data.splits import holdout
        train, val = holdout(train, config.val_fraction, config.seed)
        train, val = train.reset_index(drop=True), val.reset_index(drop=True)
    preloaded = dict(zip(labelled["path"], images)) if images is not None else {}
    train_images = _images_for(train, preloaded)

    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        history.trainable = model.set_trainable(config.trainable, config.tuned_blocks)
        model.eval()
        start = model.first_trainable_visual_block() if config.cache_prefix else 0
        if config.augment == "none":
            transform, n_views = eval_transform(model), 1
        else:
            transform, n_views = train_transform(model, config.augment), config.n_views
        encoded = EncodedSet(model, train_images, transform, n_views, start, config.eval_batch_size)
        evaluators = _evaluators(model, val, test, config, start, preloaded)
        q = torch.tensor(train["q"].to_numpy(), dtype=torch.float32, device=model.device)
        params = [p for _, p in model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        best = (-math.inf, None, None)  # (srcc, epoch, state)
        gen = torch.Generator().manual_seed(config.seed)
        n, step = len(encoded), 0
        steps_per_epoch = math.ceil(n / config.batch_size)
        model.train()
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(n, generator=gen)
            for index in order.split(config.batch_size):
                view = torch.randint(0, n_views, (len(index),), generator=gen)
                try:
                    record = train_step(model, encoded, index, view, q, optimizer, params, config, step + 1)
                except AdaptationDivergedError as e:
                    e.history = history
                    raise
                step += 1
                record.update(kind="step", step=step, epoch=epoch, total_steps=config.epochs * steps_per_epoch,
                              seconds=time.perf_counter() - t0)
                history.steps.append(record)
                if on_step is not None:
                    on_step(record)
                if stop is not None and stop():
                    history.stopped = True
                    break
            if evaluators and not history.stopped:
                row = {"kind": "eval", "epoch": epoch, "step": step}
                row.update({f"srcc_{name}": srcc(predict_encoded(model, enc, config.eval_batch_size), target)
                            for name, (enc, target) in evaluators.items()})
                history.evals.append(row)
                if on_step is not None:
                    on_step(row)
                key = {"val": "srcc_val", "test-oracle": "srcc_test"}.get(config.selection)
                if key and row[key] > best[0]:
                    best = (row[key], epoch, _adapter_state(model))
            if history.stopped:
                break
        if best[2] is not None:
            _load_adapter_state(model, best[2])
            history.selected_epoch = best[1]
        else:
            history.selected_epoch = epoch if history.steps else None
    model.eval()
    history.seconds = time.perf_counter() - t0
    return history


def _images_for(table: pd.DataFrame, preloaded: dict) -> list:
    """Images of ``table`` in row order, reusing preloaded ones and reading the rest."""
    return [preloaded[p] if p in preloaded else load_image(p) for p in table["path"]]


def _evaluators(model, val, test, config: AdaptConfig, start: int, preloaded: dict) -> dict:
    out = {}
    for name, table in (("val", val), ("test", test)):
        if table is not None and len(table):
            enc = EncodedSet(model, _images_for(table, preloaded), eval_transform(
                model, "paper" if config.augment == "paper" else "model"), 1, start, config.eval_batch_size,
                teacher=False)
            out[name] = (enc, table["q"].to_numpy())
    return out


def compute_gradients(model, encoded: EncodedSet, index, view, q, params, config: AdaptConfig,
                      step_number: int | None = None) -> dict:
    """Forward from the cache, both losses, QGR-combined gradients accumulated into ``p.grad``.

    Raises AdaptationDivergedError (with an empty History) on a non-finite loss or gradient; no parameter is
    changed here. Returns the step's record (losses, gradient cosine, fraction projected, scene drift).
    """
    x, teacher = encoded.batch(index, view)
    device_type = model.device.type
    amp = (device_type == "cuda") if config.amp is None else config.amp
    where = f" at step {step_number}" if step_number is not None else ""
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp and device_type == "cuda"):
        q_logits, s_logits = forward_cached(model, x, encoded.start)
    q_logits, s_logits = q_logits.float(), s_logits.float()
    loss_q = quality_loss(q_logits, q[index.to(q.device)])
    loss_s = semantic_loss(s_logits, teacher)
    if not torch.isfinite(loss_q) or not torch.isfinite(loss_s):
        raise AdaptationDivergedError(
            f"non-finite loss{where} (quality {loss_q.item()}, semantic {loss_s.item()}); the model keeps the "
            f"last good state. Lower the learning rate (now {config.lr}) or check the labels.", History())
    stats = qgr_step(params, loss_q, loss_s, config.qgr)
    if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
        for p in params:
            p.grad = None
        raise AdaptationDivergedError(f"non-finite gradient{where}; the model keeps the last good state. Lower "
                                      "the learning rate or QGR lam.", History())
    return {"loss": loss_q.item(), "loss_semantic": loss_s.item(), "cosine": stats.cosine,
            "frac_projected": stats.frac_projected, "drift": scene_drift(s_logits.detach(), teacher).item()}


def train_step(model, encoded: EncodedSet, index, view, q, optimizer, params, config: AdaptConfig,
               step_number: int | None = None) -> dict:
    """One optimizer step on the batch ``encoded[index, view]`` with labels ``q[index]``."""
    optimizer.zero_grad(set_to_none=True)
    record = compute_gradients(model, encoded, index, view, q, params, config, step_number)
    optimizer.step()
    record["lr"] = optimizer.param_groups[0]["lr"]
    return record


def with_qgr(config: AdaptConfig, enabled: bool) -> AdaptConfig:
    """The same config with QGR on (released lam, or the config's) or off (lam = 0): the comparison arms."""
    return replace(config, qgr=replace(config.qgr, enabled=enabled))
