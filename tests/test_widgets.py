"""Panels driven without a browser: call the handlers the buttons call, assert state and files.

Models are the random-init ``tiny`` preset (numbers meaningless); every panel must say so in a banner.
"""
from __future__ import annotations

import csv
import time

import numpy as np
import pytest

from clipiqa.session import Session
from clipiqa.widgets import AdaptPanel, AttributionViewer, ComparePanel, LabelPanel



@pytest.fixture
def session(tmp_path, demo_table):
    return Session(tmp_path / "sess", images=demo_table.head(40), model_name="tiny", device="cpu")


def _csv(session) -> dict[str, float]:
    with open(session.labels_path, newline="") as f:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(f)}


def _label_from_severity(session, table, n):
    q = table.set_index("path")["q"]
    for p in session.images[:n]:
        session.label(p, 1 + round(4 * q[p]))


# ----------------------------------------------------------------------------------------------- LabelPanel
def test_label_panel_autosaves_every_rating(session):
    panel = LabelPanel(session)
    assert "random-init weights" in panel.banner.value
    expected = {}
    for score in (5, 3, 1, 4):
        path = panel.current_path
        panel.rate(score)
        expected[path] = float(score)
        assert _csv(session) == expected  # on disk right after the click
        assert panel.current_path != path  # moved on
    assert panel.count.value == "4 labelled, 0 skipped, 36 to go"


def test_label_panel_slider_skip_undo_and_navigation(session):
    panel = LabelPanel(session)
    first = panel.current_path
    panel.slider.value = 2.0
    panel.save_button.click()  # the button handler, as a click in the browser runs it
    assert _csv(session) == {first: 2.0}
    second = panel.current_path
    panel.skip_button.click()
    assert session.skipped == [second] and panel.current_path not in (first, second)
    panel.undo()
    assert session.skipped == [] and panel.current_path == second
    panel.undo()
    assert _csv(session) == {} and panel.current_path == first
    panel.next()
    assert panel.current_path == second
    panel.previous()
    panel.previous()  # clamps at the first image
    assert panel.current_path == first
    panel.rate(4)
    panel.previous()
    assert "labelled <b>4 good</b>" in panel.title.value and panel.slider.value == 4.0


def test_label_panel_keyboard_box(session):
    panel = LabelPanel(session)
    first = panel.current_path
    panel.key_box.value = "5"  # what typing 5 + Enter in the keys box syncs
    assert _csv(session) == {first: 5.0} and panel.key_box.value == ""
    second = panel.current_path
    panel.key_box.value = "s"
    assert session.skipped == [second]
    panel.key_box.value = "u"
    panel.key_box.value = "p"
    assert panel.current_path == first
    panel.key_box.value = "9"
    assert "unknown key" in panel.message.value and _csv(session) == {first: 5.0}


def test_label_panel_resumes_and_suggests(session, tmp_path):
    panel = LabelPanel(session)
    panel.rate(3)
    panel.rate(4)
    where = panel.current_path
    again = LabelPanel(Session.open(tmp_path / "sess"))
    assert again.current_path == where and again.count.value.startswith("2 labelled")
    expected = again.session.suggest_next(1)[0]
    again.suggest_button.click()
    assert again.current_path == expected and expected not in again.session.labels


def test_label_panel_shows_a_bad_file_instead_of_failing(tmp_path, photo_dir):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    s = Session(tmp_path / "s", images=[bad, *sorted(photo_dir.iterdir())], model_name="tiny")
    panel = LabelPanel(s)
    assert panel.current_path == str(bad) and "cannot read" in panel.message.value
    panel.skip()
    assert panel.current_path != str(bad)


def test_label_panel_write_failure_is_shown_and_nothing_changes(session, monkeypatch):
    panel = LabelPanel(session)
    path = panel.current_path

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr("clipiqa.session.os.replace", boom)
    panel.save_button.click()
    assert "disk full" in panel.message.value and panel.current_path == path
    monkeypatch.undo()
    assert not session.labels_path.exists() or _csv(session) == {}


# ----------------------------------------------------------------------------------------------- AdaptPanel
def test_adapt_panel_run_produces_a_history(session, demo_table):
    _label_from_severity(session, demo_table, 16)
    panel = AdaptPanel(session, epochs=3, shots=10, trainable="prompts", device="cpu", redraw_every=0.0)
    assert "random-init weights" in panel.banner.value
    history = panel.run(block=True)
    assert panel.status == "done" and history is panel.history
    assert len(history.steps) == 3 and len(history.evals) == 3  # 6 held-out labels -> SRCC curve
    assert panel.progress.value == pytest.approx(1.0)
    assert panel.curves.value[:4] == b"\x89PNG"
    assert session.checkpoints()["active"].tolist() == [True]
    assert [r["kind"] for r in panel.records].count("step") == 3


def test_adapt_panel_stop_stops(session, demo_table):
    _label_from_severity(session, demo_table, 12)
    panel = AdaptPanel(session, epochs=10000, trainable="prompts", device="cpu")
    panel.config()  # valid settings
    panel.run(block=False)
    assert panel.running and panel.stop_button.disabled is False
    deadline = time.monotonic() + 120
    while not panel.records and time.monotonic() < deadline:
        time.sleep(0.05)
    panel.stop()
    history = panel.wait(timeout=120)
    assert history is not None and history.stopped
    assert panel.status == "stopped" and not panel.running
    assert len(history.steps) < 10000
    assert panel.run_button.disabled is False and panel.stop_button.disabled is True


def test_adapt_panel_shows_errors_in_the_panel(session):
    panel = AdaptPanel(session, epochs=2, trainable="prompts", device="cpu")
    panel.run_button.click()  # no labels yet: the error shows in the panel, not as an exception
    panel.wait(60)
    assert panel.status.startswith("error") and "label at least 2" in panel.message.value
    assert panel.run_button.disabled is False


# ----------------------------------------------------------------------------------------------- ComparePanel
def test_compare_panel_runs_both_arms_on_identical_splits(demo_table):
    from clipiqa.model import load_model
    table = demo_table.head(40)
    panel = ComparePanel(table, shots=12, n_splits=2, epochs=2, trainable="prompts", n_boot=50,
                         model_factory=lambda: load_model("tiny", device="cpu"), model_name="tiny")
    assert "random-init weights" in panel.banner.value
    result = panel.run(block=True)
    assert panel.status == "done", panel.status
    df = result.per_split
    assert set(df["arm"]) == {"zero-shot", "QGR off", "QGR on"}
    for _, split in df.groupby("split"):
        assert split["split_hash"].nunique() == 1 and split["labelled_hash"].nunique() == 1
        assert split["n_test"].nunique() == 1
    assert df["split_hash"].nunique() == 2  # two different splits
    assert set(result.histories) == {(i, arm) for i in (0, 1) for arm in ("QGR off", "QGR on")}
    cfg_on = result.histories[(0, "QGR on")].config["qgr"]
    cfg_off = result.histories[(0, "QGR off")].config["qgr"]
    assert cfg_on["enabled"] and not cfg_off["enabled"] and cfg_on["lam"] == 5.0
    assert all("cosine" in r for r in result.histories[(0, "QGR off")].steps)
    assert "QGR on - off" in panel.table.value and panel.plots.value[:4] == b"\x89PNG"
    assert panel.traces.value[:4] == b"\x89PNG"
    assert result.random_init and "random-init" in panel.message.value


def test_compare_panel_from_a_session(session, demo_table):
    _label_from_severity(session, demo_table, 20)
    panel = ComparePanel(session, shots=8, n_splits=1, epochs=1, trainable="prompts", n_boot=20)
    result = panel.compare()
    assert len(result.per_split) == 3 and result.per_split["split_hash"].nunique() == 1


# ----------------------------------------------------------------------------------------------- AttributionViewer
def test_attribution_viewer_renders_every_method(session, demo_table):
    from clipiqa.explain import METHODS
    viewer = AttributionViewer(session, images=list(demo_table["path"][:2]), auto=False,
                               method_options={"ig": {"n_steps": 4}, "smoothgrad": {"nt_samples": 2},
                                               "occlusion": {"window": 56}})
    assert "random-init weights" in viewer.banner.value
    for method in METHODS:
        viewer.method_picker.value = method
        png = viewer.render()
        assert png[:4] == b"\x89PNG" and viewer.view.value == png, method
        m = viewer.maps()
        assert m["before"].shape == m["after"].shape == m["crop"].shape[:2]
    viewer.alpha.value = 0.2
    assert viewer.render()[:4] == b"\x89PNG"
    table = viewer.diagnostics()
    assert list(table["model"]) == ["before (zero-shot)", "after (this model)"]
    assert "random-init" in viewer.table.value


def test_attribution_viewer_before_and_after_differ_after_adaptation(session, demo_table):
    _label_from_severity(session, demo_table, 8)
    from clipiqa.finetune import AdaptConfig
    session.adapt(AdaptConfig(trainable="prompts", epochs=2, n_views=1, lr=0.5))
    viewer = AttributionViewer(session, images={"a": np.full((64, 64, 3), 128, "uint8")},
                               auto=False, method_options={"ig": {"n_steps": 4}})
    viewer.method_picker.value = "ig"
    m = viewer.maps()
    assert m["score_before"] != m["score_after"]
    viewer.render()
    assert "not adapted yet" not in viewer.message.value
