"""The labelling panel's reading aids (issue 24): the scale's words under the slider, a zoom to the image's own
pixels, a progress bar of this rater's ratings, and the review grid of one's labels (notebook 02).

Panels are driven without a browser (tests/test_browser.py clicks the same controls in JupyterLab); the model is
the random-init ``tiny`` preset, which none of these views uses for a number.
"""
from __future__ import annotations

import html
import io
import os
import re

import pytest
from PIL import Image

from clipiqa.session import Session
from clipiqa.widgets import LabelPanel, review_grid, review_table


@pytest.fixture
def photos(tmp_path, photo_dir):
    return Session(tmp_path / "photos-session", images=sorted(map(str, photo_dir.glob("*.jpg"))), model_name="tiny", device="cpu")


@pytest.fixture
def demo(tmp_path, demo_table):
    return Session(tmp_path / "demo-session", images=demo_table.head(12), model_name="tiny", device="cpu")


def _shown_size(panel) -> tuple[int, int]:
    return Image.open(io.BytesIO(panel.image.value)).size


def _text(html_text: str) -> str:
    """What a person reads of an HTML value: tags and style blocks removed, spaces collapsed."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html_text)))
    return " ".join(text.split())


def test_the_words_of_each_level_stand_under_the_slider_in_order(demo):
    assert _text(LabelPanel(demo).ticks.value) == "1 bad 2 poor 3 fair 4 good 5 excellent"
    custom = Session(demo.folder.parent / "custom", images=[demo.images[0]], scale=["blurry", "ok", "crisp"],
                     model_name="tiny", device="cpu")
    assert _text(LabelPanel(custom).ticks.value) == "1 blurry 2 ok 3 crisp"


def test_zoom_shows_the_image_at_its_own_pixels_and_back_to_fit(photos):
    panel = LabelPanel(photos, max_side=240)
    native = Image.open(panel.current_path).size
    assert max(_shown_size(panel)) <= 240 < max(native)  # fitted
    panel.zoom.value = 1
    assert _shown_size(panel) == native and f"{native[0]} x {native[1]} px, shown at 100 %" in panel.title.value
    assert panel.viewer.layout.overflow == "auto"  # scrollable, not squeezed into the panel
    panel.zoom.value = 2
    assert _shown_size(panel) == (2 * native[0], 2 * native[1])
    panel.rate(4)  # the zoom stays on for the next image, at that image's own size
    assert _shown_size(panel) == tuple(2 * v for v in Image.open(panel.current_path).size)
    panel.zoom.value = "fit"
    assert max(_shown_size(panel)) <= 240 and "shown at" not in panel.title.value


def test_zoom_keeps_the_file_name_hidden_while_rating(photos):
    panel = LabelPanel(photos)
    name = os.path.basename(panel.current_path)
    for zoom in (1, 2, "fit"):
        panel.zoom.value = zoom
        assert name not in panel.title.value


def test_progress_bar_counts_this_raters_ratings_of_all_images(demo):
    panel = LabelPanel(demo)
    assert (panel.progress.value, panel.progress.max, panel.progress.description) == (0, 12, "Rated 0 of 12")
    panel.rate(5)
    panel.rate(2)
    panel.skip()  # a skip is not a rating
    assert (panel.progress.value, panel.progress.description) == (2, "Rated 2 of 12")
    panel.undo()
    panel.undo()
    assert (panel.progress.value, panel.progress.description) == (1, "Rated 1 of 12")
    panel.rater_box.value = "second"  # another rater starts at zero
    assert panel.progress.value == 0


def test_review_grid_groups_my_labels_best_first_with_file_names(demo):
    panel = LabelPanel(demo)
    given = {}
    for score in (2, 5, 2, 4):
        given[panel.current_path] = float(score)
        panel.rate(score)
    panel.skip()
    table = review_table(demo)
    assert list(table["score"]) == [5.0, 4.0, 2.0, 2.0] and dict(zip(table["path"], table["score"])) == given
    assert list(table["level"]) == ["5 excellent", "4 good", "2 poor", "2 poor"]
    text = _text(review_grid(demo).value)
    names = [os.path.basename(p) for p in table["path"]]
    assert "4 of 12 images, 1 skipped" in text
    positions = [text.index(s) for s in ("5 excellent (1)", names[0], "4 good (1)", names[1], "2 poor (2)")]
    assert positions == sorted(positions)  # best level first, each image under its level, names shown
    assert all(n in text for n in names)
    unrated = [os.path.basename(p) for p in demo.images if p not in given]
    assert not any(n in text for n in unrated)  # only what I rated: no name of an image still to rate
    panel.goto(names[0])  # a slip seen in the grid: back to it by its file name, rate it again
    assert panel.current_path == table["path"][0] and panel.slider.value == 5.0
    panel.rate(3)
    assert review_table(demo)["score"].tolist() == [4.0, 3.0, 2.0, 2.0]


def test_review_grid_of_another_rater_and_of_none(demo):
    LabelPanel(demo).rate(3)
    other = Session.open(demo.folder)
    other.rater = "second"
    assert "no labels by second yet" in review_grid(other).value
    grid = review_grid(other, rater=demo.rater)
    assert "3 fair (1)" in _text(grid.value) and "1 of 12 images" in _text(grid.value)
