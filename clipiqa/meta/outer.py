"""The outer update of meta pre-training: the step size schedule, the SGD or Adam step along the mean task
direction (Reptile, FOMAML), the movement of the meta parameters, and a fingerprint of named tensors."""
from __future__ import annotations

import hashlib
import math
from typing import Iterable, Mapping, Sequence

import torch

from .config import META_LR_SCHEDULES, OUTER_OPTIMIZERS, OuterSettings

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def meta_lr_at(step: int, total_steps: int, base: float, schedule: str) -> float:
    """The outer step size of meta step ``step`` (1-based) of a run of ``total_steps``.

    ``constant``: ``base``. ``linear``: ``base * (1 - (step - 1) / total_steps)``, from ``base`` at the first step
    towards 0 (Nichol et al. 2018; the last step gets ``base / total_steps``, steps past the end 0).
    """
    if schedule == "constant":
        return float(base)
    if schedule != "linear":
        raise ValueError(f"meta_lr schedule {schedule!r} is not one of {', '.join(META_LR_SCHEDULES)}")
    if total_steps < 1 or step < 1:
        raise ValueError(f"meta step {step} of {total_steps}: both must be at least 1")
    return float(base) * max(0.0, 1.0 - (step - 1) / total_steps)


def relative_movement(theta: Mapping[str, torch.Tensor], theta0: Mapping[str, torch.Tensor]) -> float:
    """``|theta - theta0| / |theta0|`` over all tensors together (L2 norms of their concatenation, in float64).

    0 when nothing moved; ``inf`` when ``theta0`` is all zeros and ``theta`` is not.
    """
    moved = sum(float((theta[n].double() - theta0[n].double()).pow(2).sum()) for n in theta0)
    size = sum(float(theta0[n].double().pow(2).sum()) for n in theta0)
    if moved == 0.0:
        return 0.0
    return math.sqrt(moved / size) if size > 0 else float("inf")


def outer_update(theta: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor], lr: float,
                 optimizer: str = "sgd", state: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                 step: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """One outer step along the mean task ``direction`` (Reptile ``mean(phi - theta)``, FOMAML ``-mean(grad)``).

    ``sgd``: ``theta + lr * direction``; the state stays empty. ``adam``: Adam (betas 0.9/0.999, eps 1e-8, the
    formula of ``torch.optim.Adam``) on the gradient ``-direction`` at step ``step`` (1-based, for the bias
    correction) from the moments ``state = {"exp_avg": {...}, "exp_avg_sq": {...}}`` (None = zeros).
    Returns ``(new theta, new state)``; nothing is changed in place.
    """
    if optimizer == "sgd":
        return {n: theta[n] + lr * direction[n] for n in theta}, {}
    if optimizer != "adam":
        raise ValueError(f"outer optimizer {optimizer!r} is not one of {', '.join(OUTER_OPTIMIZERS)}")
    if step < 1:
        raise ValueError(f"Adam step {step}: steps count from 1")
    b1, b2 = ADAM_BETAS
    state = state or {}
    m_old, v_old = state.get("exp_avg", {}), state.get("exp_avg_sq", {})
    new_theta, m_new, v_new = {}, {}, {}
    step_size = lr / (1 - b1 ** step)
    root_bc2 = math.sqrt(1 - b2 ** step)
    for n in theta:
        g = -direction[n]
        m = m_old.get(n, torch.zeros_like(theta[n])) * b1 + (1 - b1) * g
        v = v_old.get(n, torch.zeros_like(theta[n])) * b2 + (1 - b2) * g * g
        new_theta[n] = theta[n] - step_size * m / (v.sqrt() / root_bc2 + ADAM_EPS)
        m_new[n], v_new[n] = m, v
    return new_theta, {"exp_avg": m_new, "exp_avg_sq": v_new}


def reptile_update(theta: Mapping[str, torch.Tensor], phis: Sequence[Mapping[str, torch.Tensor]], beta: float
                   ) -> dict[str, torch.Tensor]:
    """``theta + beta * mean_t(phi_t - theta)`` (a new dict)."""
    return _along_mean(theta, [{n: phi[n] - theta[n] for n in theta} for phi in phis], beta)


def fomaml_update(theta: Mapping[str, torch.Tensor], grads: Sequence[Mapping[str, torch.Tensor]], beta: float
                  ) -> dict[str, torch.Tensor]:
    """``theta - beta * mean_t(grad_t)``, the query gradients at each task's ``phi`` (a new dict)."""
    return _along_mean(theta, [{n: -g[n] for n in theta} for g in grads], beta)


def _along_mean(theta: Mapping[str, torch.Tensor], directions: Sequence[Mapping[str, torch.Tensor]], beta: float
           ) -> dict[str, torch.Tensor]:
    total = {n: sum((d[n] for d in directions), torch.zeros_like(theta[n])) for n in theta}
    return outer_update(theta, mean_direction(total, len(directions)), beta)[0]


def mean_direction(summed: Mapping[str, torch.Tensor], n_tasks: int) -> dict[str, torch.Tensor]:
    """The mean task direction from the sum of ``n_tasks`` directions."""
    return {n: t / n_tasks for n, t in summed.items()}


class Outer:
    """The outer optimizer of one run: settings, the schedule's length and the Adam moments (checkpointed)."""

    def __init__(self, settings: OuterSettings, total_steps: int):
        self.settings, self.total_steps = settings, total_steps
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def lr(self, step: int) -> float:
        return meta_lr_at(step, self.total_steps, self.settings.lr, self.settings.schedule)

    def step(self, theta: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor], step: int
             ) -> dict[str, torch.Tensor]:
        new_theta, self.state = outer_update(theta, direction, self.lr(step), self.settings.optimizer,
                                             self.state, step)
        return new_theta

    def tensors(self) -> dict[str, torch.Tensor]:
        """The moments as flat ``{"exp_avg/<name>": tensor}`` (for safetensors)."""
        return {f"{kind}/{n}": t for kind, part in self.state.items() for n, t in part.items()}

    def load_tensors(self, flat: Mapping[str, torch.Tensor], device) -> None:
        state: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in flat.items():
            kind, name = key.split("/", 1)
            state.setdefault(kind, {})[name] = t.to(device)
        self.state = state


def param_hash(params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str:
    """A short fingerprint of named tensors (names, shapes, float32 values)."""
    items = params.items() if isinstance(params, Mapping) else params
    digest = hashlib.blake2b(digest_size=8)
    for name, t in sorted(items, key=lambda kv: kv[0]):
        a = t.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(a.shape)}".encode())
        digest.update(a.numpy().tobytes())
    return digest.hexdigest()

