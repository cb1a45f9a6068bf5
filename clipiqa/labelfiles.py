"""What can happen to the label store's files, and what the user is told (issue 23): the errors of
:mod:`clipiqa.labelstore`, one line each naming the file and what to do; the check that the database file is
still the one a connection writes; and the export's backups.

Why apart from the store: the store is one class around one SQL schema; these are the file-system facts around
it (a damaged, read-only, deleted or replaced file, an export that would shrink), each a plain function.

* **A deleted, replaced or emptied database under an open connection**: SQLite keeps writing into the file it
  opened, so after ``rm labels.sqlite`` every rating went into an unlinked file and vanished with the kernel.
  The store compares the file's device and inode (and size: a database in WAL mode is never 0 bytes, setting the
  mode writes its header) before each write (:func:`file_change`) and refuses.
* **The export is the last copy of the labels when the database is lost**, so a rewrite never shrinks it
  silently: a shorter export first copies the file into ``backups/`` (:func:`backup_copy`), and an empty export
  from a database without any rating never replaces one with rows (:func:`empty_export_refused`).
* **The advice never loses labels**: a damaged database is to be kept and either restored or moved aside (the
  Session then rebuilds the ratings from labels.csv, :mod:`clipiqa.session.recover`), never deleted.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import os
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from .csvio import ENCODING, ERRORS

BACKUPS = "backups"  # beside the export: copies of it made before a rewrite that shrinks it
OPENING = "opening the label store"  # the ``what`` of the store's first transaction (nothing to be "saved")


class LabelNotSaved(OSError):
    """A write to the label store failed and was rolled back: the store and its export are as they were."""


class LabelStoreUnusable(LabelNotSaved):
    """The database cannot be used as it is (damaged, read-only, deleted or replaced under an open Session, or
    empty beside an export with rows): nothing was changed; the message names the file and what to do."""


def identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def file_change(path: Path, known: tuple[int, int] | None) -> str | None:
    """How the database file at ``path`` differs from the file ``known`` (device, inode) that a connection
    writes: ``"deleted"``, ``"replaced by another file"``, ``"emptied (0 bytes)"``, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "deleted"
    if known is not None and (st.st_dev, st.st_ino) != known:
        return "replaced by another file"
    return "emptied (0 bytes)" if st.st_size == 0 else None


def is_damage(error: BaseException) -> bool:
    """SQLite's words for a file that is not (or no longer) a readable database."""
    text = str(error)
    return isinstance(error, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text)


def unusable(path: Path, export: Path | None, error: BaseException | None, what: str | None = None,
             gone: str | None = None) -> LabelStoreUnusable:
    """The one-line error for a database that cannot be used: what happened to which file, and what to do.

    error: the SQLite error (or None); what: the change that was not saved (None: opening the store);
    gone: what :func:`file_change` found."""
    text = "" if error is None else f" ({type(error).__name__}: {error})"
    head = f"{what} was NOT saved: " if what and what != OPENING else ""
    kept = f", {export.name} included" if export is not None else ""
    source = export.name if export is not None else "the export"
    reopen = ("open the session again (Session.open(folder)): it reads the database that is there now, or, when "
              f"it is missing or empty, rebuilds it from the labels in {source}")
    lower = str(error).lower()
    if gone is not None:
        code, problem, todo = errno.ENOENT, f"{path} was {gone} while this session had it open", reopen
    elif "locked" in lower or "busy" in lower:
        code, problem = errno.EBUSY, f"another connection holds {path} locked"
        todo = "try again; if it stays locked, close the other kernels or processes that use this session"
    elif "readonly" in lower or "read-only" in lower or not writable(path):
        code, problem = errno.EROFS, f"{path} or its folder is read-only"
        todo = ("make the session folder and its files writable (chmod u+w, or remount the disk read-write), or "
                "copy the folder somewhere writable and open the copy")
    elif error is not None and is_damage(error):
        code, problem = errno.EIO, f"{path} is damaged"
        todo = (f"keep a copy of it; then restore {path.name} from a backup, or rename it (e.g. to "
                f"{path.name}.damaged) and open the session again, which rebuilds the labels from {source} "
                f"('sqlite3 {path.name} \".recover\"' may rescue more of it, such as each rater's ratings)")
    else:
        code, problem, todo = errno.EIO, f"cannot open {path}", reopen
    return LabelStoreUnusable(code, f"{head}{problem}{text}; nothing was changed{kept}. What to do: {todo}")


def not_saved(path: Path, export: Path | None, timeout: float, error: BaseException, what: str
              ) -> LabelNotSaved:
    """The error for a write that failed and was rolled back: a full disk, a lock held too long, or (through
    :func:`unusable`) a damaged or read-only database."""
    text = str(error)
    if isinstance(error, sqlite3.DatabaseError) and any(
            k in text for k in ("readonly", "malformed", "not a database", "unable to open")):
        return unusable(path, export, error, what)
    full = "full" in text or getattr(error, "errno", None) == errno.ENOSPC
    locked = "locked" in text or "busy" in text
    hint = (f"the disk holding {path.parent} is full: free some space and try again" if full else
            f"another writer held {path.name} for more than {timeout:g} s; try again" if locked
            else "see the error above")
    code = errno.ENOSPC if full else errno.EBUSY if locked else getattr(error, "errno", None) or errno.EIO
    done = "failed" if what == OPENING else "was NOT saved"
    return LabelNotSaved(code, f"{what} {done} ({type(error).__name__}: {text}); {path.name} and its export are "
                               f"unchanged; {hint}")


def empty_export_refused(export: Path, database: Path, rows: int) -> LabelStoreUnusable:
    return LabelStoreUnusable(errno.EEXIST, (
        f"refusing to replace {export} ({rows} labelled images) with an empty export: {database} holds no "
        "rating at all (was it emptied or replaced?); nothing was changed. What to do: open the session again "
        f"(Session.open(folder)): it imports the labels from {export.name} into the database"))


def writable(path: Path) -> bool:
    """False when ``path`` (if it exists) or its existing folder cannot be written (permissions, read-only disk)."""
    if not path.parent.is_dir():
        return True
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_stamp(path: Path) -> str:
    """Size and modification time of a file: unchanged stamp, unchanged file (to trust a recorded row count)."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def rows_on_disk(export: Path, recorded_rows: str | None, recorded_stamp: str | None) -> int:
    """Data rows of the export file now (0 when there is none): the count the last export recorded while the
    file is unchanged since (same :func:`export_stamp`), else counted."""
    try:
        stamp = export_stamp(export)
    except FileNotFoundError:
        return 0
    if recorded_rows is not None and recorded_stamp == stamp:
        return int(recorded_rows)
    return count_csv_rows(export)


def count_csv_rows(path: str | os.PathLike) -> int:
    """Records after the header of a CSV file (quoted line breaks inside a value do not count)."""
    with open(path, newline="", encoding=ENCODING, errors=ERRORS) as f:
        return max(sum(1 for row in csv.reader(f) if row) - 1, 0)


def backup_copy(path: str | os.PathLike) -> Path:
    """Copy ``path`` into ``backups/`` beside it as ``<stem>-<UTC time><suffix>`` (never overwriting one)."""
    path = Path(path)
    folder = path.parent / BACKUPS
    folder.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target, n = folder / f"{path.stem}-{stamp}{path.suffix}", 1
    while target.exists():
        target, n = folder / f"{path.stem}-{stamp}-{n}{path.suffix}", n + 1
    shutil.copy2(path, target)
    return target


__all__ = ["LabelNotSaved", "LabelStoreUnusable", "BACKUPS", "OPENING", "file_change", "identity", "unusable", "not_saved",
           "empty_export_refused", "backup_copy", "count_csv_rows", "rows_on_disk", "sha256_of", "export_stamp",
           "is_damage"]
