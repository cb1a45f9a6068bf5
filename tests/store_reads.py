"""Reading a session's label store the way an outsider would (plain sqlite3, not through clipiqa), for the tests
of one process and of many."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from clipiqa.csvio import TMP_SUFFIX


def stored_ratings(folder) -> list[tuple[str, str, float, int]]:
    """``(path, rater, score, is_repeat)`` of every rating not undone, in the order they were written, after
    SQLite's own integrity check of the file."""
    con = sqlite3.connect(Path(folder) / "labels.sqlite")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return con.execute("SELECT CAST(i.path AS TEXT), r.rater, r.score, r.is_repeat FROM ratings r JOIN images i "
                           "ON i.id = r.image WHERE r.undone IS NULL ORDER BY r.seq").fetchall()
    finally:
        con.close()


def temporaries(folder) -> list[str]:
    """Temporary files a writer left in ``folder`` (atomic-write temporaries, SQLite rollback journals)."""
    return [p for p in os.listdir(folder) if p.endswith((TMP_SUFFIX, ".tmp", "-journal"))]
