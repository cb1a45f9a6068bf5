"""The meta checkpoint of the ``meta`` arms: the one given (``meta_init=DIR/best``), or with ``meta_init="auto"``
a quick, smoke-scale meta pre-training per split on synthetic distortions of bundled photos outside the split's
test contents (:func:`auto_meta_pretrain`)."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..checkpoint import read_checkpoint
from ..data.demo import demo_references
from ..meta import MetaConfig, meta_pretrain, synthetic_tasks
from ..prompts import PromptConfig
from .registry import MethodConfig, MethodSkipped, ModelFactory

__all__ = ["AUTO_META_N_TYPES", "AUTO_META_SETTINGS", "AUTO_META_TYPES", "auto_meta_pretrain", "meta_checkpoint",
           "meta_extras", "split_tag"]


def meta_checkpoint(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame, config: MethodConfig,
                    seed: int) -> Path:
    """The meta checkpoint to start from: the given one, or (``"auto"``) a quick pre-training on synthetic
    tasks from bundled photos that are not among ``test``'s contents. Raises :class:`MethodSkipped` without one."""
    init = config.meta_init
    if init is None:
        raise MethodSkipped("no meta checkpoint: pass meta_init=DIR/best (from `clipiqa pretrain`), or 'auto' for "
                            "a quick meta pre-training on synthetic tasks")
    if str(init) != "auto":
        path = Path(init).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"meta checkpoint {path} does not exist")
        return path
    exclude = tuple(sorted(set(test["content_id"].astype(str)))) if "content_id" in test else ()
    test_types = set(test["distortion"].dropna().astype(str)) if "distortion" in test else set()
    key = (exclude, tuple(sorted(test_types)))
    cache = config.cache
    if key not in cache.meta_checkpoints:  # once per split; a failure is remembered, not retried
        try:
            cache.meta_checkpoints[key] = auto_meta_pretrain(model_factory, exclude, test_types, config, seed)
        except Exception as e:  # noqa: BLE001 - re-raised below for every meta method of this split
            cache.meta_checkpoints[key] = e
    found = cache.meta_checkpoints[key]
    if isinstance(found, Exception):
        raise found
    return found


def meta_extras(init: Path) -> dict:
    """Per-split columns that say which meta init was used and which of its epochs was selected."""
    extras: dict[str, Any] = {"meta_init": str(init)}
    try:
        metrics = read_checkpoint(init).card.get("metrics", {})
        extras["meta_selected_epoch"] = metrics.get("selected_epoch")
        extras["meta_rel_move"] = metrics.get("rel_move")
    except (OSError, ValueError):
        pass
    return extras


AUTO_META_TYPES = ("lens_blur", "colour_noise", "jpeg2000", "brighten", "contrast_decrease", "pixelate",
                   "motion_blur", "impulse_noise", "saturate")
"""Candidate source tasks of the quick meta pre-training: one or two per category; types found in the test
split are dropped, and the first five that remain are used (four train; one is held out and scored, which is
recorded in ``history.csv`` but picks nothing: see :func:`auto_meta_pretrain`)."""

AUTO_META_N_TYPES = 5
AUTO_META_SETTINGS: dict[str, Any] = {"epochs": 1, "tasks_per_batch": 1, "inner_steps": 2, "inner_lr": 1e-3,
                                      "batch_size": 4, "n_views": 0, "holdout_tasks": 0.2, "eval_every": 1}
"""The quick ``MetaConfig`` of ``meta_init="auto"`` (a smoke-scale run; use ``clipiqa pretrain`` for real).

Sized to move the init measurably while staying a few seconds on ``tiny``: 4 Reptile meta steps (one task each,
outer step 1.0 annealed linearly) of 2 inner Adam steps at 1e-3. Measured on ``tiny`` (default prompts, 8
references): ``|theta - theta0| / |theta0|`` = 2.1 % at the end; the former budget (2 epochs of 2-task meta
batches, inner lr 1e-4, 3 steps) left it at 0.54 % with the Reptile default outer step, and at 0.0086 % with
the former outer step 0.01. No crops are cached (``n_views`` 0): each step encodes only its 4 images, which
made it ~4x cheaper than the former budget (measured 20 s against 78 s, same loaded 2-core machine)."""


def auto_meta_pretrain(model_factory: ModelFactory, exclude: Sequence[str], test_types: set[str],
                       config: MethodConfig, seed: int) -> Path:
    """Quick meta pre-training on synthetic tasks built from bundled photos not named in ``exclude`` (the test
    split's contents), with distortion types outside ``test_types`` where possible; returns ``.../last``.

    The *last* meta parameters, not the held-out selection (``best``): at this budget selection reads one held-out
    task of a few images, so its SRCC is noise (ties included) and it returned the start parameters themselves
    (measured: selected epoch 0, rel_move 0), i.e. the random init the ``meta`` arms are meant to differ from.
    ``last``'s card has the run's ``rel_move``; ``history.csv`` beside it has every step."""
    model = model_factory(prompts=PromptConfig())
    size = model.source.preprocess_cfg["size"]  # the model's input side: distortions made at 224 px vanish when
    size = int(size if isinstance(size, int) else size[0])  # a 64-px model (lesson) shrinks them
    references = {k: v for k, v in demo_references(size=size).items() if k not in set(exclude)}
    if len(references) < 2:
        raise MethodSkipped("meta_init='auto': fewer than 2 bundled photos are left outside the test contents")
    types = [t for t in AUTO_META_TYPES if t not in test_types][:AUTO_META_N_TYPES]
    if len(types) < 2:
        types = list(AUTO_META_TYPES[:AUTO_META_N_TYPES])
    tasks = synthetic_tasks(references, types=types, levels=(1, 3, 5), size=size, seed=seed)
    settings = {**AUTO_META_SETTINGS, "augment": config.overrides.get("augment", "model"), "seed": int(seed)}
    workdir = config.cache.workdir or Path(tempfile.mkdtemp(prefix="clipiqa-meta-"))
    out = workdir / "meta-auto" / f"split-{split_tag(list(exclude) + types)}"
    meta_pretrain(model, tasks, MetaConfig(**settings), out_dir=out, resume=False)
    return out / "last"


def split_tag(names: Sequence[str]) -> str:
    """A short stable tag for a set of names."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:10]
