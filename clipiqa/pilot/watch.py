"""The line monitor: score the images a line drops into a folder, once each, log every decision, watch for drift.

Everything lives in the session's SQLite database (beside the labels, WAL mode, one transaction per image):
- ``line_log``: one row per scored file (path, SHA-256 of its bytes, time, margin, score, decision, the model
  version that made it, status/error, the embedding for the drift test). A file whose bytes were logged before is
  never scored again, so a restart after Ctrl-C or a crash resumes where it stopped and a second pass over an
  unchanged folder scores nothing.
- ``drift_log``: each pass's drift test of the recent window against the reference window (see
  :mod:`clipiqa.pilot.drift`), for the current model version only (another version's margins do not compare).
- ``label_requests``: images worth a label next (near the gate's threshold, or from a drifted window), which the
  labelling panel's "suggest next" shows first.

``watch_once`` is one pass (what ``clipiqa watch --once`` runs); ``clipiqa watch`` repeats it every few seconds.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..hashing import file_sha256
from .drift import DriftReport, drift_report
from .gate import Gate

SCHEMA = """
CREATE TABLE IF NOT EXISTS line_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, sha256 TEXT NOT NULL, time TEXT NOT NULL,
    margin REAL, score REAL, decision TEXT, model_version TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    embedding BLOB);
CREATE INDEX IF NOT EXISTS line_log_sha256 ON line_log (sha256);
CREATE TABLE IF NOT EXISTS drift_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, model_version TEXT NOT NULL, n_reference INTEGER,
    n_recent INTEGER, ks_statistic REAL, ks_pvalue REAL, mmd2 REAL, mmd_pvalue REAL, drifted INTEGER, reason TEXT);
CREATE TABLE IF NOT EXISTS label_requests (
    path TEXT PRIMARY KEY, reason TEXT NOT NULL, time TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class LineLog:
    """The line's tables in a session database (created when missing; other tables are left alone)."""

    def __init__(self, database: str | os.PathLike, timeout: float = 30.0):
        self.path = Path(database)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"session folder {self.path.parent} does not exist; create the session first "
                                    "(notebook 02 or clipiqa.session.Session.open) or give the right --session")
        try:
            # check_same_thread=False: a dashboard refreshes from a background thread (its own lock serialises
            # the use; sqlite3 itself is built thread-safe)
            self.con = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
            self.con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self.con.execute("PRAGMA journal_mode = WAL")
            self.con.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise OSError(f"{self.path} cannot be used as the line log ({e}); check the file is a clipiqa session "
                          "database on a local disk") from e

    def close(self) -> None:
        self.con.close()

    def known_hashes(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT sha256 FROM line_log")}

    def append(self, path: str, sha256: str, margin: float | None, score: float | None, decision: str | None,
               version: str, status: str, error: str = "", embedding: np.ndarray | None = None) -> None:
        blob = None if embedding is None else np.asarray(embedding, np.float32).tobytes()
        with self.con:  # one transaction per image: a kill loses at most the image being written
            self.con.execute("INSERT INTO line_log (path, sha256, time, margin, score, decision, model_version, "
                             "status, error, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (path, sha256, _now(), margin, score, decision, version, status, error, blob))

    def rows(self, version: str | None = None) -> list[dict]:
        """Logged rows, oldest first (embeddings as float32 arrays), of one model version or all."""
        sql = ("SELECT id, path, sha256, time, margin, score, decision, model_version, status, error, embedding "
               "FROM line_log" + (" WHERE model_version = ?" if version else "") + " ORDER BY id")
        keys = ("id", "path", "sha256", "time", "margin", "score", "decision", "model_version", "status", "error",
                "embedding")
        out = []
        for r in self.con.execute(sql, (version,) if version else ()):
            row = dict(zip(keys, r))
            row["embedding"] = None if row["embedding"] is None else np.frombuffer(row["embedding"], np.float32)
            out.append(row)
        return out

    def log_drift(self, version: str, report: DriftReport) -> None:
        d = report.to_dict()
        with self.con:
            self.con.execute("INSERT INTO drift_log (time, model_version, n_reference, n_recent, ks_statistic, "
                             "ks_pvalue, mmd2, mmd_pvalue, drifted, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (_now(), version, d["n_reference"], d["n_recent"], d["ks_statistic"], d["ks_pvalue"],
                              d["mmd2"], d["mmd_pvalue"], None if d["drifted"] is None else int(d["drifted"]),
                              d["reason"]))

    def request_labels(self, paths: Sequence[str], reason: str) -> int:
        """Queue images for labelling (an image already queued keeps its first reason); returns how many are new."""
        with self.con:
            before = self.con.total_changes
            self.con.executemany("INSERT OR IGNORE INTO label_requests (path, reason, time) VALUES (?, ?, ?)",
                                 [(p, reason, _now()) for p in paths])
            return self.con.total_changes - before

    def label_requests(self) -> list[tuple[str, str]]:
        return list(self.con.execute("SELECT path, reason FROM label_requests ORDER BY rowid"))


def queued_requests(database: str | os.PathLike) -> list[str]:
    """The label queue of a session database (oldest first), read-only: empty when no line log exists yet."""
    if not os.path.isfile(database):
        return []
    con = sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in con.execute("SELECT path FROM label_requests ORDER BY rowid")]
    except sqlite3.OperationalError:  # no label_requests table: no line monitor ran on this session
        return []
    finally:
        con.close()


@dataclass
class WatchResult:
    """What one pass did: files scored (and of them failed), files already logged, the drift test, requests."""

    scored: int = 0
    failed: int = 0
    known: int = 0
    drift: DriftReport | None = None
    requested: int = 0
    decisions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"scored": self.scored, "failed": self.failed, "already_logged": self.known,
                "decisions": self.decisions, "label_requests_added": self.requested,
                "drift": None if self.drift is None else self.drift.to_dict()}


def model_version(identity: dict) -> str:
    """The version string the line log records for a model identity (``pilot.gate.model_identity``): the
    checkpoint's SHA-256, or ``zero-shot:<backbone fingerprint>``."""
    return identity.get("checkpoint_sha256") or f"zero-shot:{identity.get('fingerprint')}"


def watch_once(model, paths: Sequence[str], log: LineLog, version: str, *, gate: Gate | None = None,
               reference: int = 50, window: int = 50, alpha: float = 0.01, near: float | None = None,
               batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> WatchResult:
    """Score the files of ``paths`` not logged yet, log them, test drift and queue label requests.

    reference / window: the first ``reference`` and the last ``window`` ok rows of this model version are the two
    windows of the drift test. near: margins within ``near`` of the gate's threshold are queued for labels
    (default a quarter of the reference window's margin standard deviation)."""
    from ..scoring import score_files
    known = log.known_hashes()
    result = WatchResult()
    todo = []
    for p in paths:
        try:
            sha = file_sha256(p)
        except OSError as e:
            log.append(p, "", None, None, None, version, "error", f"cannot read {p}: {e}")
            result.failed += 1
            continue
        if sha in known:
            result.known += 1
            continue
        known.add(sha)
        todo.append((p, sha))
    if todo:
        table = score_files(model, [p for p, _ in todo], batch_size=batch_size, with_features=True, progress=progress)
        by_path = {row.path: row for row in table.itertuples(index=False)}
        decisions = gate.decide(table["logit_margin"].where(table["status"] == "ok")) if gate else [None] * len(table)
        decision_of = dict(zip(table["path"], decisions))
        for p, sha in todo:
            row = by_path.get(p)
            if row is None or row.status != "ok":
                log.append(p, sha, None, None, None, version, "error", "" if row is None else row.error)
                result.failed += 1
                continue
            decision = decision_of.get(p)
            log.append(p, sha, row.logit_margin, row.score, decision, version, "ok", "", row.features)
            result.scored += 1
            if decision:
                result.decisions[decision] = result.decisions.get(decision, 0) + 1
    rows = [r for r in log.rows(version) if r["status"] == "ok"]
    ref, recent = rows[:reference], rows[reference:][-window:]
    result.drift = drift_report([r["margin"] for r in ref], [r["margin"] for r in recent],
                                np.stack([r["embedding"] for r in ref]) if ref else None,
                                np.stack([r["embedding"] for r in recent]) if recent else None, alpha=alpha)
    log.log_drift(version, result.drift)
    new_paths = {p for p, _ in todo}
    if gate is not None and ref:
        band = near if near is not None else 0.25 * float(np.std([r["margin"] for r in ref]))
        close = [r["path"] for r in rows if r["path"] in new_paths and abs(r["margin"] - gate.threshold) <= band]
        result.requested += log.request_labels(close, f"within {band:.3g} of the gate's threshold")
    if result.drift.drifted:
        picked = recent[:: max(1, len(recent) // 10)][:10]  # a spread of the drifted window, at most 10
        result.requested += log.request_labels([r["path"] for r in picked], result.drift.reason)
    return result
