"""The evaluation protocol (docs/design.md, 'Evaluation protocol'): every method on the same seeded splits and
the same few-shot draws.

``run_protocol(dataset, methods, shots, n_splits)`` reads top to bottom:

1. ``n_splits`` seeded 80/20 splits (by reference content for synthetic datasets, by image otherwise);
2. per split, one draw of N labelled images from the 80 % side, shared by every method;
3. per split and method: predictions for the 20 % side, then SRCC, KRCC, PLCC (raw and after the 4-parameter
   logistic), RMSE, the chance band for the test size and a bootstrap CI of SRCC; a failing method is recorded
   (``status``/``error``) and the run goes on;
4. a summary per method (mean, median, std over splits), notes that say what the numbers can and cannot show,
   and optionally ``per_split.csv``, ``summary.csv``, ``summary.json`` and ``summary.png`` in ``out_dir``.

A method is a function ``(model_factory, train_table, test_table, config, seed) -> predictions`` (one number per
test image) or an :class:`ArmResult` (predictions, label-scale scores, training history and more per-split
columns). ``model_factory()`` returns a fresh
:class:`~clipiqa.model.IQAModel`; ``model_factory(prompts=PromptConfig | checkpoint)`` one with those prompts.

The package, one idea a module: ``registry`` (what an arm is, :data:`METHODS`), ``cache`` (what the arms of a run
share), ``arms`` (the arms and their recipes), ``auto_meta`` (the meta checkpoint of the ``meta`` arms), ``run``
(:func:`run_protocol`, scoring) and ``report`` (summaries, notes, table, figure, result files).
"""
from __future__ import annotations

from .arms import (ADAPTED_ARMS, DEFAULT_METHODS, META, LAST_BLOCKS_TRAINS, TEXT_ONLY, adapt_and_predict, adapted_arm,
                   arm_config, arm_recipe, arm_table_row, classical_ridge, history_param_count, predict_table,
                   ridge_probe, zero_shot)
from .auto_meta import (AUTO_META_N_TYPES, AUTO_META_SETTINGS, AUTO_META_TYPES, auto_meta_pretrain, meta_checkpoint,
                        split_tag)
from .cache import ModelFactory, ProtocolCache
from .registry import METHODS, ArmResult, Method, MethodConfig, MethodFn, MethodSkipped, register_method
from .report import (METRICS, NOTE_AUTO_META, NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS, ProtocolResult,
                     complete_splits, format_summary, plot_summary, summarize_methods, zero_shot_configuration)
from .run import PER_SPLIT_COLUMNS, run_protocol, score_predictions

__all__ = [
    "ArmResult", "DEFAULT_METHODS", "METHODS", "METRICS", "Method", "MethodConfig", "MethodSkipped", "NOTE_RANDOM_INIT",
    "NOTE_SYNTHETIC_LABELS", "ProtocolCache", "ProtocolResult", "register_method", "run_protocol",
]
