"""Session: labels on disk after every label, crash-safe writes, resume, undo/skip, suggestions, adaptation.

Models here are the random-init ``tiny`` preset: the numbers are meaningless; only the machinery is checked.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

from clipiqa.data import read_labels
from clipiqa.session import ACR, Scale, Session


def _rows(session: Session) -> dict[str, float]:
    with open(session.labels_path, newline="") as f:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(f)}



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
    monkeypatch.setattr("clipiqa.session.os.replace", boom)
    with pytest.raises(OSError, match="simulated"):
        session.label(b, 5)
    monkeypatch.undo()
    assert session.labels_path.read_bytes() == before
    assert read_labels(session.labels_path, score_range=ACR.range)["path"].tolist() == [a]
    assert session.labels == {a: {"score": 2.0, "content_id": ""}}  # memory matches disk
    assert not [p for p in os.listdir(session.folder) if p.endswith(".tmp")]


def test_crash_midway_through_the_write_keeps_previous_file(session, monkeypatch):
    a, b = session.images[:2]
    session.label(a, 2)
    before = session.labels_path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWritten:
        """Writes the first half of the text, then the process 'dies'."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise OSError("simulated crash mid-write")

    monkeypatch.setattr("clipiqa.session.os.fdopen", lambda *a, **k: HalfWritten(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="mid-write"):
        session.label(b, 5)
    monkeypatch.undo()
    assert session.labels_path.read_bytes() == before
    assert not [p for p in os.listdir(session.folder) if p.endswith(".tmp")]
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
    again.undo()  # the undo stack survives too: un-skips c
    assert again.skipped == [] and again.current == c


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
    session._encode(session.images)
    anchor = session.images[0]
    session.label(anchor, 3)
    f = session._features
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
