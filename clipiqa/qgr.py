r"""Quality-Aware Gradient Regularization (QGR) (docs/design.md, 'Quality-aware gradient regularization (QGR)').

Each training step has two gradients over the trainable tensors: ``g_q`` of the quality loss and ``g_s`` of the
semantic (scene-distillation) loss. QGR replaces ``g_q`` by

.. math::

    g = \begin{cases}
        g_q - \lambda \, \dfrac{\langle g_q, g_s \rangle}{\lVert g_s \rVert^2} \, g_s
            & \text{if the condition holds} \\
        g_q & \text{otherwise}
    \end{cases}

where the condition is ``<g_q, g_s> > 0`` (``condition="agree"``, the rule of the released GRMP-IQA code) or
``<g_q, g_s> < 0`` (``condition="conflict"``, ProGrad-like). The inner products are taken per trainable tensor
(``granularity="per-tensor"``, the released code) or once over the concatenation of all tensors
(``granularity="global"``).

Reading the rule:

* ``agree`` with ``lam = 1`` removes from ``g_q`` its component along ``g_s`` whenever the two agree; with
  ``lam > 1`` (the released ``lam = 5``) it reverses that component, i.e. pushes the update *away* from CLIP's
  scene semantics. This is the reverse of ProGrad.
* ``conflict`` with ``lam = 1`` is ProGrad-like: it removes the component of ``g_q`` that conflicts with the
  teacher's scene knowledge.
* ``lam = 0`` or ``enabled=False`` is plain fine-tuning (the comparison arm); :func:`qgr_step` then runs one
  backward pass unless statistics are asked for (``compute_stats``).

Two additions, both off by default so that the default configuration is the released rule exactly:

* **Descent guard** (``min_descent = kappa > 0``). Per tensor, the projected gradient satisfies
  :math:`\langle g, g_q\rangle = \lVert g_q\rVert^2 (1 - \lambda c^2)` with :math:`c = \cos(g_q, g_s)`, so for
  :math:`c > 1/\sqrt{\lambda}` (0.447 at the released :math:`\lambda = 5`) the released step *climbs* the quality
  loss. The guard caps the size of each projection coefficient so that
  :math:`\langle g, g_q\rangle \ge \kappa \lVert g_q\rVert^2` (per tensor, or for the global coefficient over the
  tensors it combines, which also bounds the concatenation of all tensors); it acts only where
  :math:`\lambda c^2 > 1 - \kappa` and never changes the direction of the correction. ``min_descent = 0`` turns
  it off (the released rule, which may climb); any :math:`\kappa > 0` guarantees the bound.
* **Automatic strength** (``lam = "auto"``): the strength is chosen per run from the labelled images alone, by
  content-grouped inner cross-validation over ``auto_grid`` (0 included) with the guard on; see
  :func:`clipiqa.finetune.auto_lam.choose_lam`. The gradient functions here take a number: ``"auto"`` is resolved
  before training starts.

Edge cases, as the released rule decides them: the projection is skipped only when :math:`\lVert g_s\rVert^2` is
exactly 0 (the correction :math:`\lambda \langle g_q, \hat g_s\rangle \hat g_s` does not depend on the size of
``g_s``, so no threshold; values too small for float32 are recomputed in float64, which holds the square of any
float32/bf16 gradient entry); a non-finite gradient is never projected or skipped silently: it raises
:class:`NonFiniteGradientError` (training treats it as a divergence).

Functions here are pure; :func:`qgr_step` is the one that writes ``p.grad``.

Long because the rule is stated here in full (this docstring, ~50 lines) beside the one piece of numerics that
implements it: the configuration's checks, the projection with its guard and its float64 fallback, and the step
read top to bottom as the statement above; split, the guard's bound and the code that keeps it would sit apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["AUTO", "AUTO_GRID", "AUTO_MIN_DESCENT", "QGRConfig", "QGRStats", "NonFiniteGradientError",
           "project_gradients", "qgr_step"]

_GRANULARITIES = ("per-tensor", "global")
_CONDITIONS = ("agree", "conflict")


def _allowed(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values)


AUTO = "auto"
AUTO_GRID = (0.0, 1.0, 2.0, 5.0)
"""The strengths ``lam = "auto"`` chooses from by default: off, removal of the agreeing component, and up to the
released value."""
AUTO_MIN_DESCENT = 0.1
"""The descent guard ``lam = "auto"`` runs with when ``min_descent`` is left at 0 (the automatic rule is always
guarded: a strength chosen on a few images must never be allowed to climb the quality loss)."""


@dataclass(frozen=True)
class QGRConfig:
    """Settings of the regularizer.

    Attributes:
        lam: projection strength :math:`\\lambda` (finite, >= 0), or ``"auto"`` (chosen per run from the labelled
            images by content-grouped inner cross-validation over ``auto_grid``; see
            :func:`clipiqa.finetune.auto_lam.choose_lam`). 5.0 in the released code; 0 = off.
        granularity: ``"per-tensor"`` (inner products per trainable tensor, released code) or ``"global"``
            (one inner product over all tensors that have both gradients).
        condition: ``"agree"`` (project when ``<g_q, g_s> > 0``, released code) or ``"conflict"`` (project when
            ``<g_q, g_s> < 0``, ProGrad-like).
        enabled: False turns the regularizer off (same as ``lam = 0``).
        min_descent: the descent guard :math:`\\kappa` in [0, 1]: projection coefficients are capped so that the
            regularized gradient keeps :math:`\\langle g, g_q\\rangle \\ge \\kappa \\lVert g_q\\rVert^2`. 0 (default)
            = no guard, the released rule exactly; with ``lam = "auto"`` a 0 here means :data:`AUTO_MIN_DESCENT`.
        auto_grid: the strengths ``lam = "auto"`` compares (finite, >= 0, 0 among them).
        auto_folds: content-grouped inner cross-validation folds (>= 2) for ``lam = "auto"`` (each costs one
            training run at the run's own budget).

    There is no threshold on :math:`\\lVert g_s\\rVert^2`: only an exactly zero ``g_s`` skips the projection.
    """

    lam: float | str = 5.0
    granularity: str = "per-tensor"
    condition: str = "agree"
    enabled: bool = True
    min_descent: float = 0.0
    auto_grid: tuple = AUTO_GRID
    auto_folds: int = 3

    def __post_init__(self) -> None:
        if not (isinstance(self.lam, str) and self.lam == AUTO):
            try:
                lam = float(self.lam)
            except (TypeError, ValueError):
                raise ValueError(f"QGRConfig.lam={self.lam!r} is not allowed; use a finite number >= 0 or "
                                 "'auto'") from None
            if not math.isfinite(lam) or lam < 0.0:
                raise ValueError(f"QGRConfig.lam={self.lam!r} is not allowed; use a finite number >= 0 or 'auto'")
        if self.granularity not in _GRANULARITIES:
            raise ValueError(
                f"QGRConfig.granularity={self.granularity!r} is not allowed; use one of {_allowed(_GRANULARITIES)}"
            )
        if self.condition not in _CONDITIONS:
            raise ValueError(
                f"QGRConfig.condition={self.condition!r} is not allowed; use one of {_allowed(_CONDITIONS)}"
            )
        if not isinstance(self.enabled, bool):
            raise ValueError(f"QGRConfig.enabled={self.enabled!r} is not allowed; use True or False")
        kappa = self.min_descent
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0.0 <= float(kappa) <= 1.0:
            raise ValueError(f"QGRConfig.min_descent={kappa!r} is not allowed; use a number in [0, 1] (0 = no "
                             "guard, the released rule; e.g. 0.1 keeps <g, g_q> >= 0.1 |g_q|^2)")
        if self.lam == AUTO and float(kappa) == 0.0:  # the automatic rule always runs guarded
            object.__setattr__(self, "min_descent", AUTO_MIN_DESCENT)
        try:
            grid = tuple(float(v) for v in self.auto_grid)
        except (TypeError, ValueError):
            grid = ()
        if not grid or any(not math.isfinite(v) or v < 0 for v in grid) or 0.0 not in grid:
            raise ValueError(f"QGRConfig.auto_grid={self.auto_grid!r} is not allowed; use finite strengths >= 0 "
                             "with 0 among them, e.g. (0, 1, 2, 5)")
        object.__setattr__(self, "auto_grid", grid)
        if isinstance(self.auto_folds, bool) or not isinstance(self.auto_folds, int) or self.auto_folds < 2:
            raise ValueError(f"QGRConfig.auto_folds={self.auto_folds!r} is not allowed; use an integer >= 2 "
                             "(e.g. 3)")

    @property
    def is_auto(self) -> bool:
        """True when the strength is still to be chosen per run (``lam = "auto"`` and enabled)."""
        return self.enabled and isinstance(self.lam, str)

    @property
    def active(self) -> bool:
        """True when the projection can change gradients (enabled and ``lam > 0``, or ``lam = "auto"``)."""
        return self.is_auto or (self.enabled and float(self.lam) > 0.0)


@dataclass
class QGRStats:
    """Diagnostics of one QGR step.

    Attributes:
        cosine: global cosine :math:`\\langle g_q, g_s\\rangle / (\\lVert g_q\\rVert \\lVert g_s\\rVert)` over the
            tensors that have both gradients (concatenated); ``nan`` if there are none or a norm is zero.
        n_tensors: number of tensors that receive an update (``g_q[i]`` not None).
        n_projected: number of tensors whose gradient was changed by the projection (0 when the regularizer is
            off).
        frac_projected: ``n_projected / n_tensors`` (``nan`` if ``n_tensors == 0``).
        per_tensor_cosine: one entry per input position, the cosine of ``g_q[i]`` and ``g_s[i]``; ``nan`` where
            either is None or has zero norm.
        n_condition: number of tensors on which the projection condition holds (with "global" granularity:
            all tensors that have both gradients and a nonzero ``g_s`` if the global condition holds, else 0).
            Equals ``n_projected`` when the regularizer is active; with ``lam = 0`` / disabled it says how often
            the regularizer *would* have acted.
        n_guarded: number of tensors whose projection coefficient the descent guard capped (``min_descent > 0``;
            0 when the guard is off or the regularizer inactive): how often the released rule would have climbed
            (or come closer than ``min_descent`` to climbing) the quality loss.
    """

    cosine: float
    n_tensors: int
    n_projected: int
    frac_projected: float
    per_tensor_cosine: list = field(default_factory=list)
    n_condition: int = 0
    n_guarded: int = 0


class NonFiniteGradientError(FloatingPointError):
    """A gradient that QGR would combine holds inf or NaN: the step diverged (never projected or skipped)."""


_WIDE = torch.float64
_TINY = 1e-20
"""Inner products run in at least float32 (one pass, fast); a row with a non-finite value or one of magnitude below
``_TINY`` (float32 squares of entries under ~1e-19 underflow) is recomputed in float64, which holds the square of
any float32/bf16/fp16 entry: a tiny |g_s|^2 never underflows to 0, a large one never overflows, so decisions follow
the rule exactly, and a non-finite float64 value means a non-finite entry."""


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: at least float32 (bf16/fp16 grads are summed in float32, float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def _inner_products(g_q: list, g_s: list, index: list[int], wide: bool) -> list[tuple[float, float, float]]:
    """Rows ``(<g_q, g_s>, |g_s|^2, |g_q|^2)`` for the positions in ``index``, with one host sync."""
    if not index:
        return []
    dev = g_q[index[0]].device
    parts = []
    for i in index:
        acc = _WIDE if wide else torch.promote_types(_acc_dtype(g_q[i].dtype), _acc_dtype(g_s[i].dtype))
        a = g_q[i].detach().reshape(-1).to(acc)
        b = g_s[i].detach().to(device=a.device).reshape(-1).to(acc)
        parts.append(torch.stack([torch.dot(a, b), torch.dot(b, b), torch.dot(a, a)]).to(dev, _WIDE))
    return [tuple(r) for r in torch.stack(parts).cpu().tolist()]


def _needs_wide(row: tuple[float, float, float]) -> bool:
    return any(not math.isfinite(v) or abs(v) < _TINY for v in row)


def _cos(dot: float, qq: float, ss: float) -> float:
    if qq > 0.0 and ss > 0.0 and math.isfinite(dot):
        return dot / math.sqrt(qq * ss)
    return float("nan")


def _condition_holds(dot: float, condition: str) -> bool:
    return dot > 0.0 if condition == "agree" else dot < 0.0


def _project(gq: Tensor, gs: Tensor, coef: float, wide: bool) -> Tensor:
    """``gq - coef * gs`` in the accumulation dtype, or in float64 for a tiny ``gs`` (``wide``) or a coefficient
    out of float32's comfortable range; returned in ``gq``'s dtype (new tensor)."""
    acc = _WIDE if wide or not abs(coef) < 1e30 else _acc_dtype(gq.dtype)
    out = gq.to(acc) - coef * gs.to(device=gq.device, dtype=acc)
    return out.to(gq.dtype)


def _guarded_coef(coef: float, dot: float, qq: float, kappa: float) -> tuple[float, bool]:
    """The coefficient of ``g_q - coef * g_s`` capped so that ``<g, g_q> = |g_q|^2 - coef * dot`` stays at least
    ``kappa |g_q|^2`` (``coef * dot`` is never negative under either condition, so only its size is capped, never
    its sign); ``(coef, capped)``. ``kappa = 0`` is no guard (the released rule)."""
    if kappa <= 0.0 or coef * dot <= (1.0 - kappa) * qq:
        return coef, False
    bound = (1.0 - kappa) * qq / abs(dot)
    return math.copysign(bound, coef), True


def _check_finite(rows: list[tuple[float, float, float]], pairs: list[int]) -> None:
    """Raise on a non-finite ``g_s`` (or paired ``g_q``); ``rows`` hold float64 values where float32 was not finite."""
    for i, (dot, ss, qq) in zip(pairs, rows):
        if not math.isfinite(ss):
            raise NonFiniteGradientError(f"semantic gradient g_s[{i}] is not finite (|g_s|^2 = {ss}): the step "
                                         "diverged; QGR neither projects nor ignores it")
        if not (math.isfinite(qq) and math.isfinite(dot)):
            raise NonFiniteGradientError(f"quality gradient g_q[{i}] is not finite (|g_q|^2 = {qq}): the step "
                                         "diverged")


def project_gradients(
    g_q: Sequence[Optional[Tensor]],
    g_s: Sequence[Optional[Tensor]],
    config: QGRConfig,
) -> tuple[list[Optional[Tensor]], QGRStats]:
    r"""Apply the QGR projection to a list of per-tensor gradients.

    For ``granularity="per-tensor"``, for every position ``i``:

    * ``g_q[i]`` None: the result is None (the tensor gets no update, whatever ``g_s[i]`` is);
    * ``g_s[i]`` None or exactly zero (:math:`\lVert g_s[i] \rVert^2 = 0`): the result is ``g_q[i]``;
    * otherwise with :math:`d = \langle g_q[i], g_s[i] \rangle`: if the condition holds (``d > 0`` for "agree",
      ``d < 0`` for "conflict") the result is :math:`g_q[i] - \lambda \, d / \lVert g_s[i] \rVert^2 \, g_s[i]`,
      else ``g_q[i]``.

    For ``granularity="global"`` the same test and coefficient are computed once from
    :math:`d = \sum_i \langle g_q[i], g_s[i] \rangle` and :math:`\sum_i \lVert g_s[i] \rVert^2` over the positions
    that have both gradients (equal to the inner product of the concatenations), and applied to every such
    position; positions with only ``g_q`` keep it.

    With ``min_descent = kappa > 0`` every coefficient (per tensor, or the global one) is capped in size so that
    :math:`\langle g, g_q\rangle \ge \kappa \lVert g_q\rVert^2` over the tensors it applies to; ``stats.n_guarded``
    counts the tensors where the cap bound.

    Inner products and the projection are computed in at least float32 (bf16/fp16 safe), in float64 where a
    value is tiny or non-finite (any nonzero |g_s| is projected); results have the dtype and device of
    ``g_q[i]``. Inputs are never modified; unchanged positions return the very same tensor object
    as ``g_q[i]``, changed ones a new tensor. With ``lam = 0`` or ``enabled=False`` the output list holds the
    ``g_q`` tensors unchanged, and the statistics are still computed.

    Args:
        g_q: quality-loss gradients, one per trainable tensor (None = no gradient).
        g_s: semantic-loss gradients at the same positions (None = the tensor does not affect the scene loss,
            e.g. the text context).
        config: a :class:`QGRConfig`.

    Returns:
        ``(gradients, stats)``: the list of regularized gradients and a :class:`QGRStats`.

    Raises:
        ValueError: the two lists differ in length, a pair of gradients differs in shape, or ``lam`` is still
            ``"auto"``.
        NonFiniteGradientError: a ``g_s[i]`` (or a ``g_q[i]`` paired with one) holds inf or NaN.
    """
    if not isinstance(config, QGRConfig):
        raise TypeError(f"config must be a QGRConfig; got {type(config).__name__}")
    g_q = list(g_q)
    g_s = list(g_s)
    if len(g_q) != len(g_s):
        raise ValueError(f"g_q and g_s must have the same length; got {len(g_q)} and {len(g_s)}")

    pairs: list[int] = []
    for i, (a, b) in enumerate(zip(g_q, g_s)):
        if a is None or b is None:
            continue
        if a.shape != b.shape:
            raise ValueError(
                f"g_q[{i}] and g_s[{i}] must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        pairs.append(i)

    # Rows (dot, ||g_s||^2, ||g_q||^2): one host sync, and one more only for rows that need float64.
    rows = _inner_products(g_q, g_s, pairs, wide=False)
    redo = [k for k, row in enumerate(rows) if _needs_wide(row)]
    for k, row in zip(redo, _inner_products(g_q, g_s, [pairs[k] for k in redo], wide=True)):
        rows[k] = row
    wide = {pairs[k] for k in redo}
    _check_finite(rows, pairs)

    if config.is_auto:
        raise ValueError("QGRConfig.lam='auto' must be resolved to a number before gradients are combined "
                         "(clipiqa.finetune.adapt does this from the labelled images); pass a number here")
    lam = float(config.lam)
    per_tensor_cosine = [float("nan")] * len(g_q)
    for i, (dot, ss, qq) in zip(pairs, rows):
        per_tensor_cosine[i] = _cos(dot, qq, ss)
    tot_dot = sum(r[0] for r in rows)
    tot_ss = sum(r[1] for r in rows)
    tot_qq = sum(r[2] for r in rows)
    cosine = _cos(tot_dot, tot_qq, tot_ss) if rows else float("nan")

    # Coefficient per position (None = keep g_q), capped by the descent guard where it binds.
    kappa = float(config.min_descent)
    coefs: dict[int, float] = {}
    guarded: set[int] = set()
    if config.granularity == "per-tensor":
        for i, (dot, ss, qq) in zip(pairs, rows):
            if ss > 0.0 and _condition_holds(dot, config.condition):
                coefs[i], capped = _guarded_coef(lam * dot / ss, dot, qq, kappa)
                if capped:
                    guarded.add(i)
    else:
        if rows and tot_ss > 0.0 and _condition_holds(tot_dot, config.condition):
            c, capped = _guarded_coef(lam * tot_dot / tot_ss, tot_dot, tot_qq, kappa)
            for i, (_dot, ss, _qq) in zip(pairs, rows):
                if ss > 0.0:  # a zero g_s[i] would leave g_q[i] unchanged anyway
                    coefs[i] = c
                    if capped:
                        guarded.add(i)

    out: list[Optional[Tensor]] = list(g_q)
    n_projected = 0
    if config.active:
        for i, c in coefs.items():
            out[i] = _project(g_q[i], g_s[i], c, i in wide)
            n_projected += 1

    n_tensors = sum(1 for a in g_q if a is not None)
    stats = QGRStats(
        cosine=float(cosine),
        n_tensors=n_tensors,
        n_projected=n_projected,
        frac_projected=(n_projected / n_tensors) if n_tensors else float("nan"),
        per_tensor_cosine=per_tensor_cosine,
        n_condition=len(coefs),
        n_guarded=len(guarded) if config.active else 0,
    )
    return out, stats


def qgr_step(
    params: Sequence[torch.nn.Parameter],
    quality_loss: Tensor,
    semantic_loss: Optional[Tensor],
    config: QGRConfig,
    compute_stats: bool = True,
    retain_graph: bool = False,
) -> QGRStats:
    r"""Compute both gradients, regularize them and accumulate the result into ``p.grad``.

    ``g_q = autograd.grad(quality_loss, params)`` (graph retained), ``g_s = autograd.grad(semantic_loss, params)``
    (``allow_unused=True``: a parameter that a loss does not reach gets None), then
    :func:`project_gradients`, then for each parameter with a result: ``p.grad = g`` if ``p.grad`` is None, else
    ``p.grad += g`` (the same accumulation as ``loss.backward()``). Parameters with ``requires_grad=False`` are
    skipped (None gradients; ``stats.per_tensor_cosine`` still has one entry per element of ``params``). Call
    ``optimizer.zero_grad()`` before and ``optimizer.step()`` after, as with ``backward``.

    When the regularizer is off (``enabled=False`` or ``lam = 0``) and ``compute_stats`` is False, only the
    quality gradient is computed (one backward pass) and the returned stats have ``cosine = nan`` and empty
    ``per_tensor_cosine``. When it is off but ``compute_stats`` is True, ``g_s`` is still computed so that the
    diagnostics (cosine, how often the condition holds) can be compared between arms.

    Args:
        params: the trainable parameters (the same list the optimizer holds).
        quality_loss: 0-d quality loss (see :func:`clipiqa.losses.quality_loss`).
        semantic_loss: 0-d semantic loss (see :func:`clipiqa.losses.semantic_loss`); None or a loss without a
            graph means "no semantic gradient anywhere" (nothing is projected).
        config: a :class:`QGRConfig`.
        compute_stats: compute the diagnostics even when the regularizer is off.
        retain_graph: keep the graph after the last gradient computation (e.g. to call backward again).

    Returns:
        the :class:`QGRStats` of this step.

    Raises:
        NonFiniteGradientError: with the regularizer active, a semantic gradient (or a quality gradient paired with
            one) is not finite; no ``p.grad`` has been written. With it off, a non-finite semantic gradient only
            leaves the diagnostics NaN (the gradient is unused).
    """
    params = list(params)
    trainable = [i for i, p in enumerate(params) if p.requires_grad]
    if not trainable:
        raise ValueError("qgr_step needs at least one parameter with requires_grad=True")
    inputs = [params[i] for i in trainable]

    def _scatter(grads: Sequence[Optional[Tensor]]) -> list[Optional[Tensor]]:
        full: list[Optional[Tensor]] = [None] * len(params)
        for i, g in zip(trainable, grads):
            full[i] = g
        return full

    need_s = (config.active or compute_stats) and semantic_loss is not None and semantic_loss.requires_grad
    g_q = _scatter(
        torch.autograd.grad(quality_loss, inputs, retain_graph=need_s or retain_graph, allow_unused=True)
    )
    if need_s:
        g_s = _scatter(torch.autograd.grad(semantic_loss, inputs, retain_graph=retain_graph, allow_unused=True))
    else:
        g_s = [None] * len(params)

    if config.active:
        grads, stats = project_gradients(g_q, g_s, config)
    elif compute_stats:  # diagnostics only: an unusable g_s must not stop plain fine-tuning
        try:
            grads, stats = project_gradients(g_q, g_s, config)
        except NonFiniteGradientError:
            grads, stats = project_gradients(g_q, [None] * len(params), config)
    else:
        grads = g_q
        n = sum(1 for g in g_q if g is not None)
        stats = QGRStats(
            cosine=float("nan"),
            n_tensors=n,
            n_projected=0,
            frac_projected=0.0 if n else float("nan"),
            per_tensor_cosine=[],
            n_condition=0,
        )

    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is None:
                continue
            g = g.detach()
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
    return stats
