"""A session's adapted checkpoints: the labels split for one adaptation, where its checkpoint goes
(``checkpoints/<name>/``: adapter, card, history), which preset a checkpoint was made for, and the table of
them all."""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..checkpoint import save_checkpoint
from ..data import few_shot, split_hash
from ..notebook import UserError
from .files import atomic_write_text, json_text

TABLE_COLUMNS = ["name", "path", "created", "n_labels", "trainable", "stopped", "srcc_test", "random_init",
                 "active"]


class NotEnoughLabelsError(UserError, ValueError):
    """Adaptation was asked for with fewer labels than it needs; label more images first."""


def split_labels(table: pd.DataFrame, shots: int | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(train, test)`` of the labelled table: a seeded draw of ``shots`` labels and the rest as the test set
    (None when fewer than 3 are left, or without ``shots``: train on all)."""
    if len(table) < 2:
        raise NotEnoughLabelsError(f"label at least 2 images before adapting (now {len(table)}); more labels "
                                   "help")
    train, test = table, None
    if shots is not None and 0 < shots < len(table):
        train = few_shot(table, int(shots), seed)
        test = table.drop(index=train.index)
        test = test if len(test) >= 3 else None
    return train, test


def checked_test(test: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """A test table given to ``Session.adapt(test=...)``: it needs ``path`` and ``q``, at least 3 rows, and no image
    that is also a training label (a test on trained images flatters every score)."""
    missing = [c for c in ("path", "q") if c not in test]
    if missing or len(test) < 3:
        raise ValueError(f"Session.adapt(test=...) needs a table of at least 3 labelled images with columns 'path' "
                         f"and 'q' (got {len(test)} rows, missing {missing}); e.g. clipiqa.data.read_labels(...)")
    same = {os.path.abspath(p) for p in test["path"]} & {os.path.abspath(p) for p in train["path"]}
    if same:
        raise ValueError(f"Session.adapt(test=...): {len(same)} test image(s) are also training labels, e.g. "
                         f"{sorted(same)[0]}; measure on images of other contents")
    return test.reset_index(drop=True)


def new_checkpoint_dir(checkpoints_dir: Path, name: str | None, n_train: int) -> Path:
    """A folder for a new checkpoint (``adapt-<time>-<n>labels`` by default) that does not exist yet: never
    overwrite an earlier checkpoint (two runs within one second get ``-2``, ``-3``, ...)."""
    name = name or datetime.now().strftime("adapt-%Y%m%d-%H%M%S") + f"-{n_train}labels"
    target, k = checkpoints_dir / name, 1
    while target.exists():
        k += 1
        target = checkpoints_dir / f"{name}-{k}"
    return target


def save_adapted(model, target: Path, config, history, train: pd.DataFrame, test: pd.DataFrame | None,
                 session_folder: Path, seed: int, prompt_words_before=None) -> None:
    """Save an adapted model as a session checkpoint: adapter and card (what data, which split, the last test
    SRCC, stopped or not) plus ``history.json`` (every step and evaluation)."""
    last_eval = history.evals[-1] if history.evals else {}
    save_checkpoint(model, target, trainable=config.trainable, training=config.to_dict(),
                    data={"session": str(session_folder), "n_labels": len(train),
                          "labels_hash": split_hash(train), "n_test": 0 if test is None else len(test),
                          "test_hash": None if test is None else split_hash(test), "shots_seed": seed},
                    metrics={k: v for k, v in last_eval.items() if k.startswith("srcc")},
                    extra={"stopped": history.stopped, "steps": len(history.steps),
                           "selected_epoch": history.selected_epoch, "created_ns": time.time_ns()},
                    qgr=history.qgr_record(), prompt_words_before=prompt_words_before)
    atomic_write_text(target / "history.json", json_text({
        "steps": history.steps, "evals": history.evals, "stopped": history.stopped, "note": history.note,
        "seconds": history.seconds, "selected_epoch": history.selected_epoch}))


def checkpoint_preset(ckpt: Path) -> str | None:
    """The model preset a checkpoint folder was made for (from its card), or None when unreadable."""
    try:
        return json.loads((ckpt / "card.json").read_text())["backbone"].get("preset")
    except (OSError, ValueError, KeyError):
        return None


def checkpoint_table(checkpoints_dir: Path, active: str | None) -> pd.DataFrame:
    """The checkpoints in ``checkpoints_dir``, oldest first: name, path, created, labels used, stopped, SRCC,
    random-init, and whether it is the ``active`` one."""
    rows: list[dict[str, Any]] = []
    if checkpoints_dir.is_dir():
        for d in sorted(checkpoints_dir.iterdir()):
            card_path = d / "card.json"
            if not card_path.is_file():
                continue
            card = json.loads(card_path.read_text())
            order = card.get("created_ns") or card_path.stat().st_mtime_ns
            rows.append({"order": order, "name": d.name, "path": str(d), "created": card.get("created"),
                         "n_labels": card.get("data", {}).get("n_labels"),
                         "trainable": card.get("trainable"), "stopped": card.get("stopped", False),
                         "srcc_test": card.get("metrics", {}).get("srcc_test"),
                         "random_init": bool(card.get("backbone", {}).get("random_init")),
                         "active": d.name == active})
    table = pd.DataFrame(rows, columns=["order", *TABLE_COLUMNS]).sort_values("order", kind="stable")
    return table[TABLE_COLUMNS].reset_index(drop=True)
