"""What ``adapt`` does when a step diverges: keep the last trainable state known to train finitely, restore it
(or the initial one) in place, check that it scores finitely, and say so in the history and the error."""
from __future__ import annotations

import time

import torch

from ..history import AdaptHistory, DivergedError
from .config import AdaptConfig
from .step import EncodedSet, all_finite, forward_cached


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


def recover_from_divergence(model, error: DivergedError, history: AdaptHistory, last_good: LastGoodState,
                            encoded: EncodedSet, config: AdaptConfig, step: int, epoch: int, t0: float
                            ) -> DivergedError:
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
    history.add_note(f"diverged at step {step}: {what}")
    history.seconds = time.perf_counter() - t0
    model.eval()
    return DivergedError(f"{error} {what}", history)

