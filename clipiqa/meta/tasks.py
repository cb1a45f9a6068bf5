"""Tasks as meta-training reads them: one task per distortion type of a dataset, the support/query split of a
task, the training/held-out split of the tasks, held-out tasks without the images training tasks share, and the
meta batches of an epoch (the released loop's: dataset phases)."""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..data.demo import stable_seed
from ..data.readers import DATASETS
from ..data.splits import holdout as _holdout
from ..data.tasks import Task
from .config import MetaConfig


def task_split(task: Task, config: MetaConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(support, query)`` of a task: split by content (no content on both sides), seeded per task."""
    seed = stable_seed(config.seed, "split", task.name)
    support, query = _holdout(task.table, 1.0 - float(config.support_fraction), seed=seed, by="content")
    return support.reset_index(drop=True), query.reset_index(drop=True)


def tasks_from_dataset(df: pd.DataFrame, types: Iterable[str] | None = None, prefix: str | None = None
                       ) -> list[Task]:
    """One task per distortion type of a dataset in the common table (KADID-10k: all 25 types; TID2013: 24).

    Task names are ``"<dataset>:<type code>"`` (``prefix`` replaces the dataset name), so tasks of several
    datasets can be pooled. ``types`` keeps only these type codes.
    """
    if "distortion" not in df.columns or df["distortion"].isna().all():
        raise ValueError("the table has no distortion types (column 'distortion'); meta tasks are distortion "
                         "types: use KADID-10k, TID2013 or synthetic_tasks")
    dataset = prefix or str(df.attrs.get("dataset") or "data")
    names = _distortion_names(dataset)
    table = df[df["distortion"].notna()]
    codes = sorted(table["distortion"].astype(str).unique())
    if types is not None:
        wanted = [str(t) for t in types]
        unknown = sorted(set(wanted) - set(codes))
        if unknown:
            raise ValueError(f"distortion types {unknown} are not in {dataset}; it has {', '.join(codes)}")
        codes = [c for c in codes if c in set(wanted)]
    tasks = []
    for code in codes:
        part = table[table["distortion"].astype(str) == code].reset_index(drop=True)
        part.attrs = dict(df.attrs)
        tasks.append(Task(f"{dataset}:{code}", part, names.get(code, "")))
    return tasks


def _distortion_names(dataset: str) -> dict[str, str]:
    return dict(getattr(DATASETS.get(dataset), "distortion_names", None) or {})


def split_tasks(tasks: Sequence[Task], holdout: float | Sequence[str], seed: int = 0
                ) -> tuple[list[Task], list[Task]]:
    """``(training tasks, held-out tasks)``. A fraction draws round(fraction * n) tasks (at least 1, leaving at
    least 1) from a seeded permutation of the sorted names; names pick exactly those tasks."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"task names must be unique; repeated: {dup}")
    if len(tasks) < 2:
        raise ValueError(f"meta pre-training needs at least 2 source tasks (one held out for selection); "
                         f"got {len(tasks)}")
    if isinstance(holdout, (int, float)) and not isinstance(holdout, bool):
        n = min(max(int(math.floor(float(holdout) * len(tasks) + 0.5)), 1), len(tasks) - 1)
        order = sorted(names)
        perm = np.random.default_rng(stable_seed(seed, "holdout")).permutation(len(order))
        held = {order[i] for i in perm[:n]}
    else:
        held = set(holdout)
        unknown = sorted(held - set(names))
        if unknown:
            raise ValueError(f"held-out task(s) {unknown} are not among the source tasks {sorted(names)}")
        if len(held) >= len(tasks):
            raise ValueError("every task is held out; leave at least one task for meta training")
    train = [t for t in tasks if t.name not in held]
    return train, [t for t in tasks if t.name in held]


def _path_key(path: Any) -> str:
    return os.path.normcase(os.path.normpath(os.path.abspath(str(path))))


def exclude_shared_images(task: Task, others: Sequence[Task]) -> tuple[Task, int]:
    """``(task without the rows whose image any of others also holds, number of rows dropped)``.

    Held-out tasks are scored this way: synthetic tasks all hold the same clean references (level 0), so a
    held-out task's support/query would otherwise contain images the training tasks trained on. Images are
    compared by normalised absolute path. Raises ValueError when fewer than 2 content groups are left.
    """
    shared = {_path_key(p) for other in others for p in other.table["path"]}
    keep = np.array([_path_key(p) not in shared for p in task.table["path"]], dtype=bool)
    dropped = int((~keep).sum())
    if not dropped:
        return task, 0
    table = task.table[keep].reset_index(drop=True)
    table.attrs = dict(task.table.attrs)
    left = table["content_id"].nunique() if len(table) else 0
    if left < 2:
        raise ValueError(f"held-out task {task.name!r}: {dropped} of its {len(task.table)} images are also in "
                         f"training tasks and are left out of held-out scoring; {len(table)} images in {left} "
                         "content group(s) remain, fewer than the 2 a support/query split needs. Hold out another "
                         "task, or use more distortion levels / reference photos")
    return Task(task.name, table, task.description), dropped


def meta_batches(names: list[str], config: MetaConfig, epoch: int) -> list[list[str]]:
    """The meta steps of one epoch: shuffled meta batches of ``tasks_per_batch`` (``released``: dataset phases)."""
    if config.algorithm == "released":
        return released_phases(names, config.seed, epoch)
    order = np.random.default_rng(stable_seed(config.seed, "order", epoch)).permutation(len(names))
    shuffled = [names[i] for i in order]
    return [shuffled[i:i + config.tasks_per_batch] for i in range(0, len(shuffled), config.tasks_per_batch)]


def released_phases(names: Sequence[str], seed: int, epoch: int) -> list[list[str]]:
    """The meta steps of one epoch of the ``released`` loop: one per dataset phase.

    A phase holds the tasks of one dataset, named by the task-name prefix before the last ``:``
    (``kadid10k:01`` -> ``kadid10k``; unprefixed names, e.g. synthetic tasks, form one phase); phases come in
    the order of their first task in ``names``, tasks inside a phase in a seeded order per epoch.
    """
    phases: dict[str, list[str]] = {}
    for name in names:
        phases.setdefault(name.rsplit(":", 1)[0] if ":" in name else "", []).append(name)
    out = []
    for phase, members in phases.items():
        order = np.random.default_rng(stable_seed(seed, "released-order", epoch, phase)).permutation(len(members))
        out.append([members[i] for i in order])
    return out

