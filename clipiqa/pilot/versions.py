"""Model versions of a line, with their lineage and an audit trail; the re-labelling cycle that makes new ones.

Every adaptation of a session becomes a *version*: its checkpoint folder (``checkpoints/<name>/``) plus a row in
the session database's ``versions`` table (checkpoint SHA-256, parent version, the labels snapshot it trained on
(hash, count, raters), its config and recipe, its metrics on the **audit set**, who made it and when), and every
promotion, rejection and rollback is a row of ``version_events``. The active version is the session's active
checkpoint, so the labelling panel, ``clipiqa watch`` and the line log all use it.

The audit set is a fixed share of the labelled contents, drawn once (by ``content_id``, seeded) and never trained
on, so that versions made months apart are compared on the same images. The cycle (:func:`relabel_cycle`): adapt
a candidate on all labels outside the audit set, score candidate and active version on the audit set (SRCC with
a bootstrap CI, and the gate's error rates when a gate is given), promote only when the candidate is not worse,
or when an override with a reason is given (recorded).
"""
from __future__ import annotations

import getpass
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT PRIMARY KEY, sha256 TEXT, parent TEXT, created TEXT NOT NULL, who TEXT, labels_hash TEXT,
    n_labels INTEGER, raters TEXT, config TEXT, audit TEXT, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS version_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, name TEXT, action TEXT NOT NULL, reason TEXT,
    who TEXT);
CREATE TABLE IF NOT EXISTS audit_set (path TEXT PRIMARY KEY, content_id TEXT, drawn TEXT NOT NULL);
"""
AUDIT_SHARE = 0.2
MIN_AUDIT = 6
"""An audit set needs at least this many labelled images (else the cycle says so and promotes nothing)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


class VersionLog:
    """The versions, events and audit-set tables of a session database."""

    def __init__(self, database: str | Path, timeout: float = 30.0):
        self.con = sqlite3.connect(str(database), timeout=timeout, isolation_level=None)
        self.con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self.con.executescript(SCHEMA)

    def close(self) -> None:
        self.con.close()

    def event(self, name: str | None, action: str, reason: str = "", who: str | None = None) -> None:
        with self.con:
            self.con.execute("INSERT INTO version_events (time, name, action, reason, who) VALUES (?, ?, ?, ?, ?)",
                             (_now(), name, action, reason, who or _who()))

    def add(self, name: str, **fields: Any) -> None:
        row = {"name": name, "created": _now(), "who": _who(), "status": "candidate", **fields}
        for key in ("raters", "config", "audit"):
            if key in row and not isinstance(row[key], str):
                row[key] = json.dumps(row[key], default=str)
        cols = ", ".join(row)
        with self.con:
            self.con.execute(f"INSERT OR REPLACE INTO versions ({cols}) VALUES ({', '.join('?' * len(row))})",
                             tuple(row.values()))

    def set_status(self, name: str, status: str) -> None:
        with self.con:
            self.con.execute("UPDATE versions SET status = ? WHERE name = ?", (status, name))

    def table(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM versions ORDER BY created, name", self.con)

    def events(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM version_events ORDER BY id", self.con)

    def audit_paths(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT path FROM audit_set ORDER BY path")]

    def set_audit(self, rows: pd.DataFrame) -> None:
        with self.con:
            self.con.executemany("INSERT OR IGNORE INTO audit_set (path, content_id, drawn) VALUES (?, ?, ?)",
                                 [(r.path, str(r.content_id), _now()) for r in rows.itertuples(index=False)])


def ensure_audit_set(session, log: VersionLog, share: float = AUDIT_SHARE, seed: int = 0) -> list[str]:
    """The session's audit set: drawn once from the labelled images by content (seeded) and kept fixed after."""
    have = log.audit_paths()
    if have:
        return have
    table = session.labelled_table()
    if len(table) < MIN_AUDIT / share:
        return []
    from ..data.splits import split_dataset
    if "content_id" not in table.columns:
        table = table.assign(content_id=None)
    blank = table["content_id"].astype(str).str.strip().isin(["", "nan", "None"])
    table = table.assign(content_id=table["content_id"].where(~blank, None))  # no content: its own group
    held = split_dataset(table, seed=seed, train_frac=1 - share, by="content").test
    log.set_audit(held)
    log.event(None, "audit-set", f"{len(held)} images by content (share {share}, seed {seed})")
    return log.audit_paths()


def audit_metrics(model, audit: pd.DataFrame, gate=None, n_boot: int = 1000) -> dict[str, Any]:
    """SRCC of the model's margins against the audit MOS with a bootstrap CI (and the gate's error rates)."""
    from ..metrics import bootstrap_ci, srcc
    from ..scoring import score_files
    scored = score_files(model, list(audit["path"]))
    ok = scored["status"] == "ok"
    margins, mos = scored.loc[ok, "logit_margin"].to_numpy(), audit.loc[ok.to_numpy(), "mos"].to_numpy()
    lo, hi = bootstrap_ci(margins, mos, "srcc", n_boot=n_boot)
    out = {"n": int(ok.sum()), "srcc": srcc(margins, mos), "srcc_ci": [lo, hi]}
    if gate is not None:
        acceptable = mos >= gate.pass_at
        passed = margins >= gate.threshold
        out["false_accept_rate"] = float(np.mean(passed[~acceptable])) if (~acceptable).any() else None
        out["false_reject_rate"] = float(np.mean(~passed[acceptable])) if acceptable.any() else None
    return out


def not_worse(candidate: dict[str, Any], active: dict[str, Any]) -> tuple[bool, str]:
    """The promotion rule: SRCC on the audit set at least the active version's, and (with a gate) no higher
    false-accept rate. Returns the verdict and the reason in words."""
    if candidate["srcc"] != candidate["srcc"]:
        return False, "the candidate's audit SRCC is undefined"
    if candidate["srcc"] < active["srcc"]:
        return False, f"audit SRCC {candidate['srcc']:.3f} < active {active['srcc']:.3f}"
    fa_c, fa_a = candidate.get("false_accept_rate"), active.get("false_accept_rate")
    if fa_c is not None and fa_a is not None and fa_c > fa_a:
        return False, f"false-accept rate {fa_c:.3f} > active {fa_a:.3f}"
    return True, f"audit SRCC {candidate['srcc']:.3f} >= active {active['srcc']:.3f}"


def promote(session, log: VersionLog, name: str | None, reason: str, action: str = "promoted") -> None:
    """Make ``name`` (None: zero-shot) the active version and record it; the previous one is retired."""
    previous = session.active_checkpoint
    session.use_checkpoint(name)
    if previous and previous != name:
        log.set_status(previous, "retired")
    if name:
        log.set_status(name, "active")
    log.event(name, action, reason)


def rollback(session, log: VersionLog, reason: str = "rollback") -> str | None:
    """Re-activate the version that was active before the current one (from the event log); returns its name."""
    events = log.events()
    activations = [r.name for r in events.itertuples() if r.action in ("promoted", "rolled-back-to")]
    current = session.active_checkpoint
    earlier = [n for n in activations if n != current]
    if not earlier:
        raise ValueError(f"no earlier version to roll back to in {session.folder} (active: {current or 'zero-shot'})")
    target = earlier[-1]
    if current:
        log.set_status(current, "rolled-back")
    session.use_checkpoint(target)
    log.set_status(target, "active")
    log.event(target, "rolled-back-to", f"{reason} (from {current})")
    return target


def relabel_cycle(session, config=None, *, gate=None, override: str | None = None, device: str | None = None,
                  on_step: Callable[[dict], None] | None = None, seed: int = 0) -> dict[str, Any]:
    """One cycle: adapt a candidate on the labels outside the audit set, compare it with the active version on
    the audit set, and promote it only if it is not worse (or with ``override``, a reason that is recorded)."""
    from ..explain.prompt_words import prompt_words
    from ..finetune import AdaptConfig, adapt
    from ..session.checkpoints import new_checkpoint_dir, save_adapted
    from ..data.splits import split_hash
    log = VersionLog(session.database_path)
    try:
        audit_paths = set(ensure_audit_set(session, log, seed=seed))
        table = session.labelled_table()
        audit = table[table["path"].isin(audit_paths)].reset_index(drop=True)
        train = table[~table["path"].isin(audit_paths)].reset_index(drop=True)
        if len(audit) < MIN_AUDIT or len(train) < 2:
            raise ValueError(f"{len(table)} labelled images: a re-labelling cycle needs at least "
                             f"{int(MIN_AUDIT / AUDIT_SHARE)} (a fixed {int(AUDIT_SHARE * 100)} % audit set of "
                             f"{MIN_AUDIT} or more, and the rest to train); label more images first")
        config = config or AdaptConfig()
        parent = session.active_checkpoint
        active_metrics = audit_metrics(session.model, audit, gate)
        model = session.fresh_model(device)
        before = prompt_words(model)
        history = adapt(model, train, config, on_step=on_step)
        target = new_checkpoint_dir(session.checkpoints_dir, None, len(train))
        save_adapted(model, target, config, history, train, None, session.folder, seed, prompt_words_before=before)
        candidate_metrics = audit_metrics(model, audit, gate)
        from ..checkpoint import read_checkpoint
        sha = read_checkpoint(target).card["integrity"]["sha256"]
        log.add(target.name, sha256=sha, parent=parent, labels_hash=split_hash(train), n_labels=len(train),
                raters=session.raters, config=config.to_dict(), audit={"candidate": candidate_metrics,
                                                                        "active": active_metrics})
        log.event(target.name, "registered", f"trained on {len(train)} labels; parent {parent or 'zero-shot'}")
        ok, why = not_worse(candidate_metrics, active_metrics)
        if history.stopped:
            ok, why = False, "the run was stopped early"
        if ok or override:
            promote(session, log, target.name, why if ok else f"override: {override} ({why})")
            decision = "promoted" if ok else "promoted by override"
        else:
            log.set_status(target.name, "rejected")
            log.event(target.name, "rejected", why)
            decision = "kept the active version"
        return {"candidate": target.name, "parent": parent, "decision": decision, "reason": why,
                "candidate_audit": candidate_metrics, "active_audit": active_metrics, "n_train": len(train),
                "n_audit": len(audit)}
    finally:
        log.close()


def label_history(session) -> pd.DataFrame:
    """Every rating and undo of the session (rater, time, score, repeat flag), oldest first, for the audit."""
    return session.ratings(include_undone=True)
