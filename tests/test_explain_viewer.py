"""Notebook 05's AttributionViewer under quick clicks, driven without a browser (tests/test_explain_browser.py
drives it in JupyterLab): a change shows a busy state at once, only the latest selection is computed and drawn,
and the figure and table end on the selection in the dropdowns. The model is the random-init ``tiny`` preset.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

import clipiqa.widgets.attribution as attribution
from clipiqa.explain.diagnostics import to_model_input
from clipiqa.session import Session
from clipiqa.widgets import AttributionViewer


@pytest.fixture
def viewer(tmp_path, demo_table):
    session = Session(tmp_path / "sess", images=demo_table.head(4), model_name="tiny", device="cpu")
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for name in "abcd"}
    return AttributionViewer(session, images=images, method="ig", method_options={"ig": {"n_steps": 2}})


@pytest.fixture
def gate(monkeypatch):
    """Hold every attribution until ``gate.set()``; ``gate.calls`` records the images attributed."""
    event, started, calls = threading.Event(), threading.Event(), []
    real = attribution.attribute

    def held(model, batch, method, **options):
        calls.append(batch.detach().clone())
        started.set()
        assert event.wait(60), "the test never opened the gate"
        return real(model, batch, method, **options)

    monkeypatch.setattr(attribution, "attribute", held)
    event.calls, event.started = calls, started
    yield event
    event.set()  # never leave the viewer's thread waiting


def _computed(viewer, calls) -> list[str]:
    """The names of the images the attributions were computed for, in order (two models per image)."""
    inputs = {name: to_model_input(viewer.model, viewer.image(name))[0] for name in viewer.images}
    return [next(n for n, x in inputs.items() if torch.equal(batch[0], x)) for batch in calls]


def test_quick_changes_show_busy_at_once_and_only_the_latest_selection(viewer, gate):
    viewer.diagnostics()  # a table on screen: it must follow the selection too
    assert viewer.shown == ("a", "ig") and viewer.rendered == [("a", "ig")]
    assert not viewer.busy and "showing ig for a" in viewer.status.value
    viewer.image_picker.value = "b"  # returns at once: the work runs in the background
    assert gate.started.wait(60)
    assert viewer.busy and "computing ig for b" in viewer.status.value
    assert "clipiqa-busy" in viewer.view._dom_classes and "clipiqa-busy" in viewer.table._dom_classes  # dimmed
    assert viewer.shown == ("a", "ig")  # the old figure stays, dimmed, until the new one is ready
    viewer.image_picker.value = "c"  # quick clicks while b is computed
    viewer.image_picker.value = "d"
    assert "computing ig for d" in viewer.status.value  # the busy line names the latest selection
    gate.set()
    assert viewer.wait(120)
    assert viewer.shown == ("d", "ig") and viewer.rendered == [("a", "ig"), ("d", "ig")]
    assert viewer.dropped == [("b", "ig")]  # computed, overtaken meanwhile: never drawn
    assert _computed(viewer, gate.calls) == ["b", "b", "d", "d"]  # c was overtaken before it started
    assert not viewer.busy and "showing ig for d" in viewer.status.value
    assert "clipiqa-busy" not in viewer.view._dom_classes and "clipiqa-busy" not in viewer.table._dom_classes
    assert viewer.view.value == viewer.figure_png == viewer.render()  # the figure is d's
    assert viewer.diagnostics_table["image"].tolist() == ["d", "d"]  # and so is the table
    assert "d: focus" in viewer.table.value and "b: focus" not in viewer.table.value


def test_a_method_change_during_a_computation_ends_on_both_dropdowns(viewer, gate):
    viewer.image_picker.value = "c"
    assert gate.started.wait(60)
    viewer.method_picker.value = "gradcam"
    gate.set()
    assert viewer.wait(120)
    assert viewer.shown == ("c", "gradcam") and viewer.dropped == [("c", "ig")]
    assert viewer.rendered[-1] == (viewer.image_picker.value, viewer.method_picker.value)


def test_the_viewer_draws_the_focus_test_and_names_units(viewer):
    table = viewer.diagnostics()
    assert viewer.focus_view.value[:4] == b"\x89PNG" and viewer.focus_view.layout.display != "none"
    assert "margin_drop" in table and "score_drop" not in table  # the unit in the name
    assert set(table["attribution"]) <= {"onto the damage", "away from the damage", "no shift"}
    assert "distortion or content?" in viewer.table.value and "random init" in viewer.table.value
    assert isinstance(table, pd.DataFrame)
