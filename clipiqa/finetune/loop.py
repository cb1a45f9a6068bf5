"""``adapt``: the few-shot fine-tuning loop (docs/design.md, 'Few-shot fine-tuning and recipes'), its evaluation
and model selection, and the labels it trains on."""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..data.readers.table import minmax_groups
from ..data.splits import holdout
from ..data.transforms import eval_transform, spec_for, train_transform
from ..history import DivergedError, History
from ..imageio import load_image
from ..inference import predict_batches
from ..metrics import plcc, srcc
from ..threads import sharing_cpus
from .auto_lam import choose_lam
from .config import OPTIMISTIC_NOTE, AdaptConfig
from .recovery import LastGoodState, recover_from_divergence
from .schedule import Plateau, epoch_lr, evaluates_after
from .step import EncodedSet, train_step


def predict_encoded(model, encoded: EncodedSet, batch_size: int, amp: bool | None = None):
    """Predictions (margin to rank by, p_high) of the first view of ``encoded``, through the one inference path
    (:func:`clipiqa.inference.predict_batches`: eval mode, encoder under bf16 autocast on CUDA by default, head in
    fp32)."""
    return predict_batches(model, encoded.inputs[:, 0].split(batch_size), start=encoded.start, amp=amp)


def selection_score(prediction, target: np.ndarray, metric: str) -> float:
    """The number model selection maximises: SRCC of the margins, or (``srcc+plcc``, the released code's) SRCC
    plus the PLCC of p_high. NaN when undefined (e.g. fewer than 3 images or constant predictions)."""
    value = srcc(prediction.margin.numpy(), target)
    if metric == "srcc+plcc":
        value += plcc(prediction.score.numpy(), target)
    return float(value)


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

    With ``config.qgr.lam == "auto"`` the QGR strength is first chosen from ``labelled`` alone by content-grouped
    inner cross-validation (:func:`clipiqa.finetune.auto_lam.choose_lam`; ``len(auto_grid) * auto_folds`` extra
    runs); ``history.qgr_lam`` records the strength used (0.0 = QGR off) and ``history.qgr_lam_cv`` the choice.
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
    if config.qgr.is_auto:  # the strength comes from the labelled images alone (never ``test``)
        lam, history.qgr_lam_cv = choose_lam(model, labelled, config, images=images, stop=stop)
        config = replace(config, qgr=replace(config.qgr, lam=lam))
        history.note = "; ".join(filter(None, [history.note, history.qgr_lam_cv.get("note", "")]))
    history.qgr_lam = float(config.qgr.lam) if config.qgr.active else 0.0
    train, val = labelled.reset_index(drop=True), None
    if config.selection == "val":
        train, val = holdout(train, config.val_fraction, config.seed)
        train, val = train.reset_index(drop=True), val.reset_index(drop=True)
    preloaded = dict(zip(labelled["path"], images)) if images is not None else {}
    train_images = _images_for(train, preloaded)

    # the cores other work leaves free now (clipiqa.threads.sharing_cpus), restored after
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []), sharing_cpus():
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
        plateau = Plateau(config.plateau_factor, config.plateau_patience, config.plateau_after)
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
                plateau.update(row[f"select_{key}"], epoch)

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
                except DivergedError as e:
                    raise recover_from_divergence(model, e, history, last_good, encoded, config, step + 1, epoch,
                                                  t0) from e
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
            if evaluators and not history.stopped and evaluates_after(config, epoch):
                evaluate(epoch)
                model.train()
            if history.stopped:
                break
            if config.min_lr > 0 and epoch < config.epochs and config.lr * plateau.scale < config.min_lr:
                history.note = "; ".join(filter(None, [history.note, (
                    f"training ended after epoch {epoch} of {config.epochs}: the learning rate fell to "
                    f"{config.lr * plateau.scale:.3g} < min_lr {config.min_lr:g}")]))
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
    """The labels a step trains on: ``q``; or ``q`` min-max normalised over the whole *training* draw
    (``label_norm="minmax"``, the released protocol) or per distortion subset of it (``"subset-minmax"``), by
    :func:`clipiqa.data.readers.table.minmax_groups`: a set whose labels are all equal keeps them as they are.

    Evaluation always reads the table's own ``q``: the released code also min-maxes the whole test split, an
    increasing affine map that leaves the SRCC and PLCC it selects on unchanged."""
    q = train["q"].to_numpy(dtype=float)
    if config.label_norm == "minmax":
        return minmax_groups(q)
    if config.label_norm != "subset-minmax":
        return q
    has_groups = "distortion" in train and train["distortion"].notna().any()
    return minmax_groups(q, train["distortion"].astype(str).to_numpy() if has_groups else None)


def _selection_never_ran(key: str, evaluators: dict, val: pd.DataFrame | None) -> str:
    """Why a val/test-oracle selection picked nothing (the last epoch's state is kept)."""
    if key not in evaluators:
        n = 0 if val is None else len(val)
        return f"{key} selection never ran: no {key} images ({n}); the last epoch's state is kept"
    n = len(evaluators[key][1])
    return (f"{key} selection never ran: the selection metric was undefined on every evaluation ({n} {key} "
            "image(s); SRCC needs at least 3 with distinct scores); the last epoch's state is kept")


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

