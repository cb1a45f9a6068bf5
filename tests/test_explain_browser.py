"""Notebook 05's attribution viewer in real JupyterLab and Chromium (the set-up of tests/test_browser.py): a new
selection shows the busy state at once (screenshot ``test-output/browser/05_viewer_busy.png``), quick clicks end on
the latest selection, and the figure, its message and the diagnostics table all name the image in the dropdown.
"""
from __future__ import annotations

import pytest

from test_browser import (CHROMIUM, CHROMIUM_ARGS, SHOTS, _run_whole_notebook, _shot, _wait_for,  # noqa: F401
                          lab, page, pytestmark)


@pytest.fixture(scope="module")
def browser():
    """Chromium, leaving the screenshots of other browser tests in place."""
    from playwright.sync_api import sync_playwright
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_explain_viewer_shows_busy_at_once_and_ends_on_the_latest_selection(lab, page):
    url, notebooks = lab
    _run_whole_notebook(page, url, "05_explain.ipynb")
    panel = page.locator(".clipiqa-attribution-viewer")
    panel.scroll_into_view_if_needed()
    status = panel.locator(".clipiqa-viewer-status")
    _wait_for(lambda: "showing ig for" in status.inner_text(), 60, "the first figure's status line")
    image = panel.locator("select").first
    names = image.locator("option").all_inner_texts()
    first, burst = image.input_value(), [n for n in names if n != image.input_value()][:3]
    for name in burst:  # quick clicks: each change arrives while the one before is computed
        image.select_option(label=name)
    panel.locator(".clipiqa-busy").first.wait_for(state="attached", timeout=10_000)  # dimmed at once
    assert "computing ig for" in status.inner_text()
    _shot(panel, "05_viewer_busy.png")
    last = burst[-1]
    _wait_for(lambda: f"showing ig for {last}" in status.inner_text(), 180, f"the viewer to show {last}")
    assert panel.locator(".clipiqa-busy").count() == 0 and image.input_value() == last
    assert f"ig on {last}" in panel.inner_text()  # the figure's message
    table = panel.locator(".clipiqa-table").first.inner_text()
    assert table.count(last) >= 2  # one row per model, both for the latest image
    assert not any(name in table for name in [first, *burst[:-1]])  # nothing left of earlier selections
    _shot(panel, "05_viewer_latest.png")
