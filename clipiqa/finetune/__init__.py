"""Few-shot fine-tuning with QGR (docs/design.md, 'Few-shot fine-tuning and recipes').

``adapt(model, labelled, config)`` reads top to bottom:

1. choose the trainable set (``last-blocks``: text context + tuned copies of the last k blocks; ``prompts``);
2. build ``n_views`` crops per training image and cache, per view, the activations entering the first trainable
   block (the frozen prefix, run once in eval mode) and the frozen teacher's scene logits;
3. per step: finish the forward from the cache, compute the quality and semantic losses, let QGR combine their
   gradients, take an SGD step; report every step to ``on_step``;
4. after each epoch optionally evaluate, and keep the state the selection mode asks for.

Modules: ``config`` (``AdaptConfig``, ``with_qgr``), ``step`` (the cache and one QGR step, shared with meta
pre-training), ``schedule`` (learning rate per epoch, plateau, the stopping rule), ``selection`` (evaluation and
the selection tracker), ``recovery`` (what a divergence restores), ``auto_lam`` (``lam="auto"``) and ``loop``
(``adapt``). The run's record is :class:`clipiqa.history.AdaptHistory`.
"""
from ..history import AdaptHistory, DivergedError, History
from .config import (LABEL_NORMS, LR_SCHEDULES, OPTIMISTIC_NOTE, RELEASED_QGR_LAM, SELECTION_METRICS,
                     SELECTION_MODES, AdaptConfig, with_qgr)
from .loop import adapt, training_labels
from .recovery import LastGoodState
from .schedule import LearningRate, Plateau, epoch_lr, evaluates_after, plateau_trace
from .selection import Evaluation, SelectionTracker, predict_encoded, selection_score
from .step import EncodedSet, all_finite, compute_gradients, forward_cached, train_step

AdaptationDivergedError = DivergedError  # the name adapt's callers know; the same class as MetaDivergedError

__all__ = ["AdaptConfig", "with_qgr", "RELEASED_QGR_LAM", "SELECTION_MODES", "OPTIMISTIC_NOTE", "LR_SCHEDULES",
           "SELECTION_METRICS", "LABEL_NORMS", "adapt", "History", "AdaptHistory", "DivergedError",
           "AdaptationDivergedError", "EncodedSet", "forward_cached", "compute_gradients", "train_step", "all_finite",
           "predict_encoded", "selection_score", "training_labels", "epoch_lr", "evaluates_after", "Plateau",
           "plateau_trace", "LearningRate", "Evaluation", "SelectionTracker", "LastGoodState"]
