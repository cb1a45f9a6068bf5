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
from .data.transforms import VARIANTS, eval_transform, spec_for, train_transform
from .imageio import load_image
from .losses import quality_loss, scene_drift, semantic_loss
from .metrics import plcc, srcc
from .qgr import NonFiniteGradientError, QGRConfig, qgr_step

SELECTION_MODES = ("fixed", "val", "test-oracle")
OPTIMISTIC_NOTE = "test-oracle: best epoch picked on the test split (the released code's protocol) - optimistic"


class AdaptationDivergedError(RuntimeError):
    """A non-finite loss, gradient or parameter. ``adapt`` has restored in place the last good parameters
    (``history.diverged`` says which: the start of the last epoch that trained finitely, or the initial ones,
    checked to score finitely); ``history`` holds the steps."""

    def __init__(self, message: str, history: "History"):
        super().__init__(message)
        self.history = history


LR_SCHEDULES = ("constant", "cosine", "plateau")
SELECTION_METRICS = ("srcc", "srcc+plcc")
LABEL_NORMS = ("none", "subset-minmax")


def _fail(field_name: str, value: Any, allowed: str) -> None:
    invalid("AdaptConfig", field_name, value, allowed)


def _check_choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(field_name, value, f"use one of {', '.join(repr(a) for a in allowed)}")


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
    qgr_stats: bool = False           # with QGR off, still compute g_s for the diagnostics (a second backward)
    selection: str = "fixed"
    val_fraction: float = 0.2
    cache_prefix: bool = True
    seed: int = 0
    amp: bool | None = None           # bf16 autocast; None = on for CUDA
    eval_batch_size: int = 64
    # schedule and selection details that recipes set (clipiqa.recipes); defaults = the released fine-tuning
    lr_schedule: str = "constant"     # "constant", "cosine" (to 0 over the run), "plateau" (x factor on a plateau)
    warmup_epochs: int = 0            # epochs at warmup_lr before the schedule starts (CoOp: 1 at 1e-5)
    warmup_lr: float = 1e-5
    plateau_factor: float = 0.3       # "plateau": lr multiplier when the selection metric stops improving
    plateau_patience: int = 5         # "plateau": evaluations without improvement before the lr drops
    selection_metric: str = "srcc"    # "srcc" or "srcc+plcc" (the released code's sum)
    select_initial: bool = False      # evaluate before the first step and let selection keep the initial state
    label_norm: str = "none"          # "none" or "subset-minmax" (released: min-max per distortion of the labels)
    prompt_dropout: bool = False      # keep visual-prompt dropout active when the prompts are frozen (released)

    def __post_init__(self) -> None:
        if isinstance(self.qgr, dict):
            object.__setattr__(self, "qgr", QGRConfig(**self.qgr))
        if self.trainable not in ("paper", "prompts", "text"):
            _fail("trainable", self.trainable, "use 'paper', 'prompts' or 'text'")
        if not isinstance(self.qgr_stats, bool):
            _fail("qgr_stats", self.qgr_stats, "use True (diagnostics for both arms) or False")
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
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("selection_metric", self.selection_metric, SELECTION_METRICS)
        _check_choice("label_norm", self.label_norm, LABEL_NORMS)
        for name in ("warmup_epochs",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                _fail(name, value, "use an integer >= 0")
        if isinstance(self.plateau_patience, bool) or not isinstance(self.plateau_patience, int) \
                or self.plateau_patience < 1:
            _fail("plateau_patience", self.plateau_patience, "use a positive integer (evaluations)")
        if not (isinstance(self.warmup_lr, (int, float)) and math.isfinite(self.warmup_lr) and self.warmup_lr > 0):
            _fail("warmup_lr", self.warmup_lr, "use a finite positive learning rate")
        if not (isinstance(self.plateau_factor, (int, float)) and 0 < self.plateau_factor < 1):
            _fail("plateau_factor", self.plateau_factor, "use a factor in (0, 1), e.g. 0.3")
        if self.lr_schedule == "plateau" and self.selection == "fixed":
            _fail("lr_schedule", self.lr_schedule, "'plateau' watches the selection metric: use selection='val' or "
                  "'test-oracle' with it, or another schedule")
        if self.select_initial and self.selection == "fixed":
            _fail("select_initial", self.select_initial, "it only matters with selection='val' or 'test-oracle'")

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
    diverged: dict | None = None  # step, epoch, reason, and which parameters were restored (restored_after_step)

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
def predict_encoded(model, encoded: EncodedSet, batch_size: int, amp: bool | None = None):
    """Predictions (margin to rank by, p_high) of the first view of ``encoded``, through the one inference path
    (:func:`clipiqa.inference.predict_batches`: eval mode, encoder under bf16 autocast on CUDA by default, head in
    fp32)."""
    from .inference import predict_batches
    return predict_batches(model, encoded.inputs[:, 0].split(batch_size), start=encoded.start, amp=amp)


def selection_score(prediction, target: np.ndarray, metric: str) -> float:
    """The number model selection maximises: SRCC of the margins, or (``srcc+plcc``, the released code's) SRCC
    plus the PLCC of p_high. NaN when undefined (e.g. fewer than 3 images or constant predictions)."""
    value = srcc(prediction.margin.numpy(), target)
    if metric == "srcc+plcc":
        value += plcc(prediction.score.numpy(), target)
    return float(value)


def epoch_lr(config: AdaptConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based) before any plateau reduction: ``warmup_lr`` for the first
    ``warmup_epochs``, then ``lr`` (constant, plateau) or a cosine decay from ``lr`` towards 0 over the remaining
    epochs (the last epoch still gets a positive rate). A budget shorter than the warm-up (a smoke run of a recipe)
    keeps at least its last epoch at ``lr``."""
    warmup = min(config.warmup_epochs, config.epochs - 1)
    if epoch <= warmup:
        return float(config.warmup_lr)
    if config.lr_schedule != "cosine":
        return float(config.lr)
    span = config.epochs - warmup
    t = (epoch - 1 - warmup) / span if span > 0 else 0.0
    return float(config.lr * 0.5 * (1.0 + math.cos(math.pi * t)))


class Plateau:
    """``lr_schedule="plateau"``: multiply the learning rate by ``factor`` after ``patience`` evaluations without a
    new best of the selection metric (like torch's ReduceLROnPlateau in "max" mode, threshold 0)."""

    def __init__(self, factor: float, patience: int):
        self.factor, self.patience = factor, patience
        self.best, self.waited, self.scale = -math.inf, 0, 1.0

    def update(self, value: float) -> float:
        """Record one evaluation; returns the current multiplier of the learning rate."""
        if math.isfinite(value) and value > self.best:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
            if self.waited >= self.patience:
                self.scale *= self.factor
                self.waited = 0
        return self.scale


def minmax_per_subset(q: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Labels min-max normalised to [0, 1] within each subset (the released code's per-distortion labels); a subset
    whose labels are all equal gets 0.5. Direction is kept (q is already higher = better). Training labels only."""
    q = np.asarray(q, dtype=float)
    groups = np.zeros(len(q)) if groups is None else np.asarray(groups, dtype=object)
    out = np.empty_like(q)
    for g in dict.fromkeys(groups.tolist()):
        mask = groups == g
        lo, hi = q[mask].min(), q[mask].max()
        out[mask] = (q[mask] - lo) / (hi - lo) if hi > lo else 0.5
    return out


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
        model.prompt_dropout = config.prompt_dropout
        model.eval()
        # frozen visual prompts with active dropout make the prefix random: no cache then (released behaviour)
        random_prefix = config.prompt_dropout and model.visual_prompt is not None
        start = model.first_trainable_visual_block() if config.cache_prefix and not random_prefix else 0
        if config.augment != "none":  # the evaluation transform follows the training one (saved in the card)
            model.transform_spec = spec_for(model, config.augment)
        if config.augment == "none":
            transform, n_views = eval_transform(model.transform_spec), 1
        else:
            transform, n_views = train_transform(model, config.augment), config.n_views
        encoded = EncodedSet(model, train_images, transform, n_views, start, config.eval_batch_size)
        evaluators = _evaluators(model, val, test, config, start, preloaded)
        q = torch.tensor(training_labels(train, config), dtype=torch.float32, device=model.device)
        params = [p for _, p in model.named_parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=epoch_lr(config, 1), momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        key = {"val": "val", "test-oracle": "test"}.get(config.selection)
        best = (-math.inf, None, None)  # (selection score, epoch, state)
        plateau = Plateau(config.plateau_factor, config.plateau_patience)
        gen = torch.Generator().manual_seed(config.seed)
        n, step = len(encoded), 0
        steps_per_epoch = math.ceil(n / config.batch_size)

        def evaluate(epoch: int) -> None:
            nonlocal best
            row: dict[str, Any] = {"kind": "eval", "epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"]}
            for name, (enc, target) in evaluators.items():
                prediction = predict_encoded(model, enc, config.eval_batch_size, config.amp)
                row[f"srcc_{name}"] = srcc(prediction.margin.numpy(), target)
                row[f"select_{name}"] = selection_score(prediction, target, config.selection_metric)
            history.evals.append(row)
            if on_step is not None:
                on_step(row)
            if key and row[f"select_{key}"] > best[0]:
                best = (row[f"select_{key}"], epoch, _adapter_state(model))
            if key and config.lr_schedule == "plateau":
                plateau.update(row[f"select_{key}"])

        if config.select_initial and evaluators:
            evaluate(0)
        model.train()
        last_good = LastGoodState(params)
        for epoch in range(1, config.epochs + 1):
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(config, epoch) * plateau.scale
            last_good.epoch_start(epoch, step)
            order = torch.randperm(n, generator=gen)
            for index in order.split(config.batch_size):
                view = torch.randint(0, n_views, (len(index),), generator=gen)
                try:
                    record = train_step(model, encoded, index, view, q, optimizer, params, config, step + 1)
                except AdaptationDivergedError as e:
                    raise _diverged(model, e, history, last_good, encoded, config, step + 1, epoch, t0) from e
                last_good.step_done()
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
                evaluate(epoch)
                model.train()
            if history.stopped:
                break
        if best[2] is not None:
            _load_adapter_state(model, best[2])
            history.selected_epoch = best[1]
        else:
            history.selected_epoch = epoch if history.steps else None
            if key:
                history.note = "; ".join(filter(None, [history.note, _selection_never_ran(key, evaluators, val)]))
    model.eval()
    history.seconds = time.perf_counter() - t0
    return history


def training_labels(train: pd.DataFrame, config: AdaptConfig) -> np.ndarray:
    """The labels a step trains on: ``q``, or (``label_norm="subset-minmax"``, released) ``q`` min-max normalised
    per distortion subset of the *training* labels. Evaluation always reads the table's own ``q``."""
    q = train["q"].to_numpy(dtype=float)
    if config.label_norm != "subset-minmax":
        return q
    has_groups = "distortion" in train and train["distortion"].notna().any()
    return minmax_per_subset(q, train["distortion"].astype(str).to_numpy() if has_groups else None)


def _selection_never_ran(key: str, evaluators: dict, val: pd.DataFrame | None) -> str:
    """Why a val/test-oracle selection picked nothing (the last epoch's state is kept)."""
    if key not in evaluators:
        n = 0 if val is None else len(val)
        return f"{key} selection never ran: no {key} images ({n}); the last epoch's state is kept"
    n = len(evaluators[key][1])
    return (f"{key} selection never ran: the selection metric was undefined on every evaluation ({n} {key} "
            "image(s); SRCC needs at least 3 with distinct scores); the last epoch's state is kept")


class LastGoodState:
    """The trainable tensors at the start of the last epoch known to train finitely, and the initial ones.

    The state at an epoch's start (the end of an epoch whose every step had a finite loss, finite gradients and
    finite parameters) becomes "good" once the epoch's first step, which runs the forward with it, succeeds.
    Holds at most three copies of the trainable tensors (initial, good, pending), on their device."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.initial = self._clone()
        self.good: tuple[list[torch.Tensor], int, int] = (self.initial, 1, 0)  # (tensors, epoch, after step)
        self.pending: tuple[list[torch.Tensor], int, int] | None = None

    def _clone(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def epoch_start(self, epoch: int, steps_done: int) -> None:
        if steps_done:
            self.pending = (self._clone(), epoch, steps_done)

    def step_done(self) -> None:
        if self.pending is not None:
            self.good, self.pending = self.pending, None

    def load(self, tensors: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, t in zip(self.params, tensors):
                p.copy_(t)


def _scores_finitely(model, encoded: EncodedSet, batch_size: int) -> bool:
    """Whether the model's quality and scene logits are finite on every cached training image (first view)."""
    model.eval()
    with torch.no_grad():
        for chunk in encoded.inputs[:, 0].split(batch_size):
            if not all_finite(forward_cached(model, chunk, encoded.start)):
                return False
    return True


def _diverged(model, error: AdaptationDivergedError, history: History, last_good: LastGoodState,
              encoded: EncodedSet, config: AdaptConfig, step: int, epoch: int, t0: float) -> AdaptationDivergedError:
    """Restore in place the last good parameters that score finitely (else the initial ones), record what
    happened in ``history`` and return the error to raise."""
    candidates = [last_good.good] + ([(last_good.initial, 1, 0)] if last_good.good[2] else [])
    restored = None
    for tensors, at_epoch, after_step in candidates:
        last_good.load(tensors)
        if _scores_finitely(model, encoded, config.eval_batch_size):
            restored = (at_epoch, after_step)
            break
    if restored is None:
        what = ("The model does not score finitely even with its initial adapter parameters (restored in place): "
                "the backbone or the inputs hold non-finite values, and the model is unusable.")
    else:
        to = ("its initial parameters (after step 0)" if restored[1] == 0 else
              f"the parameters from the start of epoch {restored[0]} (after step {restored[1]}), the last state "
              "that trained finitely")
        what = f"The model was restored in place to {to}; it scores finitely."
    history.diverged = {"step": step, "epoch": epoch, "reason": str(error),
                        "restored_epoch": None if restored is None else restored[0],
                        "restored_after_step": None if restored is None else restored[1]}
    history.note = "; ".join(filter(None, [history.note, f"diverged at step {step}: {what}"]))
    history.seconds = time.perf_counter() - t0
    model.eval()
    return AdaptationDivergedError(f"{error} {what}", history)


def _images_for(table: pd.DataFrame, preloaded: dict) -> list:
    """Images of ``table`` in row order, reusing preloaded ones and reading the rest."""
    return [preloaded[p] if p in preloaded else load_image(p) for p in table["path"]]


def _evaluators(model, val, test, config: AdaptConfig, start: int, preloaded: dict) -> dict:
    out = {}
    for name, table in (("val", val), ("test", test)):
        if table is not None and len(table):
            enc = EncodedSet(model, _images_for(table, preloaded), eval_transform(model.transform_spec), 1, start,
                             config.eval_batch_size, teacher=False)
            out[name] = (enc, table["q"].to_numpy())
    return out


def compute_gradients(model, encoded: EncodedSet, index, view, q, params, config: AdaptConfig,
                      step_number: int | None = None) -> dict:
    """Forward from the cache, both losses, QGR-combined gradients accumulated into ``p.grad``.

    With QGR off, the semantic gradient (a second backward pass) is computed only when ``config.qgr_stats`` asks
    for the diagnostics; otherwise ``cosine`` is NaN. Raises AdaptationDivergedError (with an empty History; the
    caller restores parameters) on a non-finite loss, quality gradient or semantic gradient; no parameter is
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
            f"non-finite loss{where} (quality {loss_q.item()}, semantic {loss_s.item()}). Lower the learning rate "
            f"(now {config.lr}) or check the labels.", History())
    try:
        stats = qgr_step(params, loss_q, loss_s, config.qgr, compute_stats=config.qgr_stats)
    except NonFiniteGradientError as e:
        raise AdaptationDivergedError(f"non-finite gradient{where}: {e}. Lower the learning rate (now {config.lr})"
                                      " or QGR lam.", History()) from e
    if not all_finite([p.grad for p in params if p.grad is not None]):
        for p in params:
            p.grad = None
        raise AdaptationDivergedError(f"non-finite gradient{where}. Lower the learning rate (now {config.lr}) or "
                                      "QGR lam.", History())
    return {"loss": loss_q.item(), "loss_semantic": loss_s.item(), "cosine": stats.cosine,
            "frac_projected": stats.frac_projected, "drift": scene_drift(s_logits.detach(), teacher).item()}


def train_step(model, encoded: EncodedSet, index, view, q, optimizer, params, config: AdaptConfig,
               step_number: int | None = None) -> dict:
    """One optimizer step on the batch ``encoded[index, view]`` with labels ``q[index]``.

    Raises AdaptationDivergedError on a non-finite loss or gradient (nothing changed) or when the step leaves a
    non-finite parameter (the caller restores the last good parameters)."""
    optimizer.zero_grad(set_to_none=True)
    record = compute_gradients(model, encoded, index, view, q, params, config, step_number)
    optimizer.step()
    if not all_finite(params):
        where = f"after step {step_number}" if step_number is not None else "after a step"
        raise AdaptationDivergedError(f"non-finite parameters {where} (the gradients were finite). Lower the "
                                      f"learning rate (now {config.lr}).", History())
    record["lr"] = optimizer.param_groups[0]["lr"]
    return record


def all_finite(tensors) -> bool:
    """True when no tensor holds inf or NaN (one host sync for all of them)."""
    tensors = list(tensors)
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def with_qgr(config: AdaptConfig, enabled: bool) -> AdaptConfig:
    """The same config with QGR off (plain fine-tuning) or on, with the config's lam, or the released
    ``RELEASED_QGR_LAM`` = 5 when the config's lam is 0: the two comparison arms differ in this only."""
    qgr = replace(config.qgr, enabled=enabled)
    if enabled and not qgr.active:
        qgr = replace(qgr, lam=RELEASED_QGR_LAM)
    return replace(config, qgr=qgr)


RELEASED_QGR_LAM = 5.0
