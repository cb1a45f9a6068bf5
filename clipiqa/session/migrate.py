"""Format-1 sessions (``labels.csv`` as ``path,score,content_id`` plus ``state.json``) moved into the label
database once, every label kept (as ratings of the rater ``"default"``)."""
from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from ..labelstore import LabelStore, decode_name, encode_name
from .files import DEFAULT_RATER, now_text, read_json


def migrate_format1(store: LabelStore, stored: Mapping[str, Any], labels_path: Path, state_path: Path,
                    backup_path: Path, scale_name: str) -> None:
    """Move a format-1 session (settings.json image list, labels.csv ``path,score,content_id``, state.json
    skips and position) into the database, once (the check runs inside the write transaction, so two
    processes opening the folder at once migrate it once). labels.csv is kept as ``backup_path``."""
    content = dict(stored.get("content_ids", {}))
    with store.write("the migration of the format-1 session") as con:
        if con.execute("SELECT 1 FROM meta WHERE key = 'migrated'").fetchone():
            return  # another process migrated it meanwhile (and labels.csv is its export now)
        labels = read_format1_labels(labels_path)
        state = read_json(state_path) or {}
        if labels_path.is_file():
            shutil.copy2(labels_path, backup_path)
        rows = [(p, content.get(p, "")) for p in stored.get("images", [])]
        rows += [(p, cid or content.get(p, "")) for p, _, cid in labels]
        store.add_images(rows, con)
        stamp = (datetime.fromtimestamp(labels_path.stat().st_mtime, timezone.utc).isoformat()
                 if labels_path.is_file() else now_text())
        for p, score, _ in labels:
            store.add_rating(p, DEFAULT_RATER, score, scale_name, time=stamp, con=con, export=False)
        labelled = {p for p, _, _ in labels}
        known = {decode_name(p) for (p,) in con.execute("SELECT path FROM images")}
        skips = [p for p in state.get("skipped", []) if p in known and p not in labelled]
        for p in skips:
            store.add_skip(p, DEFAULT_RATER, con)
        current = state.get("current")
        if current in known:
            con.execute("INSERT OR REPLACE INTO positions(rater, image, time) SELECT ?, id, ? FROM images "
                        "WHERE path = ?", (DEFAULT_RATER, now_text(), encode_name(current)))
        LabelStore.set_meta(con, "migrated", json.dumps({
            "from": "format 1 (labels.csv path,score,content_id; state.json)", "labels": len(labels),
            "skips": len(skips), "backup": backup_path.name if labels_path.is_file() else None,
            "time": now_text()}))
        store.write_export(con)


def read_format1_labels(labels_path: Path) -> list[tuple[str, float, str]]:
    """``(path, score, content_id)`` per image of a format-1 labels.csv (the last row of an image wins)."""
    if not labels_path.is_file():
        return []
    out: dict[str, tuple[str, float, str]] = {}
    with open(labels_path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        if "score" not in (reader.fieldnames or []):
            raise ValueError(f"{labels_path} has columns {reader.fieldnames}, not the format-1 "
                             "path,score,content_id: cannot migrate it")
        for row in reader:
            if row.get("path"):
                out[row["path"]] = (row["path"], float(row["score"]), row.get("content_id") or "")
    return list(out.values())
