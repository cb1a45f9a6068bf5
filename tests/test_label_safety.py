"""Labels that survive their own error messages: a lost or damaged labels.sqlite never
leads to an emptied labels.csv, a shrinking export is backed up first, undo takes back only what its own
Session object did, and a damaged, read-only or deleted database gives one line naming the file and what to do.

Images are empty files (ratings never decode them); the model is never loaded."""
from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings

import pandas as pd
import pytest

from clipiqa.labelstore import LabelNotSaved, LabelStore, LabelStoreUnusable
from clipiqa.session import DEFAULT_RATER, LabelsRecovered, Session
from store_reads import stored_ratings


def _images(n: int, root) -> pd.DataFrame:
    os.makedirs(root, exist_ok=True)
    paths = [os.path.join(root, f"img{i:03d}.jpg") for i in range(n)]
    for p in paths:
        open(p, "wb").close()
    return pd.DataFrame({"path": paths})


def _export(path) -> dict[str, float]:
    """A labels.csv export as {path: mos}."""
    with open(path, newline="") as f:
        return {r["path"]: float(r["mos"]) for r in csv.DictReader(f)}


def _rated_session(tmp_path, n: int = 5) -> tuple[Session, dict[str, float]]:
    """A session folder with ``n`` rated images (closed, so its database is one file)."""
    s = Session(tmp_path / "s", images=_images(n, tmp_path / "img"), model_name="tiny")
    given = {p: float(1 + i % 5) for i, p in enumerate(s.images)}
    for p, v in given.items():
        s.label(p, v)
    s.close()  # (reading s.images now would open it again)
    return s, given


def _backups(folder) -> list[str]:
    return sorted(os.listdir(folder / "backups")) if (folder / "backups").is_dir() else []


def _remove_database(folder) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{folder / 'labels.sqlite'}{suffix}"):
            os.unlink(f"{folder / 'labels.sqlite'}{suffix}")


def _open_recovering(folder, **kwargs) -> tuple[Session, str]:
    """Session.open expecting exactly one recovery warning; returns the session and the warning's text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Session.open(folder, **kwargs)
    texts = [str(w.message) for w in caught if issubclass(w.category, LabelsRecovered)]
    assert len(texts) == 1, texts
    return s, texts[0]


# ------------------------------------------------------------------------------------------------ a lost database
@pytest.mark.parametrize("with_images", [False, True], ids=["open", "open-with-images"])
def test_a_zero_byte_database_never_wipes_the_labels(tmp_path, with_images):
    """The reported sequence: 5 rated images, labels.sqlite truncated to 0 bytes, Session.open (the old error
    said 'give images=', and doing so rewrote labels.csv from 5 rows to 0). Now the labels come back from
    labels.csv, the export as it was is kept in backups/, and the user is told."""
    s, given = _rated_session(tmp_path)
    original = s.labels_path.read_bytes()
    open(s.database_path, "wb").close()
    extra = {"images": _images(5, tmp_path / "img")} if with_images else {}
    again, told = _open_recovering(s.folder, **extra)
    assert "labels.sqlite was empty (0 bytes)" in told and "labels.csv held 5 labelled images" in told
    assert "'recovered'" in told and "backups" in told
    assert _export(s.labels_path) == given  # the 5 labels survive in labels.csv ...
    (backup,) = _backups(s.folder)
    assert (s.folder / "backups" / backup).read_bytes() == original  # ... and the file as it was, in backups/
    assert again.recovery == told and {p: v["score"] for p, v in again.labels.items()} == given
    assert sorted(again.ratings()["rater"].unique()) == ["recovered"]
    assert again.rater == "recovered"  # the only rater, so the label panel asks for no name
    again.label(again.images[0], 5)  # labelling goes on; the correction replaces the recovered rating
    assert _export(s.labels_path)[again.images[0]] == 5.0
    again.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recovered once: the next open is a plain open
        assert Session.open(s.folder).counts()["labelled"] == 5


def test_a_missing_database_is_rebuilt_from_the_export_not_replaced_by_an_empty_one(tmp_path):
    s, given = _rated_session(tmp_path, 3)
    _remove_database(s.folder)
    again, told = _open_recovering(s.folder)
    assert "labels.sqlite was missing" in told
    assert _export(s.labels_path) == given and len(stored_ratings(s.folder)) == 3


def test_an_empty_store_never_overwrites_an_export_with_rows(tmp_path):
    """The store-level guard (whatever opens the database): no export from a database without any rating
    replaces a labels.csv that has rows."""
    s, given = _rated_session(tmp_path, 3)
    before = s.labels_path.read_bytes()
    store = LabelStore(tmp_path / "other.sqlite", export=s.labels_path)
    with pytest.raises(LabelStoreUnusable) as e:
        store.export()
    text = str(e.value)
    assert "refusing to replace" in text and str(s.labels_path) in text and "other.sqlite" in text
    assert "Session.open" in text and "\n" not in text
    assert s.labels_path.read_bytes() == before


def test_a_shrinking_export_is_backed_up_first(tmp_path):
    """labels.sqlite restored from an older copy (what the damaged-database message suggests) has fewer
    labels than labels.csv: the export shrinks on open, and the longer file is in backups/ first."""
    s = Session(tmp_path / "s", images=_images(5, tmp_path / "img"), model_name="tiny")
    for p in s.images[:3]:
        s.label(p, 2)
    s.close()
    shutil.copy(s.database_path, tmp_path / "old.sqlite")
    s.label(s.images[3], 4)
    s.label(s.images[4], 5)
    s.close()
    longer = s.labels_path.read_bytes()
    shutil.copy(tmp_path / "old.sqlite", s.database_path)
    again = Session.open(s.folder)
    assert len(_export(s.labels_path)) == 3
    (backup,) = _backups(s.folder)
    assert (s.folder / "backups" / backup).read_bytes() == longer
    again.label(again.images[0], 3)
    assert again.undo() == again.images[0]  # undoing a correction keeps the row: no backup
    again.label(again.images[4], 1)
    again.undo()  # the one row an undo removes needs none either (its tombstone keeps the rating)
    assert len(_export(s.labels_path)) == 3 and _backups(s.folder) == [backup]


# ------------------------------------------------------------------------------------------------ undo per object
def test_undo_takes_back_this_objects_own_action_not_the_raters(tmp_path):
    """Two tabs rating as 'default' undid each other's ratings (undo went by rater name)."""
    first = Session(tmp_path / "s", images=_images(4, tmp_path / "img"), model_name="tiny")
    second = Session.open(tmp_path / "s")
    assert first.rater == second.rater == DEFAULT_RATER
    x, y, z, _ = first.images
    first.label(x, 5)
    second.label(y, 1)  # the newest rating of 'default' is second's ...
    assert first.undo() == x  # ... yet first's undo takes back first's own
    assert [p for p, *_ in stored_ratings(first.folder)] == [y]
    assert first.undo() is None  # first has nothing left; second's rating stays
    second.skip(z)
    first.label(z, 3)
    assert second.undo() == z and first.my_labels == {y: 1.0, z: 3.0}  # second's undo un-skips, keeps first's
    assert second.undo() == y and [p for p, *_ in stored_ratings(first.folder)] == [z]


def _child(folder, code: str) -> str:
    """Run ``code`` in another Python process with ``s = Session.open(folder)``; returns its stdout."""
    script = f"from clipiqa.session import Session\ns = Session.open({str(folder)!r})\n{code}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_undo_in_two_processes_takes_back_only_each_ones_own(tmp_path):
    s = Session(tmp_path / "s", images=_images(3, tmp_path / "img"), model_name="tiny")
    x, y, z = s.images
    s.label(x, 4)
    _child(s.folder, f"s.label({y!r}, 2)")  # another kernel, same rater name, rates later
    assert s.undo() == x  # this kernel's undo takes back its own rating, not the other kernel's
    assert [(p, r) for p, r, *_ in stored_ratings(s.folder)] == [(y, DEFAULT_RATER)]
    out = _child(s.folder, f"s.label({z!r}, 3)\nprint(s.undo())\nprint(s.undo())")
    assert out.splitlines() == [z, "None"]  # the child undoes its own rating, then has nothing left
    assert [p for p, *_ in stored_ratings(s.folder)] == [y]


# ------------------------------------------------------------------------------------------------ one-line errors
@pytest.mark.parametrize("damage", ["garbage", "half", "page"])
def test_a_damaged_database_says_which_file_and_what_to_do(tmp_path, damage):
    s, given = _rated_session(tmp_path)
    data = s.database_path.read_bytes()
    if damage == "garbage":
        s.database_path.write_bytes(b"not a database " * 300)
    elif damage == "half":
        s.database_path.write_bytes(data[: len(data) // 2])
    else:  # one page overwritten in the middle of the file
        s.database_path.write_bytes(data[:4106] + b"\xff" * 200 + data[4306:])
    damaged, export = s.database_path.read_bytes(), s.labels_path.read_bytes()
    with pytest.raises(LabelStoreUnusable) as e:
        Session.open(s.folder)
    text = str(e.value)
    assert not isinstance(e.value, sqlite3.Error) and "\n" not in text
    assert f"{s.database_path} is damaged" in text and "rename it" in text and "labels.csv" in text
    assert s.database_path.read_bytes() == damaged and s.labels_path.read_bytes() == export  # nothing touched
    os.rename(s.database_path, f"{s.database_path}.damaged")  # what the message says: move it aside, reopen
    again, told = _open_recovering(s.folder)
    assert _export(s.labels_path) == given and len(again.labels) == 5 and "missing" in told


def test_a_read_only_database_says_which_file_and_what_to_do(tmp_path):
    """A session folder on a read-only disk (or without write permission)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    root = os.geteuid() == 0
    if root:
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True,
                           capture_output=True, timeout=20)
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        s = Session(disk / "s", images=_images(3, tmp_path / "img"), model_name="tiny")
        x, y, _ = s.images
        s.label(x, 4)
        s.close()
        if root:
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True, timeout=20)
        else:
            for p in [s.folder, *s.folder.iterdir()]:
                os.chmod(p, 0o555 if p.is_dir() else 0o444)
        for attempt in (lambda: Session.open(s.folder), lambda: s.label(y, 2)):
            with pytest.raises(LabelNotSaved) as e:
                attempt()
            text = str(e.value)
            assert isinstance(e.value, LabelStoreUnusable) and "\n" not in text, text
            assert f"{s.database_path} or its folder is read-only" in text and "writable" in text, text
        assert _export(s.labels_path) == {x: 4.0}
    finally:
        if root:
            subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True, timeout=20)
        else:
            for p in [disk / "s", *(disk / "s").iterdir()]:
                os.chmod(p, 0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("how", ["deleted", "replaced by another file", "emptied (0 bytes)"])
def test_a_database_deleted_under_an_open_session_takes_no_more_ratings(tmp_path, how):
    """SQLite went on writing into the unlinked file, so ratings vanished with the kernel. Now the next rating
    is refused with what happened and what to do, and Session.open then rebuilds from labels.csv."""
    s = Session(tmp_path / "s", images=_images(4, tmp_path / "img"), model_name="tiny")
    first, second, third, fourth = s.images
    s.label(first, 2)
    s.label(second, 3)
    if how == "deleted":
        _remove_database(s.folder)
    elif how == "emptied (0 bytes)":
        open(s.database_path, "wb").close()
    else:
        other = LabelStore(tmp_path / "other.sqlite")
        other.close()
        os.replace(tmp_path / "other.sqlite", s.database_path)
    export = s.labels_path.read_bytes()
    with pytest.raises(LabelStoreUnusable) as e:
        s.label(third, 5)
    text = str(e.value)
    assert f"the rating of img002.jpg was NOT saved: {s.database_path} was {how}" in text and "\n" not in text
    assert "Session.open" in text
    assert s.labels_path.read_bytes() == export  # the export still holds both labels
    with pytest.raises(LabelStoreUnusable):
        s.skip(fourth)  # every write is refused, not just the first
    assert (how == "deleted") == (not s.database_path.exists())  # nothing re-created behind the user's back
    first_two = {first: 2.0, second: 3.0}
    s.close()
    if how != "emptied (0 bytes)":  # (closing checkpoints SQLite's WAL into an emptied file, which restores it)
        with pytest.raises(LabelStoreUnusable, match="was " + how.split(" ")[0]):
            s.label(third, 5)  # nor after the connection was closed
    if how == "deleted":
        again, told = _open_recovering(s.folder)
    else:  # SQLite's WAL left beside the emptied or replaced file may bring the ratings back before any recovery
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LabelsRecovered)
            again = Session.open(s.folder)
    assert _export(s.labels_path) == first_two and {p: v["score"] for p, v in again.labels.items()} == first_two
