"""The protocol run: seeded splits and few-shot draws shared by every arm, each (split, arm) run with its failure
recorded rather than raised, the metrics of each run, and the summary of the splits every arm finished."""
from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.splits import few_shot, split_hash, standard_splits
from ..factory import DEFAULT_MODEL, load_model
from ..metrics import LogisticFitWarning, bootstrap_ci, chance_band, correlations
from .arms import DEFAULT_METHODS, arm_config, arm_table_row
from .registry import METHODS, ArmResult, Method, MethodConfig, MethodSkipped, ModelFactory
from .report import (METRICS, ProtocolResult, complete_splits, dataset_info, row_note, run_notes,
                     summarize_methods)

__all__ = ["PER_SPLIT_COLUMNS", "run_protocol", "score_predictions"]


def run_protocol(dataset: pd.DataFrame, methods: Sequence[str] = DEFAULT_METHODS, shots: int | float = 50,
                 n_splits: int = 10, seed: int = 0, model_factory: ModelFactory | None = None,
                 config: MethodConfig | None = None, *, out_dir: str | os.PathLike | None = None,
                 on_progress: Callable[[dict], None] | None = None, n_boot: int = 1000,
                 stop: Callable[[], bool] | None = None, **settings: Any) -> ProtocolResult:
    """Run ``methods`` on ``n_splits`` seeded splits of ``dataset`` with ``shots`` labelled images each.

    dataset: the common table (``path``, ``q`` in [0, 1] higher = better, ``content_id``); rows that share a
        ``content_id`` stay on one side of every split.
    shots: an int count or a float fraction of the 80 % pool, drawn from the 80 % side only.
    model_factory: ``() -> IQAModel`` and ``(prompts=...) -> IQAModel``; default ``load_model(DEFAULT_MODEL)``.
    config: the settings every arm receives (:class:`MethodConfig`: ``overrides``, ``recipe``, ``selection``,
        ``meta_init``, ``batch_size``, ``ridge_alpha``); None = the defaults.
    **settings: those fields given as keywords instead, e.g. ``overrides={"epochs": 2}`` (``AdaptConfig`` fields
        on top of every adapted arm's own recipe, for a smoke run) or ``selection="test-oracle"``; they replace
        the fields of ``config``. Any other keyword is refused, naming the fields.
    out_dir: when given, the four result files are written there (and auto meta checkpoints below it).
    on_progress: called after each (split, method) with a dict (``done``, ``total``, ``split``, ``method``,
        ``status``, ``seconds``).
    stop: polled between (split, method) runs; True ends the run early. The summary then uses only the splits
        that every method finished (``ProtocolResult.stopped`` says so).
    ``seconds`` per row is wall time of that method on that split: frozen features are computed once and
    reused (the first split pays), and with ``meta_init="auto"`` the meta rows include the split's meta
    pre-training.
    Same arguments, same numbers: splits, draws, initialisations and training are seeded.
    """
    methods = _check_methods(methods)
    config = _arm_settings(config, settings)  # checked before the dataset is read; a fresh cache for this run
    if model_factory is None:
        model_factory = partial(load_model, DEFAULT_MODEL)
    splits = standard_splits(dataset, n_splits=n_splits, seed=seed)
    draws = [few_shot(split.train, shots, split.seed) for split in splits]  # fails early if shots > pool
    frozen = config.cache.frozen_model(model_factory)
    arm_selection = {m: arm_config(METHODS[m], config).selection if METHODS[m].adapts else "n/a" for m in methods}
    notes = run_notes(dataset, frozen, arm_selection, config.meta_init, methods, config.recipe)
    row_notes = {m: row_note(notes, arm_selection[m]) for m in methods}

    stopped, histories, predictions = False, {}, {}
    with tempfile.TemporaryDirectory(prefix="clipiqa-protocol-") as tmp:
        config.cache.workdir = Path(out_dir) if out_dir is not None else Path(tmp)
        rows, total = [], len(splits) * len(methods)
        for i, (split, labelled) in enumerate(zip(splits, draws)):
            base = {"split": i, "split_seed": split.seed, "split_hash": split.hash, "split_by": split.by,
                    "labelled_hash": split_hash(labelled), "n_pool": len(split.train), "n_train": len(labelled),
                    "n_test": len(split.test)}
            for method in methods:
                if stop is not None and stop():
                    stopped = True
                    break
                row = {**base, **_run_one(METHODS[method], model_factory, labelled, split.test, config,
                                          split.seed, n_boot)}
                history = row.pop("history", None)
                if history is not None:
                    histories[(i, method)] = history
                preds = row.pop("predictions", None)
                if preds is not None:  # per held-out image, for galleries, scatters and worst-prediction lists
                    predictions[(i, method)] = split.test.assign(pred=preds)
                row.setdefault("recipe", METHODS[method].recipe)
                row.update(selection=arm_selection[method], random_init=frozen.random_init,
                           note=row_notes[method])
                rows.append(row)
                if on_progress is not None:
                    on_progress({"done": len(rows), "total": total, "split": i, "method": method,
                                 "status": row["status"], "seconds": row["seconds"]})
            if stopped:
                break
        per_split = _per_split_frame(rows)
        complete = complete_splits(per_split, methods)
        if stopped:
            notes.append(f"stopped after {len(complete)} complete split(s): every summary uses only the splits that "
                         "every method finished")
        result = ProtocolResult(
            per_split=per_split, summary=summarize_methods(per_split[per_split["split"].isin(complete)], methods),
            notes=notes, random_init=frozen.random_init, dataset=dataset_info(dataset, splits),
            config={"methods": list(methods), "shots": shots, "n_splits": n_splits, "seed": seed,
                    "selection": config.selection, "recipe": config.recipe, "overrides": config.overrides,
                    "meta_init": None if config.meta_init is None else str(config.meta_init),
                    "batch_size": config.batch_size, "ridge_alpha": config.ridge_alpha, "n_boot": n_boot,
                    "model": frozen.source.card(),
                    "arms": {m: arm_table_row(METHODS[m], config) for m in methods}},
            splits=splits, labelled=draws, stopped=stopped, histories=histories, predictions=predictions)
        if out_dir is not None:
            result.save(out_dir)
    return result


def _arm_settings(config: MethodConfig | None, settings: Mapping[str, Any]) -> MethodConfig:
    """The run's :class:`MethodConfig`: ``config`` (or the defaults) with the keyword ``settings`` replacing its
    fields, and a fresh cache."""
    if config is not None and not isinstance(config, MethodConfig):
        raise TypeError(f"config must be a clipiqa.protocol.MethodConfig, got {type(config).__name__}; give "
                        "overrides, recipe, selection, ... by keyword (e.g. overrides={'epochs': 2})")
    return (config or MethodConfig()).for_run(**settings)


def _check_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = METHODS.unknown(methods)
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    return tuple(dict.fromkeys(methods))


def _run_one(method: Method, model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame,
             config: MethodConfig, seed: int, n_boot: int) -> dict:
    """One method on one split: predictions, metrics and uncertainty, or the reason it did not run."""
    row: dict[str, Any] = {"method": method.name, "status": "ok", "error": ""}
    t0 = time.perf_counter()
    try:
        result = ArmResult.of(method.fn(model_factory, train, test, config, seed), method.name)
        preds = np.asarray(result.preds, dtype=np.float64).reshape(-1)
        if len(preds) != len(test):
            raise ValueError(f"method returned {len(preds)} predictions for {len(test)} test images")
        row.update(score_predictions(preds, test["q"].to_numpy(float), n_boot, seed, scores=result.scores))
        row["history"] = result.history  # taken out by run_protocol (ProtocolResult.histories)
        row["predictions"] = preds  # taken out by run_protocol (ProtocolResult.predictions)
        row.update(result.extras)
    except MethodSkipped as e:
        row.update(status="skipped", error=str(e))
    except Exception as e:  # noqa: BLE001 - one failing method must not end the run; the error is recorded
        row.update(status="error", error=f"{type(e).__name__}: {e}")
    row["seconds"] = time.perf_counter() - t0
    return row


def score_predictions(preds: np.ndarray, target: np.ndarray, n_boot: int, seed: int,
                      scores: np.ndarray | None = None) -> dict:
    """Metrics of one arm on one split. ``preds`` rank the images (CLIP arms: the logit margin, which does not
    saturate); ``scores`` are the same predictions on the label scale [0, 1] (CLIP arms: p_high) for the raw PLCC
    and RMSE, when the arm has them. ``n`` is the number of image pairs every metric was computed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LogisticFitWarning)
        out = correlations(preds, target)
        lo, hi = bootstrap_ci(preds, target, "srcc", n_boot=n_boot, seed=seed)
    if scores is not None:
        raw = correlations(np.asarray(scores, dtype=np.float64).reshape(-1), target)
        out.update(plcc=raw["plcc"], rmse=raw["rmse"])
    out.update(srcc_ci_lo=lo, srcc_ci_hi=hi, chance_band=chance_band(len(target)) if len(target) >= 2 else math.nan,
               logistic_fallback=any(issubclass(w.category, LogisticFitWarning) for w in caught))
    return out


PER_SPLIT_COLUMNS = ("split", "split_seed", "split_hash", "split_by", "labelled_hash", "method", "recipe", "status",
                     "error", "n_pool", "n_train", "n_test", "n", *METRICS, "srcc_ci_lo", "srcc_ci_hi", "chance_band",
                     "seconds", "selection", "selection_note", "random_init", "note")


def _per_split_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in PER_SPLIT_COLUMNS:
        if col not in df:
            df[col] = np.nan
    extra = [c for c in df.columns if c not in PER_SPLIT_COLUMNS]
    return df[list(PER_SPLIT_COLUMNS) + extra]
