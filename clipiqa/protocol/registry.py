"""What an evaluation arm is: a registered :class:`Method` (its function, what it trains, its recipe) in the
shared :data:`METHODS` registry, the :class:`MethodConfig` every arm receives and the :class:`ArmResult` it
returns."""
from __future__ import annotations

import os
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from ..configs import invalid
from ..finetune import SELECTION_MODES, AdaptConfig
from ..recipes import RECIPES
from ..registry import Registry
from .cache import ModelFactory, ProtocolCache

__all__ = ["METHODS", "ArmResult", "Method", "MethodConfig", "MethodFn", "MethodSkipped", "ModelFactory", "register_method"]


class MethodSkipped(Exception):
    """A method cannot run in this setting (e.g. no meta checkpoint); the reason is reported, not an error."""


@dataclass
class MethodConfig:
    """Settings every method receives: what :func:`run_protocol` passes to each arm, given to it as one object
    (``config=MethodConfig(...)``) or field by field as keywords (``overrides={"epochs": 2}``). Checked when
    made: a bad value names the field, the value and the choices.

    overrides: ``AdaptConfig`` fields applied on top of every adapted arm's recipe (e.g. a smaller smoke budget
        ``{"epochs": 2}``); recorded in each row's ``recipe`` column.
    recipe: a recipe that replaces the own recipe of the arms on the paper's trainable set (``last-blocks``):
        ``"grmp-released"`` for comparison with the paper (optimistic), or None.
    selection: the model-selection mode of every adapted arm (``fixed``, ``val``, ``test-oracle``; None = the
        recipe's). ``test-oracle`` is labelled optimistic everywhere.
    meta_init: a meta checkpoint (``DIR/best``), ``"auto"`` (quick meta pre-training on synthetic tasks from
        bundled photos not in the test split; needs ``clipiqa.meta``), or None (meta methods are skipped).
    batch_size: images per forward pass when scoring or extracting features.
    ridge_alpha: a fixed ridge penalty, or None for leave-one-out selection over a log grid.
    cache: what the arms of one run share (:func:`run_protocol` gives every run a fresh one).
    """

    overrides: Mapping[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    selection: str | None = None
    meta_init: str | os.PathLike | None = None
    batch_size: int = 32
    ridge_alpha: float | None = None
    cache: ProtocolCache = field(default_factory=ProtocolCache)

    def __post_init__(self) -> None:
        if self.selection is not None and self.selection not in SELECTION_MODES:
            invalid("MethodConfig", "selection", self.selection,
                    f"use one of {', '.join(SELECTION_MODES)} (or None for each recipe's own)")
        if self.recipe is not None and self.recipe not in RECIPES:
            invalid("MethodConfig", "recipe", self.recipe, f"use one of {', '.join(RECIPES)} (or None)")
        self.overrides = dict(self.overrides or {})
        AdaptConfig(**self.overrides)  # fail early, naming the field, on a bad override

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The fields a caller sets (all but the run's ``cache``)."""
        return tuple(f.name for f in fields(cls) if f.name != "cache")

    def for_run(self, **given: Any) -> "MethodConfig":
        """A copy with the ``given`` settings replaced and a fresh cache: what one run of the protocol uses."""
        unknown = sorted(set(given) - set(self.settings()))
        if unknown:
            raise TypeError(f"unknown setting(s) {', '.join(unknown)}; the settings every arm receives are "
                            f"MethodConfig's fields: {', '.join(self.settings())}")
        return dataclasses.replace(self, **given, cache=ProtocolCache())


@dataclass
class ArmResult:
    """What an arm returns for one split (a bare array of predictions is read as ``ArmResult(preds)``).

    preds: one number per test image, in the test table's order, higher = better; they rank the images (CLIP
        arms: the logit margin, which does not saturate). SRCC, KRCC and the logistic PLCC are computed on them.
    scores: the same predictions on the label scale [0, 1] (CLIP arms: p_high), for the raw PLCC and RMSE; None
        when the arm has no such scale.
    history: the training record of an adapted arm (:class:`clipiqa.history.History`), kept in
        ``ProtocolResult.histories``; None for arms that do not train.
    extras: more columns of the arm's ``per_split`` row (e.g. ``recipe``, ``selected_epoch``, ``scene_kl``).
    """

    preds: np.ndarray
    scores: np.ndarray | None = None
    history: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, output: Any, name: str = "arm") -> "ArmResult":
        """``output`` of an arm as an :class:`ArmResult`: itself, or an array-like of predictions."""
        if isinstance(output, cls):
            return output
        if isinstance(output, tuple):
            raise TypeError(f"method {name!r} returned a tuple; return the predictions (one number per test image) "
                            "or clipiqa.protocol.ArmResult(preds, scores=..., history=..., extras={...})")
        return cls(preds=output)


MethodFn = Callable[[ModelFactory, pd.DataFrame, pd.DataFrame, MethodConfig, int], "ArmResult | np.ndarray"]


@dataclass(frozen=True)
class Method:
    """A registered arm: its function, what it trains, where that starts, and its recipe.

    ``recipe`` names an entry of :data:`clipiqa.recipes.RECIPES` for adapted arms (their training settings), or
    says how a frozen arm is fitted ("none", "closed form"). ``adapts`` marks arms that train (selection applies).
    """

    name: str
    fn: MethodFn
    description: str
    adapts: bool = False
    trains: str = "nothing"
    init: str = "-"
    recipe: str = "none"
    trainable: str | None = None


METHODS: Registry[Method] = Registry("method", describe=lambda m: m.description)
"""Every arm by name, in registration order (the order of listings and of the README's arm table)."""


def register_method(name: str, description: str, adapts: bool = False, *, trains: str = "nothing",
                    init: str = "-", recipe: str = "none", trainable: str | None = None, replace: bool = False
                    ) -> Callable[[MethodFn], MethodFn]:
    """Add an arm to :data:`METHODS` (usable by name in :func:`run_protocol` and ``clipiqa bench``).

    Adapted arms (``adapts=True``) name their ``recipe`` (a key of :data:`clipiqa.recipes.RECIPES`) and their
    ``trainable`` set (``text``, ``prompts``, ``last-blocks``). A name already registered needs ``replace=True``."""
    if adapts and (recipe not in RECIPES or trainable is None):
        raise ValueError(f"method {name!r}: an adapted arm needs a known recipe ({', '.join(RECIPES)}; got "
                         f"{recipe!r}) and a trainable set (got {trainable!r})")

    def wrap(fn: MethodFn) -> MethodFn:
        METHODS.add(name, Method(name, fn, description, adapts, trains, init, recipe, trainable), replace=replace)
        return fn
    return wrap
