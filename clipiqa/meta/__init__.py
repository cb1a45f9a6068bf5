"""Meta-prompt pre-training: proper first-order meta-learning over distortion-type tasks.

Why it differs from the released loop, and its step size: docs/design.md, 'Meta-prompt pre-training'.

``meta_pretrain(model, tasks, config)`` reads top to bottom:

1. split the source tasks into *training* tasks and *held-out* tasks (``config.holdout_tasks``); each task's
   table is split by content into support (``support_fraction``) and query;
2. per epoch, shuffle the training tasks into meta batches of ``tasks_per_batch``; per meta batch and per
   task: copy the meta parameters ``theta`` into the model, take ``inner_steps`` Adam steps (lr ``inner_lr``,
   fresh optimizer state per task) on support batches, giving ``phi``; then
   - ``reptile``: the task's direction is ``phi - theta``;
   - ``fomaml`` (first-order MAML): the direction is ``-grad L_query(phi)``, the quality-loss gradient on a
     query batch at ``phi`` (QGR applies to it as to inner steps);
3. outer update along the mean direction ``d = mean_over_tasks(direction)`` (:func:`outer_update`):
   ``sgd``: ``theta <- theta + beta_t * d``, i.e. Reptile ``theta += beta_t * mean(phi - theta)`` and FOMAML
   ``theta -= beta_t * mean(grad)``; ``adam``: an Adam step on the gradient ``-d`` (moments kept across meta
   steps and in the periodic checkpoint). ``beta_t`` follows ``meta_lr_schedule`` (:func:`meta_lr_at`);
   defaults per algorithm in ``OUTER_DEFAULTS``. The model is then reset to the new ``theta``, and
   ``rel_move = |theta - theta0| / |theta0|`` (:func:`relative_movement`, theta0 = the parameters at the start
   of the run) is recorded; a run that ends below 1 % warns (``RuntimeWarning`` and ``history.note``);
4. every ``eval_every`` epochs (and once before training, epoch 0), each *held-out source task* is scored:
   from ``theta``, ``inner_steps`` steps on its support, then SRCC on its query (``srcc_adapted``; ``srcc_init``
   is the SRCC of ``theta`` itself). The meta parameters with the best mean held-out SRCC are kept.

Selection reads **only held-out source tasks**: there is no target-data argument at all, the held-out task
names are disjoint from the training task names (asserted), and a held-out task is scored without the images
that any training task also holds (:func:`exclude_shared_images`: synthetic tasks share their clean references).
Losses are the quality loss with the semantic (scene) loss feeding QGR, exactly as in few-shot adaptation
(``clipiqa.adapt``); QGR defaults to off here (``lam = 0``) because the released code does not regularise meta
training; turn it on with ``qgr=QGRConfig()``.

Determinism: every random draw of a task visit (support batches, crops, dropout) comes from a seed derived
from ``(seed, epoch, meta step, task name)``, never from a shared stream. So a run resumed from a periodic
checkpoint continues with exactly the numbers of an uninterrupted run, and under ``torchrun`` each task gives
the same result whichever rank computes it.

Distributed (``torchrun``, see :mod:`clipiqa.distributed`): the tasks of a meta batch are spread over ranks
(task ``i`` of the batch on rank ``i % world_size``); per-task directions are summed over ranks with one
all-reduce and divided by the number of tasks in the batch, so every rank applies the identical outer update.
Held-out tasks are evaluated sharded the same way. Only rank 0 writes files.

``algorithm="released"`` reproduces the released code's loop **for comparison only** (labelled so in the history
note and the checkpoint card): one inner model ``phi`` that is never reset to ``theta``, one inner Adam optimizer
for the whole run, per task ``inner_steps`` times a support step followed by a query step, and one outer step
``theta += beta * (phi - theta)`` per dataset phase (the tasks of one dataset, by the task-name prefix; see
:func:`released_phases`). Under torchrun every rank runs that sequential loop and rank 0's result is broadcast.

Numbers from the random-init ``tiny`` preset are meaningless: they show that the machinery runs.

Modules: ``config`` (``MetaConfig``, ``OuterSettings``), ``tasks`` (splits of and between tasks; the task type is
:class:`clipiqa.data.tasks.Task`, synthetic tasks come from :mod:`clipiqa.data.synthetic_tasks`), ``outer`` (outer
updates, step-size schedule, movement), ``runner`` (task visits and held-out scoring), ``run`` (``MetaRun``: the
state of one run, owned by one object), ``steps`` (one meta step: textbook or released), ``selection`` (held-out
evaluation, what a run says about its selection), ``state`` (periodic checkpoints, resume) and ``loop``
(``meta_pretrain``). The run's record is :class:`clipiqa.history.MetaHistory`, its divergence error
:class:`clipiqa.history.DivergedError`.
"""
from ..data.synthetic_tasks import LABEL_KIND, synthetic_tasks
from ..data.tasks import Task
from ..history import DivergedError, History, MetaHistory
from .config import ALGORITHMS, MIN_REL_MOVE, OUTER_DEFAULTS, RELEASED_NOTE, MetaConfig, OuterSettings
from .loop import meta_pretrain
from .outer import fomaml_update, meta_lr_at, outer_update, param_hash, relative_movement, reptile_update
from .selection import selection_note
from .tasks import (exclude_shared_images, meta_batches, released_phases, split_tasks, task_split,
                    tasks_from_dataset)

MetaDivergedError = DivergedError  # the name meta pre-training's callers know: the same error as adapt's

__all__ = ["ALGORITHMS", "MetaConfig", "Task", "MetaHistory", "MetaDivergedError", "tasks_from_dataset",
           "synthetic_tasks", "split_tasks", "task_split", "meta_pretrain", "meta_batches", "reptile_update",
           "fomaml_update", "param_hash", "LABEL_KIND", "OUTER_DEFAULTS", "OuterSettings", "meta_lr_at",
           "outer_update", "relative_movement", "exclude_shared_images", "released_phases", "MIN_REL_MOVE",
           "RELEASED_NOTE", "History", "DivergedError", "selection_note"]
