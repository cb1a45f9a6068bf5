"""A lost label database rebuilt from its export: when ``labels.sqlite`` is missing, 0 bytes, or holds no
rating while ``labels.csv`` lists labelled images, the export is the last copy of the labels. Opening a fresh
database over it would make the next export rewrite it from nothing (issue 23: following the old error
message's advice emptied labels.csv), so the Session imports it instead and says so.

What labels.csv keeps is one MOS per image, not who rated what: each labelled image comes back as one rating
(its MOS) by the rater ``"recovered"``, stamped with the export's modification time, with its content id. The
export as it was is copied into ``backups/`` first (its ``n_ratings`` and ``mos_std`` columns change once the
re-export counts one rating per image). A damaged database that is not empty is never replaced here: it may
hold more than the export (each rater's ratings, skips, repeats), so the label store refuses it and says how to
repair it or move it aside (:class:`~clipiqa.labelstore.LabelStoreUnusable`)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..csvio import read_csv
from ..labelfiles import backup_copy
from ..labelstore import LabelStore
from .files import now_text

RECOVERED_RATER = "recovered"


class LabelsRecovered(UserWarning):
    """The Session rebuilt its lost database from labels.csv (the message says what was found and kept)."""


def database_state(path: Path) -> str | None:
    """How the database file looks before it is opened: ``"missing"``, ``"empty (0 bytes)"`` or None."""
    try:
        return "empty (0 bytes)" if path.stat().st_size == 0 else None
    except FileNotFoundError:
        return "missing"


def read_export(labels_path: Path) -> list[tuple[str, float, str]]:
    """``(path, mos, content_id)`` of each labelled image of an export (none when the file is missing or is
    not an export: a format-1 file has ``score``, not ``mos``)."""
    if not labels_path.is_file():
        return []
    table = read_csv(labels_path, text_columns=("path", "content_id"))
    if "path" not in table or "mos" not in table:
        return []
    cids = table["content_id"] if "content_id" in table else [""] * len(table)
    return [(p, float(m), c or "") for p, m, c in zip(table["path"], table["mos"], cids)
            if p and np.isfinite(m)]


def has_ratings(store: LabelStore) -> bool:
    with store.read() as con:
        return con.execute("SELECT 1 FROM ratings LIMIT 1").fetchone() is not None


def recover_from_export(store: LabelStore, labels_path: Path, scale_name: str, found: str | None) -> str | None:
    """Import ``labels_path`` into ``store`` when the store holds no rating and the export has rows; returns
    what happened (for the user), or None when there was nothing to recover. ``found``: how the database file
    looked before it was opened (:func:`database_state`), for the message.

    Inside one write transaction that checks again for ratings, so two processes opening the folder at once
    recover it once."""
    if has_ratings(store):
        return None
    with store.write(f"the recovery of the labels in {labels_path.name}") as con:
        if con.execute("SELECT 1 FROM ratings LIMIT 1").fetchone() is not None:
            return None  # another process recovered it meanwhile
        rows = read_export(labels_path)
        if not rows:
            return None
        backup = backup_copy(labels_path)
        stamp = datetime.fromtimestamp(labels_path.stat().st_mtime, timezone.utc).isoformat()
        store.add_images([(p, cid) for p, _, cid in rows], con)
        for p, mos, _ in rows:
            store.add_rating(p, RECOVERED_RATER, mos, scale_name, time=stamp, con=con, export=False)
        LabelStore.set_meta(con, "recovered", json.dumps({
            "from": labels_path.name, "labels": len(rows), "database_was": found or "without ratings",
            "backup": f"{backup.parent.name}/{backup.name}", "time": now_text()}))
        store.write_export(con)
    images = f"{len(rows)} labelled image{'s' if len(rows) != 1 else ''}"
    return (f"{store.path.name} was {found or 'without any rating'} but {labels_path.name} held {images}: they "
            f"were imported into {store.path.name} as one rating per image (its MOS) by the rater "
            f"{RECOVERED_RATER!r}, so no label is lost; who rated what, skips and unlabelled images are not in "
            f"{labels_path.name} (give images= to add images again). {labels_path.name} as it was: {backup}")
