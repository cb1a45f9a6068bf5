"""Panels driven without a browser: call the handlers the buttons call, assert state and files.

Models are the random-init ``tiny`` preset (numbers meaningless); every panel must say so in a banner.
"""
from __future__ import annotations

import csv
import os
import time

import numpy as np
import pandas as pd
import pytest

from clipiqa.notebook import short_errors
from clipiqa.protocol import METHODS
from clipiqa.session import Session
from clipiqa.widgets import AdaptPanel, AttributionViewer, ComparePanel, LabelPanel
from clipiqa.widgets.compare import PAIRS
from clipiqa.widgets.label import NOT_RATED



@pytest.fixture
def session(tmp_path, demo_table):
    return Session(tmp_path / "sess", images=demo_table.head(40), model_name="tiny", device="cpu")


def _csv(session) -> dict[str, float]:
    """The labels.csv export as {path: mos}."""
    with open(session.labels_path, newline="") as f:
        return {r["path"]: float(r["mos"]) for r in csv.DictReader(f)}


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


def test_label_panel_save_needs_a_deliberate_choice(session):
    """Save needs a deliberate choice: after rating with the keys, the slider once kept the previous image's value,
    and Save + next stored it on the next, unrated image: a wrong label that looked deliberate."""
    panel = LabelPanel(session)
    a = panel.current_path
    panel.key_box.value = "5"  # rate A with 5 through the keys box
    b = panel.current_path
    assert b != a and b not in session.my_labels
    assert panel.slider.value == NOT_RATED and "not labelled yet" in panel.title.value
    panel.save_button.click()  # Save + next on the unrated B: refused
    assert "choose a rating first" in panel.message.value
    assert _csv(session) == {a: 5.0} and len(session.ratings()) == 1 and panel.current_path == b
    panel.slider.value = 2.0  # a deliberate choice saves
    panel.save_button.click()
    assert _csv(session) == {a: 5.0, b: 2.0}
    panel.previous()
    assert panel.current_path == b and panel.slider.value == 2.0  # a rated image shows its rating
    panel.next()
    assert panel.slider.value == NOT_RATED  # ... and the next unrated one does not inherit it


def test_label_panel_opens_on_the_first_image_without_labels(session):
    """A session without labels is a normal state."""
    panel = LabelPanel(session)
    assert panel.current_path == session.images[0] and panel.count.value == "0 labelled, 0 skipped, 40 to go"
    assert panel.slider.value == NOT_RATED and session.labels_path.read_text().startswith("path,mos,")


def test_label_panel_asks_for_the_rater_once_and_two_raters_share_a_session(session, tmp_path):
    ann = LabelPanel(session)
    assert ann.rater_box.value == ""  # nobody named yet
    ann.rater_box.value = "ann"  # typed once (Enter): the session object remembers it
    assert session.rater == "ann" and "rating as ann" in ann.message.value
    first = ann.current_path
    ann.rate(4)
    ann.rate(2)
    ben = LabelPanel(Session.open(tmp_path / "sess", rater="ben"))  # another kernel, another person
    assert ben.rater_box.value == "ben" and ben.current_path == session.images[0]
    ben.rate(5)
    table = {r["path"]: r for r in csv.DictReader(open(session.labels_path, newline=""))}
    assert float(table[first]["mos"]) == 4.5 and table[first]["n_ratings"] == "2"
    anon = LabelPanel(Session.open(tmp_path / "sess"))  # several named raters: a nameless Save is refused
    anon.slider.value = 3.0
    anon.save_button.click()
    assert "type your name in the Rater box" in anon.message.value and len(session.ratings()) == 3
    ann.undo()  # ann's undo takes back ann's last rating, not ben's later one
    assert sorted(session.ratings()["rater"]) == ["ann", "ben"]


def test_label_panel_blind_repeat_looks_like_a_new_image(tmp_path, demo_table):
    s = Session(tmp_path / "rep", images=demo_table.head(30), model_name="tiny", repeat_share=0.5)
    panel = LabelPanel(s)
    for _ in range(40):
        if s.repeat_pending:
            break
        panel.rate(4)
    path = s.repeat_pending
    assert path is not None and path in s.my_labels and panel.current_path == path
    assert "not labelled yet" in panel.title.value and panel.slider.value == NOT_RATED  # blind
    panel.rate(1)
    assert s.ratings()["is_repeat"].tolist().count(True) == 1 and s.labels[path]["score"] == 4.0


def test_label_panel_write_failure_is_shown_and_nothing_changes(session, monkeypatch):
    panel = LabelPanel(session)
    path = panel.current_path

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)  # the rename every atomic write ends with
    panel.slider.value = 3.0
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
    # the stopped, under-trained checkpoint is kept but not activated ...
    table = session.checkpoints()
    assert table["stopped"].tolist() == [True] and table["active"].tolist() == [False] and not session.adapted
    assert "not active" in panel.message.value and panel.use_button.layout.display != "none"
    panel.use_button.click()  # ... unless the user asks
    assert session.active_checkpoint == table["name"][0] and "now active" in panel.message.value
    assert panel.use_button.layout.display == "none"


def test_adapt_panel_shows_errors_in_the_panel(session):
    panel = AdaptPanel(session, epochs=2, trainable="prompts", device="cpu")
    panel.run_button.click()  # no labels yet: the error shows in the panel, not as an exception
    panel.wait(60)
    assert panel.status.startswith("error") and "label at least 2" in panel.message.value
    assert panel.run_button.disabled is False


def test_adapt_panel_blocking_run_reraises_the_error_it_showed(session):
    """A failed blocking run raises: ``panel.run(block=True)`` once returned None after a failure, so the next cell
    failed with AttributeError: 'NoneType' object has no attribute 'steps'. It must raise the error the panel
    showed."""
    from clipiqa.session import NotEnoughLabelsError
    panel = AdaptPanel(session, epochs=2, trainable="prompts", device="cpu")
    with pytest.raises(NotEnoughLabelsError, match="label at least 2"):
        panel.run(block=True)
    assert "label at least 2" in panel.message.value and panel.status.startswith("error")


def test_adapt_panel_blocking_run_reraises_missing_weights_short(session, demo_table, monkeypatch):
    from clipiqa.weights import WeightsUnavailableError
    _label_from_severity(session, demo_table, 4)

    def no_weights(device=None):
        raise WeightsUnavailableError("no local weights for vitb16-openai and the model hub is unreachable")
    monkeypatch.setattr(session, "fresh_model", no_weights)
    panel = AdaptPanel(session, epochs=2, trainable="prompts", device="cpu")
    with pytest.raises(WeightsUnavailableError) as info:
        panel.run(block=True)
    assert "model hub is unreachable" in panel.message.value
    short_errors()  # what a notebook's parameters cell turns on
    assert len(info.value._render_traceback_()) == 2  # a notebook shows the message and a hint, no stack


# ----------------------------------------------------------------------------------------------- ComparePanel
def _tiny_factory():
    from functools import partial

    from clipiqa.factory import load_model
    return partial(load_model, "tiny", None, "cpu")


def test_compare_panel_runs_the_protocol_arms_on_identical_splits(demo_table):
    table = demo_table.head(40)
    panel = ComparePanel(table, shots=12, n_splits=2, epochs=2, trainable="prompts", n_boot=50,
                         model_factory=_tiny_factory(), model_name="tiny", n_views=1)
    assert "random-init weights" in panel.banner.value
    result = panel.run(block=True)
    assert panel.status == "done", panel.status
    df = result.per_split
    assert set(df["arm"]) == {"zero-shot", "QGR off", "QGR on"}
    assert result.methods == {"zero-shot": "zero-shot", "QGR off": "coop+vpt", "QGR on": "coop+vpt+qgr"}
    assert (df["status"] == "ok").all(), df[["arm", "error"]]
    for _, split in df.groupby("split"):
        assert split["split_hash"].nunique() == 1 and split["labelled_hash"].nunique() == 1
        assert split["n_test"].nunique() == 1
    assert df["split_hash"].nunique() == 2  # two different splits
    on, off = (df[df["arm"] == a].iloc[0] for a in ("QGR on", "QGR off"))
    assert on["qgr_lam"] == 5.0 and off["qgr_lam"] == 0.0  # the only difference
    assert on["recipe"] == off["recipe"] and "qgr_stats=True" in on["recipe"] and "epochs=2" in on["recipe"]
    assert result.summary["splits"].tolist() == [2, 2, 2] and result.complete_splits == [0, 1]
    assert "2 splits per arm" in panel.message.value and panel.plots.value[:4] == b"\x89PNG"
    assert panel.traces.value[:4] == b"\x89PNG"
    assert result.random_init and "random-init" in panel.message.value


def test_compare_panel_draws_gradient_cosine_traces_for_both_arms(demo_table):
    from clipiqa.protocol import ProtocolResult
    if "histories" not in ProtocolResult.__dataclass_fields__:
        pytest.skip("needs ProtocolResult.histories (the protocol keeps each adapted arm's History)")
    panel = ComparePanel(demo_table.head(40), shots=10, n_splits=1, epochs=2, trainable="prompts", n_boot=20,
                         model_factory=_tiny_factory(), model_name="tiny", n_views=1)
    result = panel.compare()
    assert set(result.histories) == {(0, "QGR off"), (0, "QGR on")}
    cfg_on, cfg_off = (result.histories[(0, a)].config["qgr"] for a in ("QGR on", "QGR off"))
    assert cfg_on["enabled"] and not cfg_off["enabled"] and cfg_on["lam"] == 5.0
    assert all(np.isfinite(r["cosine"]) for r in result.histories[(0, "QGR off")].steps)  # qgr_stats=True


def test_compare_panel_maps_the_trainable_set_to_a_protocol_pair(demo_table):
    panel = ComparePanel(demo_table.head(40), trainable="last-blocks", model_factory=_tiny_factory(), model_name="tiny")
    assert panel.methods["QGR off"] == "ft" and panel.methods["QGR on"] == "ft+qgr"
    assert panel.lr.value == 1e-3 and "lr" not in panel.overrides()  # the recipe's lr
    panel.trainable.value = "text"
    assert panel.methods["QGR on"] == "coop+qgr" and panel.lr.value == 2e-3  # follows the new recipe
    panel.epochs.value = 1
    assert panel.overrides()["warmup_epochs"] == 0  # CoOp's warm-up epoch would leave no budget
    with pytest.raises(TypeError, match="prompts="):
        ComparePanel(demo_table.head(40), model_factory=lambda: None, model_name="tiny")


def test_building_a_compare_panel_leaves_the_arm_registry_alone(demo_table):
    """The panel only looks its pairs up: each is already a protocol arm (so ``clipiqa bench`` runs it in a fresh
    process), and building panels for every trainable set registers nothing."""
    before = dict(METHODS)
    assert {arm for pair in PAIRS.values() for arm in pair} <= set(before)
    for trainable in ("last-blocks", "prompts", "text"):
        ComparePanel(demo_table.head(40), trainable=trainable, model_factory=_tiny_factory(), model_name="tiny")
    assert dict(METHODS) == before


def test_compare_panel_stopped_after_k_splits_summarises_k_splits_per_arm(demo_table):
    """After Stop both arms are averaged over the same splits (once QGR off over 8 splits and QGR on over 7)."""
    panel = ComparePanel(demo_table.head(40), shots=10, n_splits=3, epochs=1, trainable="text", n_boot=20,
                         model_factory=_tiny_factory(), model_name="tiny", n_views=1)
    seen = []

    def progress(p):
        seen.append(p)
        if len(seen) == 4:  # split 0 done by all three arms, split 1 by the zero-shot arm only
            panel._stop_event.set()
    result = panel.compare(on_progress=progress)
    assert result.stopped and result.complete_splits == [0]
    assert sorted(result.per_split["split"].tolist()) == [0, 0, 0, 1]  # the partial split is kept, marked
    assert result.per_split["complete"].tolist().count(False) == 1
    assert result.summary["splits"].tolist() == [1, 1, 1]
    assert result.paired["splits"] == 1
    assert "1 split per arm (stopped: 1 of 3 splits finished by every arm" in result.paired_text


def _rows(srcc_on, srcc_off, same_other=True):
    rows = []
    for split, (a, b) in enumerate(zip(srcc_on, srcc_off)):
        for arm, value in (("zero-shot", 0.1), ("QGR off", b), ("QGR on", a)):
            rows.append({"split": split, "arm": arm, "method": arm, "status": "ok", "srcc": value, "plcc": 0.2,
                         "krcc": value, "rmse": 0.3 if same_other or arm != "QGR on" else 0.31,
                         "chance_band": 0.5, "final_loss": 1.0})
    return pd.DataFrame(rows)


def test_compare_summaries_use_only_splits_every_arm_finished():
    from clipiqa.widgets.compare import complete_splits, paired_difference, summarize_arms
    df = _rows([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    df = df[~((df["split"] == 2) & (df["arm"] == "QGR on"))]  # QGR on missed the last split
    complete = complete_splits(df)
    assert complete == [0, 1]
    summary = summarize_arms(df, complete)
    assert summary["splits"].tolist() == [2, 2, 2]
    assert summary.set_index("arm").loc["QGR off", "srcc_mean"] == pytest.approx(0.4)
    paired = paired_difference(df, complete)
    assert paired["splits"] == 2 and paired["wins"] == 2 and paired["mean_diff"] == pytest.approx(0.15)


def test_compare_names_a_tie_as_identical():
    """A tie is named as identical (the text once said "better on 0 of 2" over an empty chart)."""
    from clipiqa.widgets.compare import TIE_TEXT, paired_difference, paired_text
    tie = paired_difference(_rows([0.5, 0.3], [0.5, 0.3]), [0, 1])
    assert tie["identical"] and tie["ties"] == 2
    assert paired_text(tie, 2, 2, False).startswith(TIE_TEXT)
    equal_srcc_only = paired_difference(_rows([0.5, 0.3], [0.5, 0.3], same_other=False), [0, 1])
    assert not equal_srcc_only["identical"] and "equal on 2 of 2" in paired_text(equal_srcc_only, 2, 2, False)


def test_a_tie_where_qgr_projected_gradients_does_not_claim_it_never_did():
    """Identical metrics do not prove QGR never acted: when the QGR-on histories show projected tensors, the tie
    is named as identical results, not as "QGR never changed a gradient"."""
    from clipiqa.widgets.compare import TIE_TEXT, paired_difference, paired_text
    tie = paired_difference(_rows([0.5, 0.3], [0.5, 0.3]), [0, 1])
    tie["qgr_acted"] = True
    text = paired_text(tie, 2, 2, False)
    assert TIE_TEXT not in text and "identical" in text and "projected" in text


def test_compare_panel_names_a_real_tie(demo_table):
    """The text context alone gets no semantic gradient, so QGR cannot act: both arms train identically."""
    panel = ComparePanel(demo_table.head(40), shots=10, n_splits=2, epochs=2, trainable="text", n_boot=20,
                         model_factory=_tiny_factory(), model_name="tiny", n_views=1)
    result = panel.run(block=True)
    assert result.identical and result.paired_text.startswith("identical: QGR never changed a gradient")
    assert "identical: QGR never changed a gradient" in panel.message.value


def test_compare_panel_shows_a_tie_and_the_human_ceiling(tmp_path, demo_table):
    from clipiqa.widgets.compare import CompareResult, TIE_TEXT, paired_difference
    s = Session(tmp_path / "two", images=demo_table.head(12), model_name="tiny", device="cpu")
    q = demo_table.set_index("path")["q"]
    for rater, shift in (("ann", 0), ("ben", 1)):
        s.rater = rater
        for p in s.images:
            s.label(p, min(5, 1 + round(4 * q[p]) + shift * (p.endswith("0.png"))))
    panel = ComparePanel(s, n_splits=1, model_factory=_tiny_factory())
    ceiling = s.agreement(n_boot=50)
    assert ceiling.available
    df = _rows([0.5], [0.5]).assign(complete=True)
    result = CompareResult(df, pd.DataFrame({"arm": ["x"]}), complete_splits=[0], n_splits=1,
                           paired=paired_difference(df, [0]), ceiling=ceiling)
    panel.show(result)
    assert TIE_TEXT in panel.message.value and panel.plots.value[:4] == b"\x89PNG"


def test_compare_panel_from_a_session(session, demo_table):
    _label_from_severity(session, demo_table, 20)
    panel = ComparePanel(session, shots=8, n_splits=1, epochs=1, trainable="prompts", n_boot=20, n_views=1)
    result = panel.compare()
    assert len(result.per_split) == 3 and result.per_split["split_hash"].nunique() == 1
    assert result.ceiling is None  # one rater: no human ceiling


def test_compare_panel_blocking_run_reraises(demo_table):
    panel = ComparePanel(demo_table.head(5), model_factory=_tiny_factory(), model_name="tiny")
    with pytest.raises(ValueError, match="at least 8 labelled images"):
        panel.run(block=True)
    assert "at least 8" in panel.message.value


# ----------------------------------------------------------------------------------------------- AttributionViewer
def test_attribution_viewer_renders_every_method(session, demo_table):
    from clipiqa.explain import ATTRIBUTION_METHODS
    viewer = AttributionViewer(session, images=list(demo_table["path"][:2]), auto=False,
                               method_options={"ig": {"n_steps": 4}, "smoothgrad": {"nt_samples": 2},
                                               "occlusion": {"window": 56}})
    assert "random-init weights" in viewer.banner.value
    for method in ATTRIBUTION_METHODS:
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


def _viewer_table(demo_table):
    """A clean photo and two distorted versions of it (noise and blur), as a demo table."""
    t = demo_table[demo_table["content_id"] == demo_table["content_id"].iloc[0]]
    return pd.concat([t[t["distortion"] == "reference"], t[(t["distortion"] == "white_noise") & (t["level"] == 3)],
                      t[(t["distortion"] == "gaussian_blur") & (t["level"] == 2)]])


def test_attribution_viewer_focus_uses_the_viewed_images_distortion(session, demo_table):
    """The focus diagnostic uses the viewed image's distortion: it once always blurred a rectangle, even for a noise
    image; its table did not name the image and went stale when the picker moved to another image."""
    table = _viewer_table(demo_table)
    names = [p.rsplit("/", 1)[-1] for p in table["path"]]
    viewer = AttributionViewer(session, images=table, method="ig", auto=True,
                               method_options={"ig": {"n_steps": 4, "internal_batch_size": 4}})
    viewer.image_picker.value = names[1]  # the white-noise version
    diag = viewer.diagnostics()
    assert diag["image"].tolist() == [names[1]] * 2 and diag["focus_test"].tolist() == ["white_noise 3"] * 2
    assert viewer.table.value.count(names[1]) >= 2  # in the table and its caption
    assert f"its clean reference {names[0]}" in viewer.table.value and "own distortion" in \
        viewer.table.value
    viewer.image_picker.value = names[2]  # the table follows the picker
    assert viewer.diagnostics_table["image"].tolist() == [names[2]] * 2
    assert viewer.diagnostics_table["focus_test"].tolist() == ["gaussian_blur 2"] * 2
    assert names[1] not in viewer.table.value
    viewer.image_picker.value = names[0]  # the clean photo: the default test, said so
    assert viewer.diagnostics_table["focus_test"].iloc[0] == "gaussian_blur 4" and "a clean image" in \
        viewer.table.value


def test_attribution_viewer_without_auto_clears_a_stale_table(session, demo_table):
    table = _viewer_table(demo_table)
    viewer = AttributionViewer(session, images=list(table["path"]), auto=False,
                               method_options={"ig": {"n_steps": 4}})
    viewer.method_picker.value = "ig"
    viewer.diagnostics()
    assert "distortion is unknown" in viewer.table.value  # a file list says no distortion
    second = list(viewer.images)[1]
    viewer.image_picker.value = second
    assert viewer.diagnostics_table is None and f"press Diagnostics for {second}" in viewer.table.value


def test_attribution_viewer_draws_a_colour_bar(session, demo_table, monkeypatch):
    from matplotlib.figure import Figure

    import clipiqa.widgets.attribution as attribution
    calls = []
    real = attribution.colour_bar
    monkeypatch.setattr(attribution, "colour_bar", lambda fig, axes, signed: calls.append(signed) or
                        real(fig, axes, signed))
    viewer = AttributionViewer(session, images=list(demo_table["path"][:1]), auto=False,
                               method_options={"ig": {"n_steps": 4}})
    viewer.method_picker.value = "ig"
    viewer.render()
    viewer.signed.value = True
    viewer.render()
    assert calls == [False, True]
    fig = Figure()
    axes = fig.subplots(1, 2)
    real(fig, axes, signed=True)
    assert len(fig.axes) == 3 and "red raises" in fig.axes[-1].get_ylabel()


# ----------------------------------------------------------------------------------------------- Stop during Run All
_KERNEL_SETUP = """
import json
from clipiqa.session import Session
from clipiqa.widgets import AdaptPanel
session = Session({folder!r}, images={paths!r}, model_name="tiny", device="cpu")
for path, score in {scores!r}:
    session.label(path, score)
panel = AdaptPanel(session, epochs=10000, trainable="prompts", device="cpu")
print(json.dumps({{"stop": panel.stop_button.model_id, "status": panel.status_label.model_id}}))
"""


@pytest.mark.slow
def test_adapt_panel_stop_click_ends_a_blocking_run_like_run_all_does(tmp_path, demo_table):
    """Stop works in a blocking run: during Run All the cell ``panel.run(block=True)`` keeps the kernel busy, so the
    Stop click waited for the end of training (147 s) and the checkpoint became active. In a real kernel: queue the
    blocking cell and the cell after it (what Run All sends), click Stop over the widget protocol (what the browser
    sends) while it trains; training ends within one step, the checkpoint is kept but not activated, and the next cell
    runs after the blocking one."""
    import json
    import os

    from jupyter_client.manager import start_new_kernel
    table = demo_table.head(12)
    setup = _KERNEL_SETUP.format(folder=str(tmp_path / "sess"), paths=table["path"].tolist(),
                                 scores=[(p, 1 + round(4 * q)) for p, q in zip(table["path"], table["q"])])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MPLBACKEND", None)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
    try:
        out = []
        reply = kc.execute_interactive(setup, timeout=180, output_hook=out.append)
        assert reply["content"]["status"] == "ok", reply["content"]
        ids = json.loads(next(m["content"]["text"] for m in out if m["msg_type"] == "stream"))
        run_id = kc.execute("history = panel.run(block=True)")  # Run All sends every cell at once
        after_id = kc.execute("print(json.dumps([panel.status, history.stopped, len(history.steps), "
                              "session.active_checkpoint, session.checkpoints()['stopped'].tolist()]))")
        statuses, printed, clicked, idle = [], None, False, set()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and after_id not in idle:
            try:
                msg = kc.get_iopub_msg(timeout=5)
            except Exception:  # queue.Empty
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg" and content["comm_id"] == ids["status"]:
                value = content["data"].get("state", {}).get("value")
                if value:
                    statuses.append(value)
                    if not clicked and value.startswith("step 3/"):  # training for a few steps: click Stop
                        kc.shell_channel.send(kc.session.msg("comm_msg", {
                            "comm_id": ids["stop"], "data": {"method": "custom", "content": {"event": "click"}}}))
                        clicked = True
                        deadline = min(deadline, time.monotonic() + 90)  # a served click ends it in a second
            elif kind == "stream" and msg["parent_header"].get("msg_id") == after_id:
                printed = json.loads(content["text"])
            elif kind == "error":
                raise AssertionError(f"a cell failed: {content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                idle.add(msg["parent_header"].get("msg_id"))
        assert clicked, f"training never reached step 3; statuses: {statuses[-5:]}"
        assert run_id in idle and printed is not None, f"the run did not stop on the click; last: {statuses[-3:]}"
        status, stopped, steps, active, cards = printed
        assert status == "stopped" and stopped and cards == [True] and active is None  # kept, not activated
        assert steps < 100  # of 10000 epochs
        assert "stopping" in statuses and statuses[-1] == "stopped"
        assert len({s for s in statuses if s.endswith("(stopping)")}) <= 1  # within one step of the click
    finally:
        km.shutdown_kernel(now=True)
        kc.stop_channels()


def test_label_panel_hides_the_file_name_until_rated_or_asked(session):
    panel = LabelPanel(session)
    name = os.path.basename(panel.current_path)
    assert name not in panel.title.value and "image 1 of" in panel.title.value  # the name could give it away
    panel.show_name.value = True
    assert name in panel.title.value
    panel.show_name.value = False
    panel.rate(3)
    panel.previous()
    assert name in panel.title.value  # once rated, it is shown


def test_label_panel_asks_before_a_new_rater_starts(session, tmp_path):
    ann = LabelPanel(session)
    ann.rater_box.value = "engineer"
    ann.rate(4)
    again = LabelPanel(Session.open(tmp_path / "sess"))
    again.rater_box.value = "engineerengineer"  # retyped after the prefilled name
    assert again.session.rater != "engineerengineer" and "has not rated here yet" in again.message.value
    assert again.confirm_rater.layout.display != "none"
    again.rater_box.value = "engineer"  # corrected
    assert again.session.rater == "engineer" and again.confirm_rater.layout.display == "none"
    again.rater_box.value = "newcomer"
    again.confirm_rater.click()  # a real new rater, confirmed
    assert again.session.rater == "newcomer" and "rating as newcomer" in again.message.value


def test_adapt_panel_trains_menu_says_what_is_trained_not_where(session):
    from clipiqa.widgets import AdaptPanel
    panel = AdaptPanel(session, device="cpu")
    labels = [label for label, _ in panel.trainable.options]
    assert not any("GPU" in label or "CPU" in label for label in labels)  # "(GPU)" showed on a CPU
    assert labels[0].startswith("last 4 blocks")


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_compare_figures_keep_legends_off_the_data_and_arms_in_their_colours():
    """The compare panel's legends lie outside every axes (they sat over the lines), and each arm has its method's
    colour in both figures (it changed between them)."""
    from types import SimpleNamespace

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    from clipiqa.palette import arm_colour
    from clipiqa.widgets.compare import CompareResult, paired_difference
    from clipiqa.widgets.compare_plots import draw_srcc, draw_traces
    df = _rows([0.6, 0.2], [0.4, 0.3]).assign(complete=True)
    steps = pd.DataFrame({"step": [1, 2, 3], "cosine": [0.2, -0.1, 0.4], "frac_projected": [0.5, 0.0, 1.0]})
    history = SimpleNamespace(steps_frame=lambda: steps)
    ceiling = SimpleNamespace(available=True, split_half=0.9, split_half_lo=0.85, split_half_hi=0.95)
    result = CompareResult(df, pd.DataFrame({"arm": ["x"]}), complete_splits=[0, 1], n_splits=2,
                           paired=paired_difference(df, [0, 1]), ceiling=ceiling,
                           histories={(s, a): history for s in (0, 1) for a in ("QGR off", "QGR on")},
                           methods={"zero-shot": "zero-shot", "QGR off": "coop+vpt", "QGR on": "coop+vpt+qgr"})
    for draw in (lambda fig: draw_srcc(fig, result, ("zero-shot", "QGR off", "QGR on"), ""),
                 lambda fig: draw_traces(fig, result)):
        fig = Figure(figsize=(10, 3.4), dpi=80, layout="constrained")
        draw(fig)
        FigureCanvasAgg(fig).draw()  # lays the figure out (constrained layout) as the panel's PNG does
        renderer = fig.canvas.get_renderer()
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends, "a legend says what the colours are"
        for legend in legends:
            box = legend.get_window_extent(renderer)
            assert not any(_overlaps(box, ax.get_window_extent(renderer)) for ax in fig.axes)
    srcc_fig = Figure(figsize=(10, 3.4), layout="constrained")
    draw_srcc(srcc_fig, result, ("zero-shot", "QGR off", "QGR on"), "")
    dots = {to_hex(c.get_facecolor()[0]) for c in srcc_fig.axes[0].collections if len(c.get_offsets())}
    assert {arm_colour("coop+vpt"), arm_colour("coop+vpt+qgr"), arm_colour("zero-shot")} <= dots
    trace_fig = Figure(figsize=(10, 3.0), layout="constrained")
    draw_traces(trace_fig, result)
    lines = {to_hex(line.get_color()) for line in trace_fig.axes[0].get_lines() if line.get_label() in
             ("QGR off", "QGR on")}
    assert lines == {arm_colour("coop+vpt"), arm_colour("coop+vpt+qgr")}
