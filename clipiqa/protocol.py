"""The evaluation protocol (DESIGN 2.6): every method on the same seeded splits and the same few-shot draws.

``run_protocol(dataset, methods, shots, n_splits)`` reads top to bottom:

1. ``n_splits`` seeded 80/20 splits (by reference content for synthetic datasets, by image otherwise);
2. per split, one draw of N labelled images from the 80 % side, shared by every method;
3. per split and method: predictions for the 20 % side, then SRCC, KRCC, PLCC (raw and after the 4-parameter
   logistic), RMSE, the chance band for the test size and a bootstrap CI of SRCC; a failing method is recorded
   (``status``/``error``) and the run goes on;
4. a summary per method (mean, median, std over splits), notes that say what the numbers can and cannot show,
   and optionally ``per_split.csv``, ``summary.csv``, ``summary.json`` and ``summary.png`` in ``out_dir``.

A method is a function ``(model_factory, train_table, test_table, config, seed) -> predictions`` (or
``(predictions, extras)`` where ``extras`` is a dict of per-split columns). ``model_factory()`` returns a fresh
:class:`~clipiqa.model.IQAModel`; ``model_factory(prompts=PromptConfig | checkpoint)`` one with those prompts.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import baselines
from .finetune import OPTIMISTIC_NOTE, SELECTION_MODES, AdaptConfig, adapt, with_qgr
from .csvio import write_csv
from .data.splits import few_shot, split_hash, standard_splits
from .data.transforms import eval_transform
from .imageio import load_image
from .inference import predict_features, predict_pil
from .metrics import LogisticFitWarning, bootstrap_ci, chance_band, correlations, summarize
from .prompts import DEFAULT_VISUAL_TOKENS, PromptConfig
from .recipes import OPTIMISTIC_RECIPE_NOTE, RECIPES, budget_text

__all__ = [
    "DEFAULT_METHODS", "METHODS", "METRICS", "Method", "MethodConfig", "MethodSkipped", "NOTE_RANDOM_INIT",
    "NOTE_SYNTHETIC_LABELS", "ProtocolCache", "ProtocolResult", "register_method", "run_protocol",
]

NOTE_RANDOM_INIT = "random-init weights: numbers show the pipeline runs, not that a method works"
NOTE_SYNTHETIC_LABELS = "synthetic severity labels, not human MOS"
NOTE_AUTO_META = ("meta auto: a quick, smoke-scale meta pre-training per split on synthetic distortions of bundled "
                  "photos that are not among the split's test contents, with distortion types not in the test split "
                  "where possible; it hands over the last parameters of that run (no held-out selection at this size)")
METRICS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic")
DEFAULT_METHODS = ("zero-shot", "ridge-probe", "classical-ridge", "coop", "coop+vpt", "ft", "ft+qgr", "meta+ft",
                   "meta+ft+qgr")
"""The baselines beside the paper's 2x2 ablation ({random, meta} init x {without, with} QGR on its trainable set)."""

ModelFactory = Callable[..., Any]


class MethodSkipped(Exception):
    """A method cannot run in this setting (e.g. no meta checkpoint); the reason is reported, not an error."""


# --------------------------------------------------------------------------------------------- shared state
class ProtocolCache:
    """What methods share within one run: the frozen model, decoded images, frozen CLIP features, classical
    statistics and auto meta checkpoints. Frozen quantities depend only on the image, so every split reuses them.

    ``image_budget_bytes`` bounds the decoded images kept in memory (RGB bytes); beyond it images are re-read.
    """

    def __init__(self, image_budget_bytes: int = 1_500_000_000):
        self.image_budget_bytes = image_budget_bytes
        self._images: dict[str, Any] = {}
        self._image_bytes = 0
        self._frozen = None
        self._features: dict[str, np.ndarray] = {}
        self._classical: dict[str, dict] = {}
        self.meta_checkpoints: dict[tuple, Path | Exception] = {}
        self.workdir: Path | None = None

    def images(self, paths: Sequence[str]) -> list:
        """Decoded RGB PIL images, kept while the memory budget allows."""
        out = []
        for path in paths:
            image = self._images.get(path)
            if image is None:
                image = load_image(path)
                size = image.width * image.height * 3
                if self._image_bytes + size <= self.image_budget_bytes:
                    self._images[path] = image
                    self._image_bytes += size
            out.append(image)
        return out

    def frozen_model(self, model_factory: ModelFactory):
        """One model for the frozen methods (used with adapters off only)."""
        if self._frozen is None:
            self._frozen = model_factory()
        return self._frozen

    def clip_features(self, model_factory: ModelFactory, paths: Sequence[str], batch_size: int) -> np.ndarray:
        """Frozen, normalised CLIP features of ``paths`` (computed once per image)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._features]
        if todo:
            feats = baselines.clip_features(self.frozen_model(model_factory), todo, batch_size,
                                            images=self.images(todo))
            self._features.update(zip(todo, feats))
        return np.stack([self._features[p] for p in paths])

    def classical(self, paths: Sequence[str]) -> pd.DataFrame:
        """Classical statistics of ``paths`` (computed once per image)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._classical]
        if todo:
            table = baselines.classical_table(todo, images=self.images(todo))
            self._classical.update((r["path"], r) for r in table.to_dict("records"))
        return pd.DataFrame([self._classical[p] for p in paths])


@dataclass
class MethodConfig:
    """Settings every method receives.

    overrides: ``AdaptConfig`` fields applied on top of every adapted arm's recipe (e.g. a smaller smoke budget
        ``{"epochs": 2}``); recorded in each row's ``recipe`` column.
    recipe: a recipe that replaces the paper-trainable-set arms' own (``"grmp-released"`` for comparison with the
        paper; optimistic), or None.
    selection: the model-selection mode of every adapted arm (None = the recipe's).
    meta_init: a meta checkpoint (``DIR/best``), ``"auto"`` (quick meta pre-training on synthetic tasks from
        bundled photos not in the test split; needs ``clipiqa.meta``), or None (meta methods are skipped).
    batch_size: images per forward pass when scoring or extracting features.
    ridge_alpha: a fixed ridge penalty, or None for leave-one-out selection over a log grid.
    cache: shared state (filled by :func:`run_protocol`).
    """

    overrides: Mapping[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    selection: str | None = None
    meta_init: str | os.PathLike | None = None
    batch_size: int = 32
    ridge_alpha: float | None = None
    cache: ProtocolCache = field(default_factory=ProtocolCache)


MethodFn = Callable[[ModelFactory, pd.DataFrame, pd.DataFrame, MethodConfig, int], Any]


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


METHODS: dict[str, Method] = {}


def register_method(name: str, description: str, adapts: bool = False, *, trains: str = "nothing",
                    init: str = "-", recipe: str = "none", trainable: str | None = None
                    ) -> Callable[[MethodFn], MethodFn]:
    """Add an arm to :data:`METHODS` (usable by name in :func:`run_protocol` and ``clipiqa bench``).

    Adapted arms (``adapts=True``) name their ``recipe`` (a key of :data:`clipiqa.recipes.RECIPES`) and their
    ``trainable`` set (``text``, ``prompts``, ``paper``)."""
    if adapts and (recipe not in RECIPES or trainable is None):
        raise ValueError(f"method {name!r}: an adapted arm needs a known recipe ({', '.join(RECIPES)}; got "
                         f"{recipe!r}) and a trainable set (got {trainable!r})")

    def wrap(fn: MethodFn) -> MethodFn:
        METHODS[name] = Method(name, fn, description, adapts, trains, init, recipe, trainable)
        return fn
    return wrap


# --------------------------------------------------------------------------------------------- frozen methods
@register_method("zero-shot", "frozen CLIP with antonym prompts (CLIP-IQA style); no training")
def zero_shot(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame, config: MethodConfig,
              seed: int) -> np.ndarray:
    """Logit margins of the antonym prompts from the frozen model (from cached frozen features, through
    :func:`clipiqa.inference.predict_features`), with p_high as ``extras["scores"]`` for raw PLCC/RMSE."""
    model = config.cache.frozen_model(model_factory)
    feats = config.cache.clip_features(model_factory, list(test["path"]), config.batch_size)
    with torch.no_grad(), model.adapters_off():
        pred = predict_features(model, torch.as_tensor(feats, device=model.device)).cpu()
    return pred.margin.numpy(), {"scores": pred.score.numpy()}


@register_method("ridge-probe", "ridge regression on frozen CLIP image features (linear probe)",
                 trains="ridge on frozen CLIP image features", recipe="closed form, leave-one-out alpha")
def ridge_probe(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame, config: MethodConfig,
                seed: int) -> np.ndarray:
    cache = config.cache
    x_train = cache.clip_features(model_factory, list(train["path"]), config.batch_size)
    x_test = cache.clip_features(model_factory, list(test["path"]), config.batch_size)
    return baselines.ridge_probe(x_train, train["q"].to_numpy(float), x_test, alpha=config.ridge_alpha)


@register_method("classical-ridge", "CLIP-free check: ridge on classical statistics (sharpness, noise, contrast, "
                                    "colourfulness, blockiness, exposure)",
                 trains="ridge on classical image statistics", recipe="closed form, leave-one-out alpha")
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
    ``(margins, scores)``. ``variant`` (``model``/``paper``) overrides the model's transform spec; leave it None."""
    transform = eval_transform(model, variant) if variant is not None else model.preprocess
    images = config.cache.images(list(table["path"]))
    pred = predict_pil(model, images, batch_size=config.batch_size, transform=transform)
    margins, scores = pred.margin.numpy(), pred.score.numpy()
    return (margins, scores) if with_scores else margins


def arm_recipe(method: Method, config: MethodConfig) -> str:
    """The recipe an arm trains with: the run's ``recipe`` for arms on the paper's trainable set, else its own."""
    return config.recipe if config.recipe and method.trainable == "paper" else method.recipe


def arm_config(method: Method, config: MethodConfig, seed: int = 0, qgr: bool = False) -> AdaptConfig:
    """The ``AdaptConfig`` an adapted arm trains with: its recipe, then the run's overrides (e.g. a smoke budget),
    the run's selection mode, the arm's trainable set, QGR on/off and the split's seed."""
    settings = {**RECIPES[arm_recipe(method, config)].settings, **config.overrides,
                "trainable": method.trainable, "seed": int(seed)}
    if config.selection is not None:
        settings["selection"] = config.selection
    return with_qgr(AdaptConfig(**settings), qgr)


def adapt_and_predict(model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame,
                      config: MethodConfig, seed: int, *, method: str, qgr: bool,
                      prompts: PromptConfig | str | os.PathLike | None = None) -> tuple[np.ndarray, dict]:
    """Fresh model (with ``prompts``), few-shot adaptation on ``train`` with the arm's recipe, predictions for
    ``test``. The extras say what was trained, for how many steps, and whether a selection actually ran."""
    model = model_factory() if prompts is None else model_factory(prompts=prompts)
    arm = METHODS[method]
    cfg = arm_config(arm, config, seed, qgr)
    oracle = cfg.selection == "test-oracle"
    history = adapt(model, train, cfg, test=test if oracle else None,
                    images=config.cache.images(list(train["path"])))
    preds, scores = predict_table(model, test, config, with_scores=True)
    steps = history.steps_frame()
    extras = {"recipe": arm_recipe(arm, config) + _override_text(config.overrides),
              "selected_epoch": history.selected_epoch, "train_steps": len(steps),
              "final_loss": float(steps["loss"].iloc[-1]) if len(steps) else float("nan"),
              "qgr_lam": float(cfg.qgr.lam) if cfg.qgr.active else 0.0, "trainable": arm.trainable,
              "n_trainable_params": history_param_count(model), "selection_note": history.note, "scores": scores,
              "history": history}
    return preds, extras


def _override_text(overrides: Mapping[str, Any]) -> str:
    return f" [{', '.join(f'{k}={v}' for k, v in sorted(overrides.items()))}]" if overrides else ""


def history_param_count(model) -> int:
    """Number of trainable scalars (what an arm actually trained)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


TEXT_ONLY = PromptConfig(visual_tokens=0)
"""Prompts with the text context only: CoOp, and the paper's trainable set without a meta checkpoint (random
frozen visual tokens would corrupt CLIP's features: DESIGN 2.1)."""
META = "meta checkpoint"
PAPER_SET = "text context + last 4 blocks of both towers + final norms"


def adapted_arm(name: str, qgr: bool, prompts: PromptConfig | str) -> MethodFn:
    """The function of an adapted arm: a fresh model with ``prompts`` (or the meta checkpoint when ``prompts`` is
    :data:`META`), adapted with the arm's recipe, predicting the test split."""
    def run(model_factory, train, test, config, seed):
        if prompts != META:
            return adapt_and_predict(model_factory, train, test, config, seed, method=name, qgr=qgr, prompts=prompts)
        init = meta_checkpoint(model_factory, train, test, config, seed)
        preds, extras = adapt_and_predict(model_factory, train, test, config, seed, method=name, qgr=qgr,
                                          prompts=init)
        return preds, {**extras, **_meta_extras(init)}
    run.__name__ = run.__qualname__ = name.replace("+", "_").replace("-", "_")
    return run


ADAPTED_ARMS = (
    # name, description, trains, init, recipe, trainable set, QGR, prompts
    ("coop", "CoOp: learnable text context only (4 vectors), frozen CLIP", "text context", "N(0, 0.02)",
     "coop", "text", False, TEXT_ONLY),
    ("coop+vpt", "CoOp + VPT-deep: text context and 100 visual prompt tokens per block, frozen CLIP",
     "text context + visual prompts", "N(0, 0.02); VPT uniform", "coop", "prompts", False,
     PromptConfig(visual_tokens=DEFAULT_VISUAL_TOKENS)),
    ("ft", "GRMP-IQA ablation: random init, paper trainable set, no QGR (plain fine-tuning)", PAPER_SET,
     "random context, no visual tokens", "grmp", "paper", False, TEXT_ONLY),
    ("ft+qgr", "GRMP-IQA ablation: random init, paper trainable set, QGR (lam 5)", PAPER_SET,
     "random context, no visual tokens", "grmp", "paper", True, TEXT_ONLY),
    ("meta+ft", "GRMP-IQA ablation: meta-learned prompts, paper trainable set, no QGR", PAPER_SET,
     "meta checkpoint (context + frozen visual prompts)", "grmp", "paper", False, META),
    ("meta+ft+qgr", "the full GRMP-IQA method: meta-learned prompts, paper trainable set, QGR (lam 5)", PAPER_SET,
     "meta checkpoint (context + frozen visual prompts)", "grmp", "paper", True, META),
)
for _name, _description, _trains, _init, _recipe, _trainable, _qgr, _prompts in ADAPTED_ARMS:
    register_method(_name, _description, adapts=True, trains=_trains, init=_init, recipe=_recipe,
                    trainable=_trainable)(adapted_arm(_name, _qgr, _prompts))


# --------------------------------------------------------------------------------------------- meta init
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


def _meta_extras(init: Path) -> dict:
    """Per-split columns that say which meta init was used and which of its epochs was selected."""
    extras: dict[str, Any] = {"meta_init": str(init)}
    try:
        from .checkpoint import read_checkpoint
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
    try:
        from . import meta as meta_module
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.meta":
            raise
        raise MethodSkipped("meta_init='auto' needs clipiqa.meta (meta pre-training), which this checkout does "
                            "not have; pass a meta checkpoint instead") from None
    missing = [n for n in ("meta_pretrain", "synthetic_tasks", "MetaConfig") if not hasattr(meta_module, n)]
    if missing:
        raise MethodSkipped(f"meta_init='auto' needs clipiqa.meta.{', '.join(missing)}, which this version does "
                            "not provide; pass a meta checkpoint instead")
    from .data.demo import demo_references
    model = model_factory(prompts=PromptConfig())
    size = model.source.preprocess_cfg["size"]  # the model's input side: distortions made at 224 px vanish when
    size = int(size if isinstance(size, int) else size[0])  # a 64-px model (lesson) shrinks them
    references = {k: v for k, v in demo_references(size=size).items() if k not in set(exclude)}
    if len(references) < 2:
        raise MethodSkipped("meta_init='auto': fewer than 2 bundled photos are left outside the test contents")
    types = [t for t in AUTO_META_TYPES if t not in test_types][:AUTO_META_N_TYPES]
    if len(types) < 2:
        types = list(AUTO_META_TYPES[:AUTO_META_N_TYPES])
    tasks = meta_module.synthetic_tasks(references, types=types, levels=(1, 3, 5), size=size, seed=seed)
    settings = {**AUTO_META_SETTINGS, "augment": config.overrides.get("augment", "model"), "seed": int(seed)}
    workdir = config.cache.workdir or Path(tempfile.mkdtemp(prefix="clipiqa-meta-"))
    out = workdir / "meta-auto" / f"split-{split_tag(list(exclude) + types)}"
    meta_module.meta_pretrain(model, tasks, meta_module.MetaConfig(**settings), out_dir=out, resume=False)
    return out / "last"


def split_tag(names: Sequence[str]) -> str:
    """A short stable tag for a set of names."""
    import hashlib
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------- the run
@dataclass
class ProtocolResult:
    """Per-split rows, the per-method summary, the run's configuration and the notes that go with the numbers.

    ``splits`` (:class:`~clipiqa.data.splits.Split`) and ``labelled`` (the few-shot draws) are what every method
    saw, split by split; ``histories`` what every adapted arm's training did."""

    per_split: pd.DataFrame
    summary: pd.DataFrame
    config: dict
    notes: list[str]
    random_init: bool
    dataset: dict
    out_dir: Path | None = None
    splits: list = field(default_factory=list, repr=False)
    stopped: bool = False
    histories: dict = field(default_factory=dict, repr=False)
    """``{(split index, arm): History}`` of every adapted arm (losses, gradient cosines, selection)."""
    labelled: list = field(default_factory=list, repr=False)

    def to_text(self) -> str:
        """The summary as a fixed-width table followed by the notes (what ``clipiqa bench`` prints)."""
        return format_summary(self.summary, self.notes)

    def plot(self):
        """A matplotlib Figure: SRCC per split and method, mean with std, the chance band shaded."""
        return plot_summary(self.per_split, self.summary, self.notes)

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``per_split.csv``, ``summary.csv``, ``summary.json`` and ``summary.png``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in ("per_split.csv", "summary.csv", "summary.json", "summary.png")}
        write_csv(self.per_split, paths["per_split.csv"])
        write_csv(self.summary, paths["summary.csv"])
        payload = {"config": self.config, "dataset": self.dataset, "notes": self.notes,
                   "random_init": self.random_init, "versions": _versions(),
                   "summary": self.summary.to_dict("records")}
        paths["summary.json"].write_text(json.dumps(_jsonable(payload), indent=2))
        fig = self.plot()
        fig.savefig(paths["summary.png"], dpi=110, bbox_inches="tight")
        self.out_dir = out
        return paths


def run_protocol(dataset: pd.DataFrame, methods: Sequence[str] = DEFAULT_METHODS, shots: int | float = 50,
                 n_splits: int = 10, seed: int = 0, model_factory: ModelFactory | None = None,
                 overrides: Mapping[str, Any] | None = None, recipe: str | None = None,
                 selection: str | None = None, meta_init: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, on_progress: Callable[[dict], None] | None = None,
                 batch_size: int = 32, ridge_alpha: float | None = None, n_boot: int = 1000,
                 stop: Callable[[], bool] | None = None) -> ProtocolResult:
    """Run ``methods`` on ``n_splits`` seeded splits of ``dataset`` with ``shots`` labelled images each.

    dataset: the common table (``path``, ``q`` in [0, 1] higher = better, ``content_id``); rows that share a
        ``content_id`` stay on one side of every split.
    shots: an int count or a float fraction of the 80 % pool, drawn from the 80 % side only.
    model_factory: ``() -> IQAModel`` and ``(prompts=...) -> IQAModel``; default ``load_model("vitb16-openai")``.
    overrides: ``AdaptConfig`` fields applied on top of every adapted arm's own recipe (e.g. ``{"epochs": 2}``
        for a smoke run); each row's ``recipe`` column records them.
    recipe: replaces the recipe of the arms on the paper's trainable set, e.g. ``"grmp-released"`` (optimistic).
    selection: model selection of every adapted arm (``fixed``, ``val``, ``test-oracle``); None = each recipe's.
        ``test-oracle`` is labelled optimistic everywhere.
    meta_init: see :class:`MethodConfig`.
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
    if selection is not None and selection not in SELECTION_MODES:
        raise ValueError(f"selection={selection!r} is not allowed; use one of {', '.join(SELECTION_MODES)} "
                         "(or None for each recipe's own)")
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is not allowed; use one of {', '.join(RECIPES)} (or None)")
    overrides = dict(overrides or {})
    AdaptConfig(**overrides)  # fail early, naming the field, on a bad override
    if model_factory is None:
        from .model import load_model
        model_factory = partial(load_model, "vitb16-openai")
    splits = standard_splits(dataset, n_splits=n_splits, seed=seed)
    draws = [few_shot(split.train, shots, split.seed) for split in splits]  # fails early if shots > pool
    config = MethodConfig(overrides=overrides, recipe=recipe, selection=selection, meta_init=meta_init,
                          batch_size=batch_size, ridge_alpha=ridge_alpha)
    frozen = config.cache.frozen_model(model_factory)
    arm_selection = {m: arm_config(METHODS[m], config).selection if METHODS[m].adapts else "n/a" for m in methods}
    notes = _notes(dataset, frozen, arm_selection, meta_init, methods, recipe)
    row_notes = {m: _row_note(notes, arm_selection[m]) for m in methods}

    stopped, histories = False, {}
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
            notes=notes, random_init=frozen.random_init, dataset=_dataset_info(dataset, splits),
            config={"methods": list(methods), "shots": shots, "n_splits": n_splits, "seed": seed,
                    "selection": selection, "recipe": recipe, "overrides": overrides,
                    "meta_init": None if meta_init is None else str(meta_init), "batch_size": batch_size,
                    "ridge_alpha": ridge_alpha, "n_boot": n_boot, "model": frozen.source.card(),
                    "arms": {m: arm_table_row(METHODS[m], config) for m in methods}},
            splits=splits, labelled=draws, stopped=stopped, histories=histories)
        if out_dir is not None:
            result.save(out_dir)
    return result


def complete_splits(per_split: pd.DataFrame, methods: Sequence[str]) -> list[int]:
    """Splits on which every method has a row (a stopped run's last split may be partial)."""
    if per_split.empty:
        return []
    counts = per_split.groupby("split")["method"].apply(lambda m: set(m) >= set(methods))
    return [int(s) for s, ok in counts.items() if ok]


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


def _check_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    return tuple(dict.fromkeys(methods))


def _run_one(method: Method, model_factory: ModelFactory, train: pd.DataFrame, test: pd.DataFrame,
             config: MethodConfig, seed: int, n_boot: int) -> dict:
    """One method on one split: predictions, metrics and uncertainty, or the reason it did not run."""
    row: dict[str, Any] = {"method": method.name, "status": "ok", "error": ""}
    t0 = time.perf_counter()
    try:
        output = method.fn(model_factory, train, test, config, seed)
        preds, extras = output if isinstance(output, tuple) else (output, {})
        extras = dict(extras)
        preds = np.asarray(preds, dtype=np.float64).reshape(-1)
        scores = extras.pop("scores", None)
        row["history"] = extras.pop("history", None)  # taken out by run_protocol (ProtocolResult.histories)
        if len(preds) != len(test):
            raise ValueError(f"method returned {len(preds)} predictions for {len(test)} test images")
        row.update(score_predictions(preds, test["q"].to_numpy(float), n_boot, seed, scores=scores))
        row.update(extras)
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


def summarize_methods(per_split: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per method: mean, median and std over the splits that ran of each metric, plus counts, the mean
    chance band and seconds, and the first skip or error reason."""
    methods = list(methods) if methods is not None else list(dict.fromkeys(per_split["method"]))
    rows = []
    for method in methods:
        part = per_split[per_split["method"] == method]
        ok = part[part["status"] == "ok"]
        row: dict[str, Any] = {"method": method, "n_ok": len(ok), "n_skipped": int((part["status"] == "skipped").sum()),
                               "n_error": int((part["status"] == "error").sum())}
        for metric in METRICS:
            values = ok[metric].to_numpy(float)
            stats = summarize(values)
            row.update({f"{metric}_{k}": stats[k] for k in ("mean", "median", "std")})
            row[f"{metric}_splits"] = int(np.isfinite(values).sum())  # splits on which the metric is defined
        row["chance_band"] = float(ok["chance_band"].mean()) if len(ok) else float(part["chance_band"].mean())
        row["n_test_mean"] = float(part["n_test"].mean())
        row["seconds_mean"] = float(part["seconds"].mean())
        reasons = part.loc[part["status"] != "ok", "error"]
        row["reason"] = str(reasons.iloc[0]) if len(reasons) else ""
        row["selection"] = part["selection"].iloc[0] if len(part) else ""
        row["recipe"] = str(part["recipe"].iloc[0]) if len(part) else ""
        notes = [n for n in part.get("selection_note", pd.Series(dtype=str)).dropna().astype(str) if n]
        row["selection_note"] = notes[0] if notes else ""
        row["note"] = part["note"].iloc[0] if len(part) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _notes(dataset: pd.DataFrame, frozen, arm_selection: Mapping[str, str], meta_init, methods: Sequence[str],
           recipe: str | None) -> list[str]:
    notes = []
    if frozen.random_init:
        notes.append(NOTE_RANDOM_INIT)
    if _synthetic_labels(dataset):
        notes.append(NOTE_SYNTHETIC_LABELS)
    if any(s == "test-oracle" for s in arm_selection.values()):
        notes.append(OPTIMISTIC_NOTE)
    if recipe is not None and RECIPES[recipe].optimistic:
        notes.append(OPTIMISTIC_RECIPE_NOTE)
    if meta_init is not None and str(meta_init) == "auto" and any(m.startswith("meta") for m in methods):
        notes.append(NOTE_AUTO_META)
    if "zero-shot" in methods:
        notes.append(zero_shot_configuration(frozen))
    notes.append("uncertainty: |SRCC| below the chance band (95 %, about 1.96/sqrt(n_test - 1)) is indistinguishable "
                 "from a random predictor; srcc_ci_lo/hi are per-split bootstrap CIs")
    return notes


def zero_shot_configuration(model) -> str:
    """What the zero-shot arm is, so nobody compares it with numbers made another way."""
    cfg = model.source.preprocess_cfg
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    good, bad = model.prompt_config.antonyms
    backbone = f"{model.source.preset} (toy model trained on synthetic distortions)" if model.source.toy \
        else model.source.arch  # the lesson preset's arch only names open_clip's factory and tokenizer
    return (f"zero-shot: frozen {backbone} with the antonym prompts {good!r}/{bad!r}, one {size}-px "
            f"{cfg.get('resize_mode', 'shortest')}-resize centre crop, positional embedding on; CLIP-IQA's published "
            "zero-shot SRCC (KonIQ 0.66-0.70, LIVEC 0.61-0.70) come from RN50 at full resolution and are not "
            "directly comparable")


def _row_note(notes: list[str], selection: str) -> str:
    keep = [n for n in notes if n in (NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS)]
    if selection == "test-oracle":
        keep.append(OPTIMISTIC_NOTE)
    return "; ".join(keep)


def _synthetic_labels(dataset: pd.DataFrame) -> bool:
    kind = str(dataset.attrs.get("label_kind", "")).lower()
    return kind.startswith("synthetic") or dataset.attrs.get("dataset") == "demo"


def _dataset_info(dataset: pd.DataFrame, splits) -> dict:
    attrs = dataset.attrs
    return {"name": attrs.get("dataset", "custom"), "n_images": len(dataset),
            "n_contents": int(dataset["content_id"].nunique()) if "content_id" in dataset else None,
            "split_by": splits[0].by if splits else None, "label_kind": attrs.get("label_kind", "MOS"),
            "score_range": attrs.get("score_range"), "higher_better": attrs.get("higher_better"),
            "root": attrs.get("root") or attrs.get("cache_dir"),
            "split_hashes": [s.hash for s in splits]}


def _versions() -> dict:
    from .checkpoint import library_versions
    versions = library_versions()
    for name in ("numpy", "pandas", "scipy", "sklearn"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


def _jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf -> null, numpy scalars -> Python, tuples -> lists, anything else -> str."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


# --------------------------------------------------------------------------------------------- reporting
def format_summary(summary: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """Fixed-width text: per method SRCC mean +- std (median), KRCC, PLCC raw/logistic, RMSE, chance band, the
    splits that ran, seconds per split and the recipe; below a row, what limits its numbers."""
    w = max([12, *(len(str(m)) for m in summary.get("method", []))])  # the longest method name sets the column
    header = (f"{'method':<{w}} {'SRCC mean±std':>15} {'median':>7} {'KRCC':>6} {'PLCC':>6} {'PLCC-l4':>7} "
              f"{'RMSE':>6} {'chance±':>7} {'ok':>5} {'s/split':>8}  recipe")
    lines = [header, "-" * len(header)]
    for r in summary.to_dict("records"):
        n = r["n_ok"] + r["n_skipped"] + r["n_error"]
        recipe = r.get("recipe") or ""
        if r["n_ok"] == 0:
            status = "skipped" if r["n_skipped"] else "failed"
            lines.append(f"{r['method']:<{w}} {status}: {r['reason']}")
            continue
        lines.append(f"{r['method']:<{w}} {_f(r['srcc_mean']):>7}±{_f(r['srcc_std']):<7} {_f(r['srcc_median']):>7} "
                     f"{_f(r['krcc_mean']):>6} {_f(r['plcc_mean']):>6} {_f(r['plcc_logistic_mean']):>7} "
                     f"{_f(r['rmse_mean']):>6} {_f(r['chance_band']):>7} {r['n_ok']:>2}/{n:<2} "
                     f"{r['seconds_mean']:>8.1f}  {recipe}")
        undefined = [m for m in METRICS if r.get(f"{m}_splits", r["n_ok"]) < r["n_ok"]]
        if undefined:
            lines.append(f"{'':<{w}} defined on fewer splits: " + ", ".join(
                f"{m} {r[f'{m}_splits']}/{r['n_ok']}" for m in undefined))
        if r.get("selection_note"):
            lines.append(f"{'':<{w}} {r['selection_note']}")
        if r["n_error"]:
            lines.append(f"{'':<{w}} {r['n_error']} split(s) failed: {r['reason']}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _f(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3f}"


def plot_summary(per_split: pd.DataFrame, summary: pd.DataFrame, notes: Sequence[str] = ()):
    """SRCC per method: one dot per split, the mean with a std bar, the chance band shaded around 0.

    Uses a bare ``matplotlib.figure.Figure`` (no pyplot state, no backend change)."""
    import seaborn as sns
    from matplotlib.figure import Figure

    order = list(summary["method"])
    labels = [m if n else f"{m}\n(skipped)" for m, n in zip(order, summary["n_ok"])]
    fig = Figure(figsize=(max(6.0, 1.1 * len(order) + 2), 4.2))
    ax = fig.add_subplot()
    ok = per_split[per_split["status"] == "ok"]
    band = float(np.nanmean(summary["chance_band"])) if len(summary) else float("nan")
    if math.isfinite(band):
        ax.axhspan(-band, band, color="grey", alpha=0.2, label=f"chance band (95 %, ±{band:.2f})")
    ax.axhline(0.0, color="grey", lw=0.8)
    if len(ok):
        sns.stripplot(data=ok, x="method", y="srcc", order=order, ax=ax, color="tab:blue", alpha=0.6, size=5,
                      jitter=0.15)
    x = np.arange(len(order))
    ax.errorbar(x, summary["srcc_mean"], yerr=summary["srcc_std"].fillna(0), fmt="D", color="black", capsize=4,
                label="mean ± std over splits")
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("SRCC on the held-out split")
    ax.set_xlabel("")
    warn = [n for n in notes if n in (NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS) or n == OPTIMISTIC_NOTE]
    ax.set_title("\n".join(["SRCC per method and split"] + warn), fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
