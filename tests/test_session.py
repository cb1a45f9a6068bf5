"""Session: labels on disk after every label, crash-safe writes, resume, undo/skip, suggestions, adaptation;
several Session objects on one folder, several raters, blind repeats, format-1 migration, a full disk.

Models here are the random-init ``tiny`` preset: the numbers are meaningless; only the machinery is checked.
Many processes and killed writers: tests/test_labelstore_processes.py.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import sqlite3
import subprocess

import numpy as np
import pandas as pd
import pytest

from clipiqa.data import read_labels
from clipiqa.labelstore import LabelNotSaved
from clipiqa.session import ACR, DEFAULT_RATER, REPEAT_GAP, Scale, Session, pick_repeat
from store_reads import stored_ratings, temporaries


def _rows(session: Session) -> dict[str, float]:
    """The labels.csv export as {path: mos}."""
    with open(session.labels_path, newline="") as f:
        return {r["path"]: float(r["mos"]) for r in csv.DictReader(f)}



@pytest.fixture
def session(tmp_path, photo_dir):
    return Session(tmp_path / "sess", images=photo_dir, model_name="tiny", device="cpu")


def test_every_label_is_on_disk_at_once(session):
    given = {}
    for i, path in enumerate(session.images):
        session.label(path, i + 1)
        given[path] = float(i + 1)
        assert _rows(session) == given  # read back right after each label
        table = read_labels(session.labels_path, score_range=ACR.range)
        assert list(table["path"]) == list(given)
        np.testing.assert_allclose(table["mos"], list(given.values()))


def test_labelled_table_maps_the_scale_to_q(session):
    a, b, c = session.images[:3]
    session.label(a, 1)
    session.label(b, 3)
    session.label(c, 5)
    table = session.labelled_table()
    assert list(table["q"]) == [0.0, 0.5, 1.0]
    assert table.attrs["score_range"] == (1.0, 5.0)


def test_custom_scale_round_trips(tmp_path, photo_dir):
    scale = Scale("0-10", tuple((v, f"level {v}") for v in range(11)))
    s = Session(tmp_path / "s", images=photo_dir, scale=scale, model_name="tiny")
    s.label(s.images[0], 10)
    s.label(s.images[1], 0)
    assert list(s.labelled_table()["q"]) == [1.0, 0.0]
    again = Session.open(tmp_path / "s")
    assert again.scale == scale
    with pytest.raises(ValueError, match="outside"):
        again.label(again.images[2], 11)


def test_out_of_scale_score_writes_nothing(session):
    session.label(session.images[0], 4)
    before = session.labels_path.read_bytes()
    with pytest.raises(ValueError, match="outside the ACR scale"):
        session.label(session.images[1], 7)
    assert session.labels_path.read_bytes() == before


def test_crash_in_replace_keeps_previous_file(session, monkeypatch):
    a, b = session.images[:2]
    session.label(a, 2)
    before = session.labels_path.read_bytes()

    def boom(src, dst):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(os, "replace", boom)  # the rename every atomic write ends with
    with pytest.raises(LabelNotSaved, match="simulated.*NOT saved|NOT saved.*simulated"):
        session.label(b, 5)
    monkeypatch.undo()
    assert session.labels_path.read_bytes() == before
    assert read_labels(session.labels_path, score_range=ACR.range)["path"].tolist() == [a]
    assert session.my_labels == {a: 2.0} and stored_ratings(session.folder) == [(a, DEFAULT_RATER, 2.0, 0)]
    assert not temporaries(session.folder)


def test_crash_midway_through_the_write_keeps_previous_file(session, monkeypatch):
    """The export's file write dies half-way: the old export stays, and the rating is rolled back with it."""
    import clipiqa.csvio
    a, b = session.images[:2]
    session.label(a, 2)
    before = session.labels_path.read_bytes()
    real_atomic_write = clipiqa.csvio.atomic_write

    class HalfWritten:
        """Writes the first half of the data, then the process 'dies'."""

        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):  # fileno, flush: the real file's
            return getattr(self.f, name)

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError("simulated crash mid-write")

    @contextlib.contextmanager
    def half_written(path, **kwargs):
        with real_atomic_write(path, **kwargs) as f:
            yield HalfWritten(f)

    monkeypatch.setattr("clipiqa.csvio.atomic_write", half_written)  # what write_csv writes through
    with pytest.raises(OSError, match="mid-write"):
        session.label(b, 5)
    monkeypatch.undo()
    assert session.labels_path.read_bytes() == before
    assert stored_ratings(session.folder) == [(a, DEFAULT_RATER, 2.0, 0)]  # the rating was rolled back too
    assert not temporaries(session.folder)
    session.label(b, 5)  # works again afterwards
    assert _rows(session) == {a: 2.0, b: 5.0}


def test_resume_restores_labels_position_skips_and_settings(session, tmp_path):
    a, b, c, d = session.images
    session.label(a, 4)
    session.label(b, 1)
    session.skip(c)
    session.goto(d)
    again = Session.open(tmp_path / "sess")
    assert again.labels == session.labels
    assert again.skipped == [c]
    assert again.current == d and again.position == 3
    assert again.model_name == "tiny" and again.scale == ACR
    assert again.progress_text() == "2 labelled, 1 skipped, 1 to go"
    assert again.undo() is None  # undo is per object: a reopened Session did nothing yet
    assert session.undo() == c  # the object that skipped c can take it back
    assert again.skipped == [] and session.current == c


def test_open_without_a_session_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no clipiqa session"):
        Session.open(tmp_path / "nothing")


def test_undo_restores_previous_label_then_removes_it(session):
    a = session.images[0]
    session.label(a, 2)
    session.label(a, 5)
    assert session.undo() == a
    assert _rows(session) == {a: 2.0}
    session.undo()
    assert _rows(session) == {}
    assert session.undo() is None


def test_skip_and_undo_skip(session):
    a, b = session.images[:2]
    session.skip(a)
    assert session.next_unlabelled(after=-1) == b
    assert a not in session.suggest_next(4)
    session.label(a, 3)  # labelling a skipped image un-skips it
    assert session.skipped == []
    session.undo()  # ... and undoing that label skips it again
    assert session.skipped == [a] and _rows(session) == {}
    session.undo()
    assert session.skipped == []


def test_images_from_table_keep_content_ids(tmp_path, photo_dir):
    paths = sorted(str(p) for p in photo_dir.iterdir())
    table = pd.DataFrame({"path": paths, "content_id": ["x", "x", "y", "y"]})
    s = Session(tmp_path / "t", images=table, model_name="tiny")
    for p in paths:
        s.label(p, 3)
    got = s.labelled_table()
    assert list(got["content_id"]) == ["x", "x", "y", "y"]
    assert got.attrs["synthetic"]  # grouped: splits go by content


def test_suggest_next_is_diverse_then_uncertain(session):
    picks = session.suggest_next(4)
    assert sorted(picks) == sorted(session.images)  # distinct, all unlabelled
    assert session.suggest_next(4) == picks  # deterministic
    session.label(picks[0], 3)
    nxt = session.suggest_next(2)
    assert picks[0] not in nxt and len(nxt) == 2
    # uncertainty phase (no adapted model): zero-shot score closest to 0.5 first
    order = session.suggest_next(3, strategy="uncertain")
    zs = session.score(order, zero_shot=True).set_index("path")["score"]
    dist = [abs(zs[p] - 0.5) for p in order]
    assert dist == sorted(dist)


def test_farthest_point_picks_the_far_image(session):
    """With one labelled image, the first diverse suggestion is the candidate least similar to it."""
    session.parts.suggestions.encode(session.images)  # the zero-shot features the rule compares
    anchor = session.images[0]
    session.label(anchor, 3)
    f = session.parts.suggestions.features
    sims = {p: float(f[p] @ f[anchor]) for p in session.images[1:]}
    assert session.suggest_next(1) == [min(sims, key=sims.get)]


def test_adapt_saves_a_checkpoint_that_resumes(session, tmp_path):
    for i, p in enumerate(session.images):
        session.label(p, 1 + i)
    from clipiqa.finetune import AdaptConfig
    steps = []
    history = session.adapt(AdaptConfig(trainable="prompts", epochs=2, n_views=1), on_step=steps.append)
    assert len(history.steps) == 2 and [r["kind"] for r in steps] == ["step", "step"]
    ckpts = session.checkpoints()
    assert len(ckpts) == 1 and ckpts["active"].all() and ckpts["random_init"].all()
    card = json.loads((tmp_path / "sess" / "checkpoints" / ckpts["name"][0] / "card.json").read_text())
    assert card["data"]["n_labels"] == 4 and card["stopped"] is False
    saved = {n: p.detach().clone() for n, p in session.model.adapter_parameters()}
    again = Session.open(tmp_path / "sess")
    assert again.adapted and again.random_init
    for n, p in again.model.adapter_parameters():
        assert (p == saved[n]).all(), n


def test_adapt_with_shots_logs_test_srcc_and_stop_is_honoured(tmp_path, demo_table):
    s = Session(tmp_path / "d", images=demo_table, model_name="tiny")
    for p, q in zip(demo_table["path"][:12], demo_table["q"][:12]):
        s.label(p, 1 + 4 * q)
    from clipiqa.finetune import AdaptConfig
    history = s.adapt(AdaptConfig(trainable="prompts", epochs=3, n_views=1), shots=8)
    assert [e["kind"] for e in history.evals] == ["eval"] * 3 and "srcc_test" in history.evals[0]
    stopped = s.adapt(AdaptConfig(trainable="prompts", epochs=50, n_views=1, batch_size=2), stop=lambda: True)
    assert stopped.stopped and len(stopped.steps) == 1
    assert s.checkpoints()["stopped"].tolist() == [False, True]


# ------------------------------------------------------------------------------------- one folder, many writers
def _fake_images(n: int, root) -> pd.DataFrame:
    """An image table of empty files (ratings never decode them; read_labels only checks they exist)."""
    os.makedirs(root, exist_ok=True)
    paths = [os.path.join(root, f"img{i:03d}.jpg") for i in range(n)]
    for p in paths:
        open(p, "wb").close()
    return pd.DataFrame({"path": paths})


def test_two_session_objects_on_one_folder_lose_nothing(tmp_path):
    """Two Session objects on one folder lose nothing: a save once rewrote labels.csv from one object's memory, so
    a second object (another kernel, or a re-run cell holding an old one) silently dropped the first one's labels."""
    folder = tmp_path / "s"
    first = Session(folder, images=_fake_images(10, tmp_path / "img"), model_name="tiny")
    second = Session.open(folder)
    for i, p in enumerate(first.images):
        (first if i % 2 else second).label(p, 1 + i % 5)
    expected = {p: float(1 + i % 5) for i, p in enumerate(first.images)}
    assert _rows(first) == expected  # the export holds both objects' labels
    assert len(stored_ratings(folder)) == 10
    for s in (first, second):  # each object reads the database, not its memory
        assert s.counts()["labelled"] == 10 and s.next_unlabelled() is None
        assert {p: v["score"] for p, v in s.labels.items()} == expected
        assert len(s.labelled_table()) == 10
    assert Session.open(folder).counts()["labelled"] == 10


def test_next_unlabelled_and_counts_follow_other_writers(tmp_path):
    folder = tmp_path / "s"
    a = Session(folder, images=_fake_images(4, tmp_path / "img"), model_name="tiny")
    b = Session.open(folder)
    b.label(a.images[1], 3)
    assert a.next_unlabelled(after=0) == a.images[2]  # b's label counts at once
    assert a.progress_text() == "1 labelled, 0 skipped, 3 to go"
    b.skip(a.images[2])
    assert a.next_unlabelled(after=0) == a.images[3] and a.skipped == [a.images[2]]


def test_a_session_without_labels_is_a_normal_state(tmp_path, photo_dir):
    """The export exists, empty, before any rating (notebook 02 rated by hand once failed on open(labels.csv))."""
    s = Session(tmp_path / "fresh", images=photo_dir, model_name="tiny")
    assert open(s.labels_path).read() == "path,mos,mos_std,n_ratings,content_id\n"  # the export exists, empty
    assert s.counts()["labelled"] == 0 and s.counts()["to_go"] == 4 and s.current == s.images[0]
    assert len(s.labelled_table()) == 0 and s.labels == {}
    again = Session.open(tmp_path / "fresh")
    assert again.progress_text() == "0 labelled, 0 skipped, 4 to go"


# ----------------------------------------------------------------------------------------------- raters
def test_several_raters_give_mos_std_and_n_in_the_export(tmp_path):
    folder = tmp_path / "s"
    ann = Session(folder, images=_fake_images(3, tmp_path / "img"), model_name="tiny", rater="ann")
    ben = Session.open(folder, rater="ben")
    cat = Session.open(folder, rater="cat")
    x, y, z = ann.images
    for s, scores in ((ann, (1, 4, 5)), (ben, (2, 4, 3)), (cat, (3, 4, None))):
        for p, v in zip((x, y, z), scores):
            if v is not None:
                s.label(p, v)
    ann.label(z, 4)  # ann corrects her rating of z: her latest counts
    table = pd.read_csv(ann.labels_path)
    assert list(table.columns) == ["path", "mos", "mos_std", "n_ratings", "content_id"]
    np.testing.assert_allclose(table["mos"], [2.0, 4.0, 3.5])
    np.testing.assert_allclose(table["mos_std"], [1.0, 0.0, np.std([4, 3], ddof=1)])
    assert table["n_ratings"].tolist() == [3, 3, 2]
    got = read_labels(ann.labels_path, score_range=ACR.range)  # read_labels reads the export
    np.testing.assert_allclose(got["mos"], [2.0, 4.0, 3.5])
    np.testing.assert_allclose(got["mos_std"], table["mos_std"])
    assert ann.my_labels == {x: 1.0, y: 4.0, z: 4.0} and cat.my_labels == {x: 3.0, y: 4.0}
    assert cat.next_unlabelled(after=-1) == z  # what another rater rated is still to do for cat
    assert sorted(ann.raters) == ["ann", "ben", "cat"]
    assert "all 3 raters: 3 images, 9 ratings" in cat.progress_text()


def test_undo_takes_back_only_the_raters_own_last_rating(tmp_path):
    folder = tmp_path / "s"
    ann = Session(folder, images=_fake_images(3, tmp_path / "img"), model_name="tiny", rater="ann")
    ben = Session.open(folder, rater="ben")
    x, y, _ = ann.images
    ann.label(x, 5)
    ben.label(y, 1)  # ben's is the latest rating in the folder ...
    assert ann.undo() == x  # ... but ann's undo takes back ann's
    assert stored_ratings(folder) == [(y, "ben", 1.0, 0)]
    assert ann.undo() is None and ben.undo() == y and stored_ratings(folder) == []
    assert ann.current == x
    con = sqlite3.connect(folder / "labels.sqlite")  # undo is a tombstone: the rows stay, marked undone
    assert con.execute("SELECT count(*) FROM ratings WHERE undone IS NOT NULL").fetchone() == (2,)
    con.close()


def test_the_rater_defaults_to_the_only_one_and_names_are_checked(tmp_path):
    folder = tmp_path / "s"
    s = Session(folder, images=_fake_images(3, tmp_path / "img"), model_name="tiny")
    assert s.rater == DEFAULT_RATER
    s.rater = "  Anna  "
    s.label(s.images[0], 3)
    assert s.rater == "Anna" and Session.open(folder).rater == "Anna"  # the only rater: resumed
    Session.open(folder, rater="Ben").label(s.images[1], 2)
    assert Session.open(folder).rater == DEFAULT_RATER  # two raters: nobody is assumed
    for bad in ("", "   ", "a\nb", "x" * 65, 7):
        with pytest.raises(ValueError, match="Session.rater="):
            s.rater = bad
    with pytest.raises(ValueError, match="Session.repeat_share=0.9"):
        Session(folder, repeat_share=0.9)


# ----------------------------------------------------------------------------------------------- blind repeats
def test_pick_repeat_is_seeded_and_respects_the_gap():
    rated = [f"i{k}" for k in range(REPEAT_GAP + 3)]
    picks = [pick_repeat(rated, set(), n, 0.5, "ann") for n in range(200)]
    chosen = [p for p in picks if p is not None]
    assert 0.35 < len(chosen) / 200 < 0.65  # about the share
    assert set(chosen) <= set(rated[:3])  # only images labelled at least REPEAT_GAP labels ago
    assert picks == [pick_repeat(rated, set(), n, 0.5, "ann") for n in range(200)]  # deterministic
    assert pick_repeat(rated[:REPEAT_GAP], set(), 0, 0.5, "ann") is None  # too few labels yet
    assert all(pick_repeat(rated, set(rated[:3]), n, 0.5, "ann") is None for n in range(50))  # all repeated
    assert all(pick_repeat(rated, set(), n, 0.0, "ann") is None for n in range(50))


def test_blind_repeats_are_flagged_and_stay_out_of_the_mos(tmp_path):
    s = Session(tmp_path / "s", images=_fake_images(40, tmp_path / "img"), model_name="tiny", rater="ann",
                repeat_share=0.5)
    first: dict[str, float] = {}
    repeats = []
    s.goto(0)
    while True:
        p = s.current
        if s.repeat_pending == p:
            assert p in first and p not in repeats
            labelled_since = len(first) - list(first).index(p) - 1
            assert labelled_since >= REPEAT_GAP  # not one of the last few images
            s.label(None, 1 if first[p] > 1 else 5)  # a different score: must not change the MOS
            repeats.append(p)
        else:
            v = 1 + len(first) % 5
            s.label(None, v)
            first[p] = float(v)
        if s.advance() is None:
            break
    assert len(first) == 40 and len(repeats) >= 3
    assert _rows(s) == first  # the export holds first ratings only
    flagged = [(p, r) for p, _, _, r in stored_ratings(s.folder) if r]
    assert [p for p, _ in flagged] == repeats
    assert s.counts()["repeats"] == len(repeats) and s.counts()["labelled"] == 40
    ceiling = s.agreement(n_boot=50)
    assert ceiling.n_repeats == len(repeats) and np.isfinite(ceiling.test_retest)


def test_undoing_a_repeat_shows_it_blind_again(tmp_path):
    s = Session(tmp_path / "s", images=_fake_images(3, tmp_path / "img"), model_name="tiny")
    a = s.images[0]
    s.label(a, 4)
    s.label(a, 2, repeat=True)
    assert s.my_labels == {a: 4.0}
    assert s.undo() == a and s.repeat_pending == a  # the next rating of a is a repeat again
    s.label(None, 3)
    assert [r for *_, r in stored_ratings(s.folder)] == [0, 1] and s.my_labels == {a: 4.0}
    with pytest.raises(ValueError, match="no earlier rating"):
        s.label(s.images[1], 3, repeat=True)


# ----------------------------------------------------------------------------------------------- format 1
def _format1_folder(folder, photo_dir) -> dict:
    """A session folder exactly as the format-1 code wrote it (settings.json with the image list, labels.csv
    path,score,content_id, state.json with position, skips and undo stack)."""
    folder.mkdir()
    images = [str(p) for p in sorted(photo_dir.iterdir())]
    a, b, c, d = images
    extra = str(photo_dir / "elsewhere.jpg")  # labelled but not in the image list: format 1 appended it
    settings = {"format": "clipiqa-session", "version": 1, "created": "2025-01-02T03:04:05+00:00",
                "scale": {"name": "ACR", "levels": [[1.0, "bad"], [2.0, "poor"], [3.0, "fair"], [4.0, "good"],
                                                    [5.0, "excellent"]], "higher_better": True},
                "model_name": "tiny", "weights": None, "device": "cpu", "checkpoint": None,
                "images": images, "content_ids": {a: "scene-1", b: "scene-1"}}
    (folder / "settings.json").write_text(json.dumps(settings, indent=1, default=str) + "\n", encoding="utf-8")
    labels = f"path,score,content_id\n{a},4,scene-1\n{b},1,scene-1\n{extra},2.5,\n"
    (folder / "labels.csv").write_text(labels, encoding="utf-8")
    state = {"position": 3, "current": d, "skipped": [c],
             "undo": [{"op": "label", "path": a, "previous": None, "was_skipped": False, "position": 0},
                      {"op": "skip", "path": c, "position": 2}], "updated": "2025-01-02T03:05:00+00:00"}
    (folder / "state.json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    return {"images": images, "extra": extra, "labels_bytes": labels.encode()}


def test_a_format1_session_migrates_without_losing_a_label(tmp_path, photo_dir):
    old = _format1_folder(tmp_path / "old", photo_dir)
    a, b, c, d = old["images"]
    s = Session.open(tmp_path / "old")
    assert {p: v["score"] for p, v in s.labels.items()} == {a: 4.0, b: 1.0, old["extra"]: 2.5}
    assert s.images == [a, b, c, d, old["extra"]]
    assert s.skipped == [c] and s.current == d and s.rater == DEFAULT_RATER
    assert s.content_ids[a] == "scene-1" and s.labels[b]["content_id"] == "scene-1"
    assert (tmp_path / "old" / "labels-format1.csv").read_bytes() == old["labels_bytes"]  # kept as it was
    assert list(pd.read_csv(s.labels_path).columns) == ["path", "mos", "mos_std", "n_ratings", "content_id"]
    assert json.loads((tmp_path / "old" / "settings.json").read_text())["version"] == 2
    assert len(stored_ratings(tmp_path / "old")) == 3
    again = Session.open(tmp_path / "old")  # migrated once only
    assert len(stored_ratings(tmp_path / "old")) == 3 and again.skipped == [c]
    again.label(c, 5)
    assert {p: v["score"] for p, v in Session.open(tmp_path / "old").labels.items()} == {
        a: 4.0, b: 1.0, old["extra"]: 2.5, c: 5.0}


# ----------------------------------------------------------------------------------------------- full disk
def test_a_full_disk_fails_loudly_and_keeps_the_old_data_patched_writer(session, monkeypatch):
    """The export writer raises ENOSPC: the rating is rolled back with the export (runs everywhere)."""
    a, b = session.images[:2]
    session.label(a, 2)
    before = session.labels_path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("clipiqa.labelstore.write_csv", full)  # the store's export writer
    with pytest.raises(LabelNotSaved, match="NOT saved.*disk .* is full") as caught:
        session.label(b, 5)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert session.labels_path.read_bytes() == before and stored_ratings(session.folder) == [(a, DEFAULT_RATER, 2.0, 0)]


def test_a_full_disk_reported_by_sqlite_fails_loudly_and_keeps_the_old_data(session):
    """SQLite reports a full disk inside the transaction: nothing is stored, the export is untouched."""
    a, b = session.images[:2]
    session.label(a, 2)
    before = session.labels_path.read_bytes()

    with contextlib.closing(sqlite3.connect(session.database_path)) as con, con:  # SQLite fails inside the insert
        con.execute("CREATE TRIGGER full BEFORE INSERT ON ratings BEGIN "
                    "SELECT RAISE(ABORT, 'database or disk is full'); END")
    with pytest.raises(LabelNotSaved, match="NOT saved.*database or disk is full") as caught:
        session.label(b, 5)
    assert caught.value.errno == errno.ENOSPC
    with contextlib.closing(sqlite3.connect(session.database_path)) as con, con:
        con.execute("DROP TRIGGER full")
    assert session.labels_path.read_bytes() == before and stored_ratings(session.folder) == [(a, DEFAULT_RATER, 2.0, 0)]
    session.label(b, 5)
    assert _rows(session) == {a: 2.0, b: 5.0}


def _mount_tmpfs(target, size: str) -> str | None:
    """Mount a small tmpfs at ``target``; the reason when that is not possible here."""
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], check=True,
                       capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"mount -t tmpfs failed: {e}"
    return None


def test_a_full_disk_fails_loudly_and_keeps_the_old_data_tmpfs(tmp_path):
    """A real full file system (a 4 MiB tmpfs): SQLite or the export hits ENOSPC; nothing half-saved."""
    disk = tmp_path / "disk"
    disk.mkdir()
    reason = _mount_tmpfs(disk, "4m")
    if reason:
        pytest.skip(reason + " (the patched-writer and patched-sqlite variants cover the logic)")
    try:
        s = Session(disk / "s", images=_fake_images(100, tmp_path / "img"), model_name="tiny")
        for p in s.images[:5]:
            s.label(p, 3)
        before_db = stored_ratings(disk / "s")
        try:  # fill the disk to the last block
            with open(disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
        failed = 0
        for p in s.images[5:40]:  # the WAL may absorb a few small commits; the export cannot grow for long
            try:
                s.label(p, 4)
            except LabelNotSaved as e:
                assert e.errno == errno.ENOSPC and "NOT saved" in str(e), str(e)
                failed = 1
                break
        assert failed, "no write failed on a full disk"
        for q in s.images[:5]:  # blind repeats write no export: here SQLite itself meets the full disk
            try:
                s.label(q, 2, repeat=True)
            except LabelNotSaved as e:
                assert e.errno == errno.ENOSPC and "database or disk is full" in str(e), str(e)
                break
        else:
            raise AssertionError("SQLite stored five repeats on a full disk")
        stored = stored_ratings(disk / "s")
        assert stored[:5] == before_db  # the old ratings are intact
        assert _rows(s) == {p: v for p, _, v, rep in stored if not rep}  # the export matches what is stored
        assert not temporaries(disk / "s")
        con = sqlite3.connect(disk / "s" / "labels.sqlite")
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()
        os.unlink(disk / "filler")
        s.label(p, 4)  # space again: the failed rating can be given
        assert _rows(s)[p] == 4.0
        s.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True, timeout=20)


def test_any_file_name_round_trips_through_the_session(tmp_path):
    """Any file name round-trips: a \\r in a file name once split a labels.csv row and Session.open then failed; names
    that are not UTF-8 must survive too (stored as their bytes in the database, written by csvio's rule in the
    export)."""
    root = tmp_path / "img"
    root.mkdir()
    names = [os.fsdecode(b"caf\xe9.jpg"), "a\rb.jpg", "a\nb.jpg", 'q"uote".jpg', "comma,name.jpg", "NA", " sp .jpg"]
    paths = [str(root / n) for n in names]
    for p in paths:
        open(p, "wb").close()
    table = pd.DataFrame({"path": paths, "content_id": [os.fsdecode(b"scene-\xe9")] + ["x"] * 6})
    s = Session(tmp_path / "s", images=table, model_name="tiny")
    for i, p in enumerate(paths):
        s.label(p, 1 + i % 5)
    again = Session.open(tmp_path / "s")
    assert again.images == paths and again.my_labels == {p: float(1 + i % 5) for i, p in enumerate(paths)}
    labelled = again.labelled_table()
    assert list(labelled["path"]) == paths and labelled["content_id"][0] == os.fsdecode(b"scene-\xe9")


def test_a_mistyped_or_empty_image_folder_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="plnat"):
        Session(tmp_path / "s1", images=tmp_path / "plnat", model_name="tiny")
    assert not (tmp_path / "s1").exists()  # nothing saved for a folder that is not there
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images in .*empty \(found 1 entries, e.g. notes.txt\)"):
        Session(tmp_path / "s2", images=empty, model_name="tiny")


def test_subfolders_of_a_photo_folder_are_contents_and_a_flat_folder_warns(tmp_path, photo_dir):
    import shutil
    from clipiqa.session.files import NoContentGroupsWarning
    nested = tmp_path / "plant"
    for line, names in (("line-a", ["astronaut", "chelsea"]), ("line-b", ["coffee", "rocket"])):
        (nested / line).mkdir(parents=True)
        for n in names:
            shutil.copy(photo_dir / f"{n}.jpg", nested / line / f"{n}.jpg")
    session = Session(tmp_path / "s", images=nested, model_name="tiny")
    assert session.content_ids == {str(nested / "line-a" / "astronaut.jpg"): "line-a",
                                   str(nested / "line-a" / "chelsea.jpg"): "line-a",
                                   str(nested / "line-b" / "coffee.jpg"): "line-b",
                                   str(nested / "line-b" / "rocket.jpg"): "line-b"}
    with pytest.warns(NoContentGroupsWarning, match="no subfolders"):
        Session(tmp_path / "flat", images=photo_dir, model_name="tiny")


def test_every_public_name_of_a_session_has_its_help():
    """``help(Session)`` reads as one API: every public method and attribute says what it is, and a method keeps
    the signature of the part that does the work."""
    import inspect
    undocumented = [name for name, value in vars(Session).items() if not name.startswith("_")
                    and not isinstance(value, str) and not (getattr(value, "__doc__", None) or "").strip()]
    assert undocumented == []
    assert list(inspect.signature(Session.suggest_next).parameters) == ["self", "k", "diverse_until", "strategy"]
