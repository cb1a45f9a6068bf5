"""The model-randomisation sanity check of attribution maps (Adebayo et al. 2018, "Sanity checks for saliency maps").

An attribution map that explains what a model learned must change when the model's learned weights are
replaced by random ones. :func:`randomization_check` re-initialises the last visual blocks of a **deep copy** of
the model (the model passed in is never changed), attributes the same images with both, and measures the
Spearman rank correlation between the two absolute maps, per image:

* ``mode="cascading"`` (the paper's cascading randomisation): the last block, then the last two, ... down to the
  last ``blocks`` blocks, one step each;
* ``mode="independent"``: each of the last ``blocks`` blocks alone, the others trained.

A map that barely changes (rank correlation at or above ``threshold``) fails the check: it shows the input
(edges, textures) more than the model. The threshold is a convention of this toolkit (0.5 by default), not a
number from the paper; the table keeps every correlation so that another reading is possible.

Computing is separate from plotting (as in Captum): :func:`randomization_check` returns a :class:`SanityResult`
(``table``, ``summary`` with the pass/fail ``line``, the maps); :func:`clipiqa.explain.plots.plot_sanity_check`
draws it. ``randomized=`` compares with a model of your own instead (the model itself gives correlation 1: a
check that must fail).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from .attribution import TargetFn, FrozenCLIP, attribute, is_iqa_model, is_random_init, model_device
from .inputs import References, as_named, to_model_input
from .notes import note_for

MODES = ("cascading", "independent")
THRESHOLD = 0.5
"""Maps whose Spearman rank correlation with the trained model's reaches this value fail the check."""


@dataclass
class SanityResult:
    """:func:`randomization_check` output: one ``table`` row per image and randomisation step (``image, step,
    spearman, passed``), the ``summary`` (with ``passed`` and the ``line`` to print), and the maps."""
    table: pd.DataFrame
    summary: dict[str, Any]
    images: list[np.ndarray] = field(default_factory=list, repr=False)  # uint8 crops as the model sees them
    trained: Tensor | None = field(default=None, repr=False)  # |attribution| [N, H, W] of the model
    randomized: dict[str, Tensor] = field(default_factory=dict, repr=False)  # step -> |attribution| [N, H, W]

    @property
    def passed(self) -> bool:
        return bool(self.summary["passed"])

    @property
    def line(self) -> str:
        return str(self.summary["line"])


def randomization_check(model: nn.Module, images: References | Tensor, method: str = "ig", *, blocks: int = 2,
                        mode: str = "cascading", layers: Sequence[str] | None = None,
                        randomized: nn.Module | None = None, threshold: float = THRESHOLD, seed: int = 0,
                        target_fn: TargetFn | None = None, transform: Callable | None = None,
                        **attr_options: Any) -> SanityResult:
    """Attribute ``images`` with ``model`` and with copies whose last ``blocks`` visual blocks are re-initialised
    (``mode`` "cascading" or "independent"); the Spearman rank correlation of the absolute maps per image.

    images: raw images (a name -> image dict, a list, arrays or PIL; cropped like the model's preprocessing) or
        preprocessed ``[N, 3, H, W]``.
    layers: for a model that is not a clipiqa ``IQAModel``, the names of the submodules to re-initialise
        (``model.get_submodule(name)``), in the order of the cascade.
    randomized: compare with this model instead of re-initialised copies (one step, "given model").
    attr_options: the method's settings (``n_steps`` ...), as for :func:`~clipiqa.explain.attribute`.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed; use 'cascading' or 'independent'")
    names, x, crops = _inputs(model, images, transform)
    options = dict(target_fn=target_fn, absolute=True, **attr_options)
    trained = attribute(model, x, method, **options)
    steps = [("given model", randomized)] if randomized is not None else \
        _randomized(model, _targets(model, blocks, layers), mode, seed)
    rows, maps = [], {}
    for label, other in steps:  # a generator: each copy is attributed before the next step re-initialises more
        maps[label] = attribute(other, x, method, **options)
        rows += [{"image": name, "step": label, "spearman": rank_correlation(trained[i], maps[label][i])}
                 for i, name in enumerate(names)]
    table = pd.DataFrame(rows, columns=["image", "step", "spearman"])
    table["passed"] = table["spearman"] < threshold  # NaN (a constant map) fails
    note = note_for(is_random_init(model), model)
    table["note"] = note
    summary = _summary(table, method, mode if randomized is None else "given model", threshold, note)
    return SanityResult(table, summary, crops, trained, maps)


def rank_correlation(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either is constant."""
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64).ravel()
    b = np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of different sizes: {a.size} and {b.size} pixels")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b)[0])


def _inputs(model: nn.Module, images: References | Tensor, transform: Callable | None
            ) -> tuple[list[str], Tensor, list[np.ndarray]]:
    if isinstance(images, Tensor):
        return [f"image{i}" for i in range(images.shape[0])], images, []
    named = as_named(images)
    pairs = [to_model_input(model, im, transform) for im in named.values()]
    return list(named), torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def _core(model: nn.Module) -> nn.Module:
    return model.inner if isinstance(model, FrozenCLIP) else model


def _targets(model: nn.Module, blocks: int, layers: Sequence[str] | None) -> list[tuple[str, Callable]]:
    """``(label, module getter)`` from the last block down; getters read the module *of a copy*."""
    if layers is not None:
        if not layers:
            raise ValueError("layers=[] names nothing to re-initialise; give submodule names or leave it None")
        return [(name, lambda m, n=name: _core(m).get_submodule(n)) for name in layers]
    if not is_iqa_model(_core(model)):
        raise TypeError(f"{type(_core(model)).__name__} is not a clipiqa IQAModel: name the submodules to "
                        "re-initialise with layers=[...] (e.g. layers=['head'])")
    n = _core(model).n_visual_layers
    if not 1 <= blocks <= n:
        raise ValueError(f"blocks={blocks} is not allowed; this model has {n} visual blocks (use 1..{n})")
    return [(f"visual block {i}", lambda m, i=i: _visual_block_in_use(m, i)) for i in range(n - 1, n - 1 - blocks, -1)]


def _visual_block_in_use(model: nn.Module, index: int) -> nn.Module:
    """The block ``index`` that ``model`` runs: a tuned copy when an adapted model has one, the frozen block
    for a zero-shot view."""
    core = _core(model)
    if isinstance(model, FrozenCLIP):
        with core.adapters_off():
            return core._visual_block(index)
    return core._visual_block(index)


def _randomized(model: nn.Module, targets: list[tuple[str, Callable]], mode: str, seed: int
                ) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(step label, copy)``: cascading re-initialises one more target per step on one copy; independent
    re-initialises one target at a time and restores it before the next."""
    clone = copy.deepcopy(model)
    done = []
    for k, (label, get) in enumerate(targets):
        module = get(clone)
        saved = {n: t.detach().clone() for n, t in module.state_dict().items()} if mode == "independent" else None
        _reinitialise(module, seed + k)
        done.append(label)
        yield (_step_label(done, mode), clone)
        if saved is not None:
            module.load_state_dict(saved)
            done.clear()


def _step_label(done: list[str], mode: str) -> str:
    """"visual block 11 re-initialised", "visual blocks 10-11 re-initialised", "fc + head re-initialised"."""
    if mode == "independent" or len(done) == 1:
        return f"{done[-1]} re-initialised"
    prefix = "visual block "
    if all(d.startswith(prefix) for d in done):
        return f"visual blocks {done[-1][len(prefix):]}-{done[0][len(prefix):]} re-initialised"
    return f"{' + '.join(reversed(done))} re-initialised"


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Reset every parameter of ``module`` with its layers' own initialisation (``reset_parameters``), seeded;
    the global random state is left as it was."""
    before = [p.detach().clone() for p in module.parameters()]
    device = model_device(module)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None) or getattr(sub, "_reset_parameters", None)
            if callable(reset):
                reset()
    if all(torch.equal(a, b) for a, b in zip(before, module.parameters())):
        raise ValueError(f"re-initialising {type(module).__name__} changed none of its parameters (no layer in it "
                         "has reset_parameters); name other layers")


def _summary(table: pd.DataFrame, method: str, mode: str, threshold: float, note: str) -> dict[str, Any]:
    rho = table["spearman"]
    n, n_pass = len(table), int(table["passed"].sum())
    passed = n > 0 and n_pass == n
    numbers = (f"Spearman rank correlation with the trained model's maps: median {rho.median():.2f}, "
               f"max {rho.max():.2f}; below {threshold:g} for {n_pass} of {n} maps")
    what = f"Randomisation sanity check ({method}, {mode}, {table['step'].nunique()} step(s))"
    change = "in the given model" if mode == "given model" else "when the layers are re-initialised"
    if passed:
        line = f"{what}: passes - the attributions change {change} ({numbers})"
    else:
        line = (f"{what}: fails the sanity check - {n - n_pass} of {n} maps stay alike {change} ({numbers}): "
                "such maps show the image more than what the model learned")
    if note:
        from .reading import short_caveat
        line += f" [{short_caveat(note)}]"
    return {"n_maps": n, "n_passed": n_pass, "passed": passed, "spearman_median": float(rho.median()),
            "spearman_max": float(rho.max()), "threshold": threshold, "method": method, "mode": mode,
            "note": note, "line": line}


__all__ = ["SanityResult", "randomization_check", "rank_correlation", "MODES", "THRESHOLD"]
