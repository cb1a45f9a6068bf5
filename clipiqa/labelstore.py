"""The label store: every rating is a row in SQLite, so any number of writers lose nothing.

A labelling :class:`~clipiqa.session.Session` keeps its images and ratings in ``<session>/labels.sqlite``
(stdlib ``sqlite3``, no server). Several Sessions, kernels and processes may rate one folder at the same time:

* **one transaction per rating** (``BEGIN IMMEDIATE`` ... ``COMMIT``): a rating is one ``INSERT``, never a
  rewrite of a file from one object's memory, so two writers cannot overwrite each other's ratings;
* **WAL mode** (readers never block the writer, the writer never blocks readers) and a **busy timeout**
  (a writer waits up to ``timeout`` seconds for another writer's transaction to finish);
* ``synchronous=FULL``: when ``add_rating`` returns, the rating is on disk (it survives a killed process and,
  on a local disk, a power cut). A killed writer's half-done transaction is rolled back by SQLite.

Tables (read them with any SQLite tool; file names are stored as their bytes, so names that are not valid
UTF-8 survive)::

    images(id, path BLOB, content_id BLOB, added)                  one row per image, in the session's order
    ratings(id, seq, image, rater, score, scale, time, is_repeat, undone)
    skips(id, seq, image, rater, time, undone)
    positions(rater, image, time)                                  where each rater was, for resuming
    meta(key, value)                                               schema version, migration record, counters

**Undo is a tombstone**: undoing sets ``undone`` (the time of the undo) on one rating or skip, named by its id,
instead of deleting the row. Every query ignores undone rows, so the effect is that of a delete, but the
history stays auditable (who rated what, and took what back, when). The caller names the row: a Session undoes
the rows it wrote itself, so two tabs rating under one name never take back each other's ratings. ``seq``
orders ratings and skips together (a per-database counter bumped by every write).

**What a rater's label of an image is**: their latest non-undone, non-repeat rating (rating an image again
corrects it; undo brings the earlier one back). Blind repeats (``is_repeat = 1``, see
:mod:`clipiqa.agreement`) measure test-retest agreement and never enter the MOS.

**The export** ``labels.csv`` (``path, mos, mos_std, n_ratings, content_id``; ``mos`` = mean over raters of
their label, ``mos_std`` their sample standard deviation, empty for one rater) is rewritten with
:func:`clipiqa.csvio.write_csv` (atomic: temporary file, fsync, rename) inside the same transaction as every
change of ratings, while the store's write lock is held: so the export always shows the latest committed state
(two writers cannot leave an older snapshot last), and when the export cannot be written (disk full) the rating
is rolled back and the error raised: nothing is half-saved. ``clipiqa.data.read_labels`` reads the export.

**Files that go wrong** (:mod:`clipiqa.labelfiles`): an export that would shrink is copied into ``backups/``
first, and never replaced by an empty one from a database without ratings; a database deleted, replaced or
emptied under an open connection is refused before the next write; a damaged or read-only one raises
:class:`LabelStoreUnusable`, one line naming the file and what to do.

Long because it is one class around one SQL schema (~490 lines), and every write path shares the same
transaction and export discipline; split, a reader would have to hold two files to check that discipline (the
file-system facts around it, and the messages, are plain functions in :mod:`clipiqa.labelfiles`).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pandas as pd

from .agreement import mos_by_image
from .csvio import cleanup_stale_temps, write_csv
from .labelfiles import (OPENING, LabelNotSaved, LabelStoreUnusable, backup_copy, empty_export_refused,
                         export_stamp, file_change, identity, is_damage, not_saved, rows_on_disk, sha256_of,
                         unusable)

SCHEMA_VERSION = 1
DB_NAME = "labels.sqlite"
DEFAULT_TIMEOUT = 30.0
EXPORT_COLUMNS = ("path", "mos", "mos_std", "n_ratings", "content_id")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    content_id BLOB NOT NULL DEFAULT x'',
    added TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    image INTEGER NOT NULL REFERENCES images(id),
    rater TEXT NOT NULL,
    score REAL NOT NULL,
    scale TEXT NOT NULL,
    time TEXT NOT NULL,
    is_repeat INTEGER NOT NULL DEFAULT 0 CHECK (is_repeat IN (0, 1)),
    undone TEXT);
CREATE TABLE IF NOT EXISTS skips (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    image INTEGER NOT NULL REFERENCES images(id),
    rater TEXT NOT NULL,
    time TEXT NOT NULL,
    undone TEXT);
CREATE TABLE IF NOT EXISTS positions (
    rater TEXT PRIMARY KEY,
    image INTEGER NOT NULL REFERENCES images(id),
    time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ratings_by_rater ON ratings(rater, undone);
CREATE INDEX IF NOT EXISTS skips_by_rater ON skips(rater, undone);
"""


def encode_name(text: str) -> bytes:
    """A file name (or content id) as stored: UTF-8, with ``surrogateescape`` for names that are not UTF-8."""
    return text.encode("utf-8", "surrogateescape")


def decode_name(data: bytes | str) -> str:
    return data if isinstance(data, str) else bytes(data).decode("utf-8", "surrogateescape")


def now() -> str:
    """UTC time with microseconds, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Rating:
    id: int
    seq: int
    path: str
    rater: str
    score: float
    scale: str
    time: str
    is_repeat: bool


@dataclass(frozen=True)
class Skip:
    id: int
    seq: int
    path: str
    rater: str
    time: str


@dataclass(frozen=True)
class Undone:
    """What :meth:`LabelStore.undo` took back."""

    kind: str  # "rating" or "skip"
    path: str
    is_repeat: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Everything a Session shows, read in one read transaction (a consistent state of the database)."""

    images: tuple[str, ...]
    content_ids: dict[str, str]
    ratings: tuple[Rating, ...]  # not undone, in the order given
    skips: tuple[Skip, ...]  # not undone, in the order given
    positions: dict[str, str]
    meta: dict[str, str]


class LabelStore:
    """The ratings of one session in ``path`` (SQLite); see the module docstring.

    path: the database file (created with its tables when missing).
    export: where to write the ``labels.csv`` export after every change of ratings (None: no export).
    timeout: seconds a writer waits for another writer's transaction (SQLite's busy timeout).
    """

    def __init__(self, path: str | os.PathLike, export: str | os.PathLike | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.path = Path(path)
        self.export_path = None if export is None else Path(export)
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        self._pid = -1
        self._writes = 0  # bumped by this object's commits (data_version only sees other connections')
        self._exported = False  # the export file was replaced inside the open transaction
        self._opened = False
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file this connection writes
        with self.write(OPENING) as con:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?), ('seq', '0')",
                        (str(SCHEMA_VERSION),))
        schema = self.get_meta("schema")
        if schema != str(SCHEMA_VERSION):
            raise ValueError(f"{self.path} has label-store schema {schema}; this clipiqa reads schema "
                             f"{SCHEMA_VERSION}: update clipiqa")

    # ------------------------------------------------------------------ connection and transactions
    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a connection must not cross a fork: a forked child opens its own)."""
        if self._con is None or self._pid != os.getpid():
            # the first connection may create the file; later ones must find it (a deleted database is an error,
            # never silently replaced by an empty one)
            mode = "rw" if self._opened else "rwc"
            gone = file_change(self.path, self._identity) if self._opened else None
            if gone is not None:
                raise unusable(self.path, self.export_path, None, None, gone)
            try:
                con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True, timeout=self.timeout,
                                      isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as e:
                raise unusable(self.path, self.export_path, e) from None
            try:
                con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise OSError(f"{self.path}: SQLite cannot use WAL mode here (journal_mode={mode}); keep the "
                                  "session on a local disk, not a network share")
                con.execute("PRAGMA synchronous = FULL")
                con.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as e:
                con.close()
                raise unusable(self.path, self.export_path, e) from None
            except BaseException:
                con.close()
                raise
            self._opened = True
            self._identity = identity(self.path)
            self._con, self._pid = con, os.getpid()
        return self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None and self._pid == os.getpid():
                self._con.close()
            self._con = None

    @contextlib.contextmanager
    def write(self, what: str = "the change") -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the write lock at once, waiting up to
        ``timeout``). On any error it is rolled back and a :class:`LabelNotSaved` names what was not saved."""
        with self._lock:
            con = self._connection()
            gone = file_change(self.path, self._identity)  # never write into a deleted or replaced file
            if gone is not None:
                raise unusable(self.path, self.export_path, None, what, gone)
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise not_saved(self.path, self.export_path, self.timeout, e, what) from e
            self._exported = False
            try:
                yield con
                con.execute("COMMIT")
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                if self._exported:  # the export already showed the rolled-back change: rewrite it (best effort)
                    self._restore_export(con)
                if isinstance(e, (sqlite3.Error, OSError)) and not isinstance(e, LabelNotSaved):
                    raise not_saved(self.path, self.export_path, self.timeout, e, what) from e
                raise
            finally:
                self._exported = False
            self._writes += 1

    def _restore_export(self, con: sqlite3.Connection) -> None:
        with contextlib.suppress(Exception):
            con.execute("BEGIN IMMEDIATE")
            try:
                self.write_export(con)
            finally:
                con.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one committed state."""
        with self._lock:
            con = self._connection()
            try:
                con.execute("BEGIN")
            except sqlite3.DatabaseError as e:
                raise unusable(self.path, self.export_path, e) from None
            try:
                yield con
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("COMMIT")
                if is_damage(e):
                    raise unusable(self.path, self.export_path, e) from None
                raise
            con.execute("COMMIT")

    def version(self) -> tuple[int, int]:
        """Changes whenever anyone committed: ``(data_version, this object's commits)``; cache keys."""
        with self._lock:
            return self._connection().execute("PRAGMA data_version").fetchone()[0], self._writes

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    @staticmethod
    def set_meta(con: sqlite3.Connection, key: str, value: str) -> None:
        con.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                    "excluded.value", (key, str(value)))

    @staticmethod
    def _next_seq(con: sqlite3.Connection) -> int:
        con.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'seq'")
        return int(con.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> Snapshot:
        with self.read() as con:
            images, content = [], {}
            ids: dict[int, str] = {}
            for i, path, cid in con.execute("SELECT id, path, content_id FROM images ORDER BY id"):
                p = decode_name(path)
                images.append(p)
                ids[i] = p
                if cid:
                    content[p] = decode_name(cid)
            ratings = tuple(Rating(r[0], r[1], ids[r[2]], r[3], float(r[4]), r[5], r[6], bool(r[7])) for r in
                            con.execute("SELECT id, seq, image, rater, score, scale, time, is_repeat FROM ratings "
                                        "WHERE undone IS NULL ORDER BY seq"))
            skips = tuple(Skip(s[0], s[1], ids[s[2]], s[3], s[4]) for s in
                          con.execute("SELECT id, seq, image, rater, time FROM skips WHERE undone IS NULL "
                                      "ORDER BY seq"))
            positions = {r: ids[i] for r, i in con.execute("SELECT rater, image FROM positions")}
            meta = dict(con.execute("SELECT key, value FROM meta"))
        return Snapshot(tuple(images), content, ratings, skips, positions, meta)

    def ratings_table(self, include_undone: bool = False) -> pd.DataFrame:
        """Every rating row: ``id, image (path), rater, score, scale, time, is_repeat, undone``, oldest first."""
        where = "" if include_undone else "WHERE r.undone IS NULL"
        with self.read() as con:
            rows = con.execute(f"SELECT r.id, i.path, r.rater, r.score, r.scale, r.time, r.is_repeat, r.undone "
                               f"FROM ratings r JOIN images i ON i.id = r.image {where} ORDER BY r.seq").fetchall()
        table = pd.DataFrame(rows, columns=["id", "image", "rater", "score", "scale", "time", "is_repeat",
                                            "undone"])
        table["image"] = [decode_name(p) for p in table["image"]]
        table["is_repeat"] = table["is_repeat"].astype(bool)
        table["score"] = table["score"].astype(float)
        return table

    # ------------------------------------------------------------------ writes
    def _image_id(self, con: sqlite3.Connection, path: str) -> int:
        row = con.execute("SELECT id FROM images WHERE path = ?", (encode_name(path),)).fetchone()
        if row is None:
            raise KeyError(f"{path} is not one of the images in {self.path}")
        return row[0]

    def add_images(self, rows: Iterable[tuple[str, str]], con: sqlite3.Connection | None = None) -> int:
        """Add ``(path, content_id)`` rows not yet known (order kept; a known image gets a content id only if it
        had none); returns how many images were added. One transaction (or inside ``con``'s)."""
        rows = list(rows)
        if not rows:
            return 0
        if con is None:
            with self.write("adding images") as con:
                return self.add_images(rows, con)
        added, stamp, changed = 0, now(), False
        for path, cid in rows:
            cur = con.execute("INSERT OR IGNORE INTO images(path, content_id, added) VALUES (?, ?, ?)",
                              (encode_name(path), encode_name(cid or ""), stamp))
            if cur.rowcount:
                added += 1
            elif cid:
                changed |= con.execute("UPDATE images SET content_id = ? WHERE path = ? AND content_id = x''",
                                       (encode_name(cid), encode_name(path))).rowcount > 0
        if changed:
            self.write_export(con)
        return added

    def add_rating(self, path: str, rater: str, score: float, scale: str, *, repeat: bool = False,
                   time: str | None = None, con: sqlite3.Connection | None = None, export: bool = True) -> int:
        """Store one rating; returns its id. When this returns, the rating is committed (and exported).
        With ``con``, the rating joins that transaction (committed with it)."""
        if con is None:
            with self.write(f"the rating of {os.path.basename(path)}") as con:
                return self.add_rating(path, rater, score, scale, repeat=repeat, time=time, con=con,
                                       export=export)
        cur = con.execute("INSERT INTO ratings(seq, image, rater, score, scale, time, is_repeat) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (self._next_seq(con), self._image_id(con, path), rater, float(score), scale,
                           time or now(), int(bool(repeat))))
        if export and not repeat:
            self.write_export(con)
        return int(cur.lastrowid)

    def add_skip(self, path: str, rater: str, con: sqlite3.Connection | None = None) -> int:
        if con is None:
            with self.write(f"the skip of {os.path.basename(path)}") as con:
                return self.add_skip(path, rater, con)
        cur = con.execute("INSERT INTO skips(seq, image, rater, time) VALUES (?, ?, ?, ?)",
                          (self._next_seq(con), self._image_id(con, path), rater, now()))
        return int(cur.lastrowid)

    def undo(self, kind: str, row_id: int) -> Undone | None:
        """Take back one rating or skip (``kind`` ``"rating"`` or ``"skip"``, ``row_id`` as returned by
        :meth:`add_rating` / :meth:`add_skip`): a tombstone (``undone`` is set). None when that row is already
        undone. The caller names the row, so an undo never reaches a row another writer added."""
        if kind not in ("rating", "skip"):
            raise ValueError(f"kind={kind!r}: use 'rating' or 'skip'")
        table, repeat = ("ratings", "x.is_repeat") if kind == "rating" else ("skips", "0")
        with self.write("the undo") as con:
            row = con.execute(f"SELECT i.path, {repeat} FROM {table} x JOIN images i ON i.id = x.image "
                              "WHERE x.id = ? AND x.undone IS NULL", (int(row_id),)).fetchone()
            if row is None:
                return None
            con.execute(f"UPDATE {table} SET undone = ? WHERE id = ?", (now(), int(row_id)))
            if kind == "rating" and not row[1]:
                self.write_export(con, may_drop=1)  # the one row this undo empties: its tombstone keeps it
            return Undone(kind, decode_name(row[0]), bool(row[1]))

    def set_position(self, rater: str, path: str) -> None:
        with self.write("the position") as con:
            con.execute("INSERT INTO positions(rater, image, time) VALUES (?, ?, ?) ON CONFLICT(rater) DO UPDATE "
                        "SET image = excluded.image, time = excluded.time", (rater, self._image_id(con, path), now()))

    # ------------------------------------------------------------------ export
    def export_table(self, con: sqlite3.Connection | None = None) -> pd.DataFrame:
        """The per-image export (``EXPORT_COLUMNS``), images with at least one label, in session order; the
        statistics are :func:`clipiqa.agreement.mos_by_image` of each rater's latest non-repeat rating."""
        if con is None:
            with self.read() as con:
                return self.export_table(con)
        stats = mos_by_image(con.execute(
            "SELECT image, score FROM (SELECT image, rater, score, max(seq) FROM ratings WHERE undone IS NULL "
            "AND is_repeat = 0 GROUP BY image, rater) ORDER BY image"))
        rows = [(decode_name(path), *stats[i], decode_name(cid)) for i, path, cid in
                con.execute("SELECT id, path, content_id FROM images ORDER BY id") if i in stats]
        columns = list(zip(*rows)) if rows else [[]] * 5
        return pd.DataFrame({"path": pd.Series(columns[0], dtype=object),
                             "mos": pd.Series(columns[1], dtype=float),
                             "mos_std": pd.Series(columns[2], dtype=float),
                             "n_ratings": pd.Series(columns[3], dtype=int),
                             "content_id": pd.Series(columns[4], dtype=object)})

    def write_export(self, con: sqlite3.Connection, may_drop: int = 0) -> None:
        """Rewrite the export from ``con``'s (uncommitted) state; called inside write transactions.

        The export may be the last copy of the labels, so it never shrinks silently: with fewer rows than the
        file has now (beyond ``may_drop``), the file is first copied into ``backups/``; and an empty export
        from a database that holds no rating at all never replaces an export with rows."""
        if self.export_path is None:
            return
        table = self.export_table(con)
        recorded = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('export_rows', 'export_stat')"))
        before = rows_on_disk(self.export_path, recorded.get("export_rows"), recorded.get("export_stat"))
        if len(table) < before - may_drop:
            if len(table) == 0 and con.execute("SELECT 1 FROM ratings LIMIT 1").fetchone() is None:
                raise empty_export_refused(self.export_path, self.path, before)
            backup_copy(self.export_path)
        write_csv(table, self.export_path)
        self._exported = True  # replaced: a rollback after this must rewrite it
        self.set_meta(con, "export_sha256", sha256_of(self.export_path))
        self.set_meta(con, "export_rows", str(len(table)))
        self.set_meta(con, "export_stat", export_stamp(self.export_path))

    def export_is_current(self) -> bool:
        """True when the export file holds exactly what the last committed export wrote (False after a writer
        was killed between replacing the export and committing, or when the file was edited or removed)."""
        if self.export_path is None:
            return True
        try:
            actual = sha256_of(self.export_path)
        except OSError:
            return False
        return actual == self.get_meta("export_sha256")

    def export(self) -> Path | None:
        """Rewrite the export now (under the write lock, so it cannot overwrite a newer one)."""
        if self.export_path is None:
            return None
        with self.write("the labels.csv export") as con:
            self.write_export(con)
        return self.export_path


def cleanup_temporaries(folder: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """Remove temporary files that killed writers left beside ``names`` in ``folder`` (see csvio)."""
    removed: list[str] = []
    for name in names:
        removed += cleanup_stale_temps(folder, name)
    return removed


__all__ = ["LabelStore", "LabelNotSaved", "LabelStoreUnusable", "Snapshot", "Rating", "Skip", "Undone", "DB_NAME",
           "EXPORT_COLUMNS", "encode_name", "decode_name", "cleanup_temporaries"]
