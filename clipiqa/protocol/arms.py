"""The arms the protocol compares: frozen baselines (zero-shot, ridge probe, classical ridge) and adapted arms,
each trained with its own recipe (:mod:`clipiqa.recipes`) from a fresh model, a meta checkpoint for the ``meta``
arms (:mod:`clipiqa.protocol.auto_meta`). Registration order here is the order of every listing."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from .. import baselines
from ..adapters import LAST_BLOCKS
from ..data.transforms import eval_transform
from ..finetune import AdaptConfig, adapt, with_qgr
from ..inference import predict_features, predict_pil
from ..prompts import DEFAULT_VISUAL_TOKENS, PromptConfig
from ..recipes import RECIPES, budget_text
from .auto_meta import meta_checkpoint, meta_extras
from .scenes import scene_retention
from .registry import METHODS, ArmResult, Method, MethodConfig, MethodFn, ModelFactory, register_method

__all__ = ["ADAPTED_ARMS", "DEFAULT_METHODS", "META", "LAST_BLOCKS_TRAINS", "TEXT_ONLY", "adapt_and_predict",
           "adapted_arm", "arm_config", "arm_recipe", "arm_table_row", "history_param_count", "predict_table"]

# --------------------------------------------------------------------------------------------- frozen methods
@register_method("zero-shot", "frozen CLIP with antonym prompts (CLIP-IQA style); no training")
def zero_shot(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame, config: MethodConfig,
              seed: int) -> ArmResult:
    """Logit margins of the antonym prompts from the frozen model (from cached frozen features, through
    :func:`clipiqa.inference.predict_features`), with p_high as ``scores`` for raw PLCC/RMSE."""
    model = config.cache.frozen_model(model_factory)
    feats = config.cache.clip_features(model_factory, list(test["path"]), config.batch_size)
    with torch.no_grad(), model.adapters_off():
        pred = predict_features(model, torch.as_tensor(feats, device=model.device)).cpu()
    return ArmResult(pred.margin.numpy(), scores=pred.score.numpy())


@register_method("ridge-probe", "ridge regression on frozen CLIP image features (linear probe)",
                 trains="ridge on frozen CLIP image features", recipe="closed form, leave-one-out alpha")
def ridge_probe(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame, config: MethodConfig,
                seed: int) -> np.ndarray:
    cache = config.cache
    x_train = cache.clip_features(model_factory, list(train["path"]), config.batch_size)
    x_test = cache.clip_features(model_factory, list(test["path"]), config.batch_size)
    return baselines.ridge_probe(x_train, train["q"].to_numpy(float), x_test, alpha=config.ridge_alpha)


@register_method("classical-ridge", "CLIP-free check: ridge on BRISQUE's 36 natural-scene statistics (Mittal et "
                                    "al. 2012: MSCN and neighbour-product fits at two scales)",
                 trains="ridge on BRISQUE's 36 natural-scene statistics", recipe="closed form, leave-one-out alpha")
def classical_ridge(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame, config: MethodConfig,
                    seed: int) -> np.ndarray:
    cache = config.cache
    return baselines.classical_ridge(cache.classical(list(train["path"])), train["q"].to_numpy(float),
                                     cache.classical(list(test["path"])), alpha=config.ridge_alpha)


# --------------------------------------------------------------------------------------------- adapted methods
def predict_table(model, table: pd.DataFrame, config: MethodConfig, variant: str | None = None, *,
                  with_scores: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Logit margins of ``table``'s images with ``model`` as it is, one centre crop each, through
    :func:`clipiqa.inference.predict_pil` (the same numbers as :func:`clipiqa.scoring.score_files`: the model's
    own evaluation transform, bf16 encoder on CUDA, fp32 head). ``with_scores``: also p_high, as
    ``(margins, scores)``. ``variant`` (``model``/``grmp``) overrides the model's transform spec; leave it None."""
    transform = eval_transform(model, variant) if variant is not None else model.preprocess
    images = config.cache.images(list(table["path"]))
    pred = predict_pil(model, images, batch_size=config.batch_size, transform=transform)
    margins, scores = pred.margin.numpy(), pred.score.numpy()
    return (margins, scores) if with_scores else margins


def arm_recipe(method: Method, config: MethodConfig) -> str:
    """The recipe an arm trains with: the run's ``recipe`` for arms on the paper's trainable set, else its own."""
    return config.recipe if config.recipe and method.trainable == LAST_BLOCKS else method.recipe


def arm_config(method: Method, config: MethodConfig, seed: int = 0, qgr: bool | str = False) -> AdaptConfig:
    """The ``AdaptConfig`` an adapted arm trains with: its recipe, then the run's overrides (e.g. a smoke budget),
    the run's selection mode, the arm's trainable set, QGR on/off/``"auto"`` and the split's seed."""
    settings = {**RECIPES[arm_recipe(method, config)].settings, **config.overrides,
                "trainable": method.trainable, "seed": int(seed)}
    if config.selection is not None:
        settings["selection"] = config.selection
    return with_qgr(AdaptConfig(**settings), qgr)


def adapt_and_predict(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame,
                      config: MethodConfig, seed: int, *, method: str, qgr: bool | str,
                      prompts: PromptConfig | str | os.PathLike | None = None) -> ArmResult:
    """Fresh model (with ``prompts``), few-shot adaptation on ``train`` with the arm's recipe, predictions for
    ``test``. The extras say what was trained, for how many steps, and whether a selection actually ran."""
    model = model_factory() if prompts is None else model_factory(prompts=prompts)
    arm = METHODS[method]
    cfg = arm_config(arm, config, seed, qgr)
    oracle = cfg.selection == "test-oracle"
    history = adapt(model, train, cfg, test=test if oracle else None,
                    images=config.cache.images(list(train["path"])))
    preds, scores = predict_table(model, test, config, with_scores=True)
    # how far the adapted scene branch moved from its frozen self on the test images (clipiqa.protocol.scenes)
    retention = scene_retention(model, config.cache.images(list(test["path"])), batch_size=config.batch_size)
    steps = history.steps_frame()
    extras = {"recipe": arm_recipe(arm, config) + _override_text(config.overrides),
              "selected_epoch": history.selected_epoch, "train_steps": len(steps),
              "final_loss": float(steps["loss"].iloc[-1]) if len(steps) else float("nan"),
              "qgr_lam": history.qgr_lam, "qgr_lam_cv": _cv_text(history.qgr_lam_cv), "trainable": arm.trainable,
              "n_trainable_params": history_param_count(model), "selection_note": history.note, **retention}
    return ArmResult(preds, scores=scores, history=history, extras=extras)


def _cv_text(record: Mapping[str, Any]) -> str:
    """The inner-CV scores of an automatic QGR strength in one CSV cell (``lam:SRCC`` per grid value), or ''."""
    scores = record.get("scores") if record else None
    if not scores:
        return record.get("note", "") if record else ""
    return " ".join(f"{float(lam):g}:{'nan' if v is None else f'{v:.3f}'}" for lam, v in scores.items())


def _override_text(overrides: Mapping[str, Any]) -> str:
    return f" [{', '.join(f'{k}={v}' for k, v in sorted(overrides.items()))}]" if overrides else ""


def history_param_count(model) -> int:
    """Number of trainable scalars (what an arm actually trained)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


TEXT_ONLY = PromptConfig(visual_tokens=0)
"""Prompts with the text context only: CoOp, and the paper's trainable set without a meta checkpoint (random
frozen visual tokens would corrupt CLIP's features: measured cosine 0.970 to the frozen features)."""
META = "meta checkpoint"
LAST_BLOCKS_TRAINS = "text context + last 4 blocks of both towers + final norms"


def adapted_arm(name: str, qgr: bool | str, prompts: PromptConfig | str) -> MethodFn:
    """The function of an adapted arm: a fresh model with ``prompts`` (or the meta checkpoint when ``prompts`` is
    :data:`META`), adapted with the arm's recipe, predicting the test split."""
    def run(model_factory, train, test, config, seed):
        if prompts != META:
            return adapt_and_predict(model_factory, train, test, config, seed, method=name, qgr=qgr, prompts=prompts)
        init = meta_checkpoint(model_factory, train, test, config, seed)
        result = adapt_and_predict(model_factory, train, test, config, seed, method=name, qgr=qgr, prompts=init)
        result.extras.update(meta_extras(init))
        return result
    run.__name__ = run.__qualname__ = name.replace("+", "_").replace("-", "_")
    return run


ADAPTED_ARMS = (
    # name, description, trains, init, recipe, trainable set, QGR, prompts
    ("coop", "CoOp: learnable text context only (4 vectors), frozen CLIP", "text context", "N(0, 0.02)",
     "coop", "text", False, TEXT_ONLY),
    ("coop+vpt", "CoOp + VPT-deep: text context and 100 visual prompt tokens per block, frozen CLIP",
     "text context + visual prompts", "N(0, 0.02); VPT uniform", "coop", "prompts", False,
     PromptConfig(visual_tokens=DEFAULT_VISUAL_TOKENS)),
    ("ft", "GRMP-IQA ablation: random init, last-blocks trainable set, no QGR (plain fine-tuning)", LAST_BLOCKS_TRAINS,
     "random context, no visual tokens", "grmp", LAST_BLOCKS, False, TEXT_ONLY),
    ("ft+qgr", "GRMP-IQA ablation: random init, last-blocks trainable set, QGR (lam 5)", LAST_BLOCKS_TRAINS,
     "random context, no visual tokens", "grmp", LAST_BLOCKS, True, TEXT_ONLY),
    ("meta+ft", "GRMP-IQA ablation: meta-learned prompts, last-blocks trainable set, no QGR", LAST_BLOCKS_TRAINS,
     "meta checkpoint (context + frozen visual prompts)", "grmp", LAST_BLOCKS, False, META),
    ("meta+ft+qgr", "the full GRMP-IQA method: meta-learned prompts, last-blocks trainable set, QGR (lam 5)",
     LAST_BLOCKS_TRAINS,
     "meta checkpoint (context + frozen visual prompts)", "grmp", LAST_BLOCKS, True, META),
    # beyond the paper: the QGR strength chosen per run from the labelled images (inner CV, descent guard on)
    ("ft+qgr-auto", "ft+qgr with the strength chosen per run from the labelled images (content-grouped inner CV "
     "over lam 0, 1, 2, 5, descent guard on; 12 extra training runs)", LAST_BLOCKS_TRAINS,
     "random context, no visual tokens", "grmp", LAST_BLOCKS, "auto", TEXT_ONLY),
    ("meta+ft+qgr-auto", "meta+ft+qgr with the strength chosen per run from the labelled images (content-grouped "
     "inner CV over lam 0, 1, 2, 5, descent guard on; 12 extra training runs)", LAST_BLOCKS_TRAINS,
     "meta checkpoint (context + frozen visual prompts)", "grmp", LAST_BLOCKS, "auto", META),
    # the QGR-on partners of the prompt-only arms (same recipe and prompts): the compare panel's other two pairs
    ("coop+qgr", "CoOp with QGR (lam 5): the QGR-on partner of coop", "text context", "N(0, 0.02)", "coop", "text",
     True, TEXT_ONLY),
    ("coop+vpt+qgr", "coop+vpt with QGR (lam 5): the QGR-on partner of coop+vpt", "text context + visual prompts",
     "N(0, 0.02); VPT uniform", "coop", "prompts", True, PromptConfig(visual_tokens=DEFAULT_VISUAL_TOKENS)),
)
for _name, _description, _trains, _init, _recipe, _trainable, _qgr, _prompts in ADAPTED_ARMS:
    register_method(_name, _description, adapts=True, trains=_trains, init=_init, recipe=_recipe,
                    trainable=_trainable)(adapted_arm(_name, _qgr, _prompts))


def arm_table_row(method: Method, config: MethodConfig | None = None) -> dict[str, str]:
    """What an arm trains, from where, with which recipe: one row of the README's arm table."""
    config = config or MethodConfig()
    recipe = arm_recipe(method, config)
    if recipe in RECIPES:
        source, budget = RECIPES[recipe].source, budget_text(arm_config(method, config))
    else:
        source, budget = recipe, "-"
    return {"arm": method.name, "trains": method.trains, "init": method.init, "recipe": recipe, "budget": budget,
            "recipe_source": source, "description": method.description}


DEFAULT_METHODS = ("zero-shot", "ridge-probe", "classical-ridge", "coop", "coop+vpt", "ft", "ft+qgr", "meta+ft",
                   "meta+ft+qgr")
"""The baselines beside the paper's 2x2 ablation ({random, meta} init x {without, with} QGR on its trainable set)."""
