"""Real JupyterLab in Debian's Chromium, driven by Playwright: the panels work where users use them.

The test starts ``jupyter lab`` on a free port with a fresh ``JUPYTER_CONFIG_DIR`` (kernel auto-start, no news
or update checks, read-only extension manager) on a temporary copy of ``notebooks/`` and ``CLIPIQA_SMOKE=1``.

* 02 by hand: with the stand-in rater off and no labels yet, run all cells (no error: a session without labels
  is a normal state), then rate images by clicking *Save + next*, by the keys box and by the slider handle's
  arrow key, undo with the button, and see ``labels.csv`` change on disk after each; *Save + next* on an image
  not rated yet (slider at "not rated") is refused and writes nothing.
* two raters: two tabs, each with its own notebook and kernel on one session folder, type their names in the
  Rater box and rate the same images with the keys box; the export shows both (``n_ratings`` 2).
* 03: run all cells and watch the progress bar advance while the kernel is busy in the blocking run; then start
  a background run with the *Run* button (kernel idle: the notebook stays usable), see it advance, press *Stop*
  and see it stop, with a checkpoint marked stopped on disk and not made active.
* 03 Stop during Run All: a copy with a long budget; Stop clicked while the blocking cell trains ends the run
  (the busy kernel serves the click), the checkpoint is marked stopped and not made active, the rest runs.
* the label panel's reading aids: the scale's words under the slider's stops (lined up with the handle), the
  progress bar after a rating, the 100 % zoom (own pixels, scrollable, file name still hidden), and the review grid
  of one's labels (screenshot ``label_panel.png``).
* 04 and 07: run all cells; the compare panel summarises "k splits per arm", 07 shows the learning curve, the
  held-out scatter, gallery and worst predictions, and the verdict (screenshots for a person to look at).

Screenshots go to ``test-output/browser/`` in the repository (printed at the end). Skipped when
``/usr/bin/chromium`` is missing (``scripts/setup.sh test`` installs it as root).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import pytest

from clipiqa.notebook_sources import SOURCE_OPTIONS

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-output" / "browser"
TOKEN = "clipiqa-browser-test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: install Debian's chromium "
                       "(apt-get install -y chromium, or scripts/setup.sh test as root) to run the browser tests"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright is not installed: pip install -e '.[test]'"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(config_dir: Path) -> None:
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    for plugin, values in {"notebook-extension/tracker": {"autoStartDefaultKernel": True},
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}
                           }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _set_parameters(path: Path, **values) -> None:
    """Append assignments to the notebook's parameters cell (what papermill-style injection does), in the
    ``.ipynb`` and its paired Jupytext source alike (as JupyterLab saves them): Jupytext refuses to open a pair
    whose ``.ipynb`` is newer than its ``.py`` and differs from it."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nbformat.write(nb, path)
    path.with_suffix(".py").write_text(jupytext.writes(nb, fmt=SOURCE_OPTIONS), encoding="utf-8")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab on a copy of the notebooks; yields (base url, notebooks folder)."""
    root = tmp_path_factory.mktemp("lab")
    notebooks = root / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks, ignore=shutil.ignore_patterns("clipiqa-work", ".ipynb_checkpoints"))
    _set_parameters(notebooks / "02_label_a_few.ipynb", STAND_IN_RATER=False)  # rated by hand, from no labels
    # 03 in its own session (40 stand-in labels, 30 to train, 10 held out) and long enough to watch it advance
    _set_parameters(notebooks / "03_adapt_on_gpu.ipynb", EPOCHS=40, SESSION="clipiqa-work/smoke/adapt-session")
    config = root / "jupyter-config"
    _write_settings(config)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), CLIPIQA_SMOKE="1", HF_HUB_OFFLINE="1",
               CLIPIQA_CACHE=str(root / "cache"), IPYTHONDIR=str(root / "ipython"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"))
    env.setdefault("OMP_NUM_THREADS", "1")  # see tests/test_notebooks.py
    env.pop("MPLBACKEND", None)
    port = _free_port()
    jupyter = Path(sys.executable).parent / "jupyter"
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={notebooks}",
         "--LabApp.extension_manager=readonly"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not start; log: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url, notebooks
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    shutil.rmtree(SHOTS, ignore_errors=True)  # only this run's screenshots
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
    print(f"\nscreenshots: {SHOTS}")


@pytest.fixture
def page(browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(120_000)
    page = context.new_page()
    yield page
    context.close()


# ---------------------------------------------------------------------------------------------------- helpers
def _open(page, url: str, name: str) -> None:
    """Open a notebook and wait until its kernel has been idle for two seconds in a row (JupyterLab may start
    and replace a first kernel right after opening)."""
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?token={TOKEN}")  # one notebook per workspace
    page.wait_for_selector(".jp-Notebook .jp-CodeCell")
    indicator = page.locator(".jp-Notebook-ExecutionIndicator")
    idle_since = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status_bar = page.locator("#jp-main-statusbar").inner_text()
        if indicator.get_attribute("data-status") == "idle" and "| Idle" in status_bar:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 2:
                return
        else:
            idle_since = None
        time.sleep(0.2)
    raise AssertionError(f"the kernel of {name} did not become idle")


def _run_all(page) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator('li[data-command="runmenu:run-all"]').click()


PROMPTS_JS = "() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(e => e.textContent)"


def _run_whole_notebook(page, url: str, name: str) -> None:
    """Open notebook ``name``, Run All, wait until every cell ran, and make the page tall enough that a panel
    fits in one screenshot."""
    _open(page, url, name)
    _run_all(page)
    _wait_all_executed(page, timeout=300)
    page.set_viewport_size({"width": 1400, "height": 2400})


def _wait_all_executed(page, timeout: float = 180, rerun: bool = True) -> None:
    """Wait until every code cell shows an execution count (a failing cell stops a run-all, so this also means
    none failed). If the kernel sits idle with cells never run (JupyterLab replaced the kernel under a fresh
    run-all), run all once more."""
    deadline = time.monotonic() + timeout
    stuck_since = None
    while time.monotonic() < deadline:
        prompts = [p.strip() for p in page.evaluate(PROMPTS_JS)]
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return
        idle = page.locator(".jp-Notebook-ExecutionIndicator").get_attribute("data-status") == "idle"
        if idle and "[*]:" not in prompts:
            stuck_since = stuck_since or time.monotonic()
            if rerun and time.monotonic() - stuck_since > 5:
                _run_all(page)
                rerun, stuck_since = False, None
        else:
            stuck_since = None
        time.sleep(0.2)
    _shot(page, "failure.png")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    raise AssertionError(f"not every cell ran: prompts {page.evaluate(PROMPTS_JS)}; stderr outputs: "
                         f"{errors.all_inner_texts()[-3:]}; screenshot {SHOTS / 'failure.png'}")


def _labels(notebooks: Path) -> list[tuple[str, float]]:
    """labels.csv of notebook 02's session (the export: one row per image, its MOS), in session order."""
    path = notebooks / "clipiqa-work" / "smoke" / "label-session" / "labels.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [(os.path.basename(r["path"]), float(r["mos"])) for r in csv.DictReader(f)]


def _last_rated(notebooks: Path) -> tuple[str, float] | None:
    """The latest committed rating in notebook 02's session database (the export is in image order, not rating
    order). The store rewrites labels.csv inside the rating's transaction, before its COMMIT (so that a failed
    export rolls the rating back): a new row in labels.csv can be seen a moment before the database shows the
    rating, so callers wait for it. None before the first rating is committed."""
    con = sqlite3.connect(notebooks / "clipiqa-work" / "smoke" / "label-session" / "labels.sqlite")
    try:
        row = con.execute("SELECT CAST(i.path AS TEXT), r.score FROM ratings r JOIN images i ON "
                          "i.id = r.image WHERE r.undone IS NULL ORDER BY r.seq DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return None if row is None else (os.path.basename(row[0]), row[1])


def _wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _shot(locator_or_page, name: str) -> None:
    locator_or_page.screenshot(path=str(SHOTS / name))


def _progress(panel) -> float:
    """The adapt panel's progress bar fill in percent (the width the browser draws)."""
    width = panel.locator(".widget-hprogress .progress-bar").evaluate("e => e.style.width || '0%'")
    return float(width.rstrip("%") or 0)


# ---------------------------------------------------------------------------------------------------- tests
def test_label_in_the_browser_writes_labels_csv(lab, page):
    url, notebooks = lab
    _open(page, url, "02_label_a_few.ipynb")
    _run_all(page)
    _wait_all_executed(page)
    panel = page.locator(".clipiqa-label-panel")
    panel.scroll_into_view_if_needed()
    assert "toy model trained on synthetic distortions" in panel.inner_text()
    assert _labels(notebooks) == []  # by hand: no labels yet, and every cell ran
    assert "no labels yet" in page.locator(".jp-Notebook").inner_text()
    _shot(panel, "02_label_panel_ready.png")
    title = panel.locator(".widget-html-content").nth(1)
    assert "image 1 of" in title.inner_text() and not re.search(r"\S+\.png", title.inner_text())  # name hidden
    panel.get_by_role("button", name="show file name").click()  # on request (it could give the answer away)
    _wait_for(lambda: re.search(r"\S+\.png", title.inner_text()), 30, "the file name on request")

    def shown() -> str:
        return re.search(r"(\S+\.png)", panel.locator(".widget-html-content").nth(1).inner_text()).group(1)

    readout = panel.locator(".widget-readout")
    # 1. "Save + next" on an image not rated yet: the slider says "not rated" and Save is refused
    name = shown()
    _wait_for(lambda: "not rated" in readout.inner_text(), what="the slider at 'not rated'")
    panel.get_by_role("button", name="Save + next").click()
    _wait_for(lambda: "choose a rating first" in panel.inner_text(), 30, "the refusal message")
    assert len(_labels(notebooks)) == 0 and shown() == name  # nothing written, still the same image
    _shot(panel, "02_label_panel_save_refused.png")
    handle = panel.locator(".noUi-handle")

    def rate_with_slider(presses: int, level: str, rows: int) -> None:
        """ArrowRight ``presses`` times from "not rated" on the shown image, Save + next, and check what was stored."""
        name = shown()
        _wait_for(lambda: "not rated" in readout.inner_text(), what="the slider at 'not rated'")
        handle.focus()
        for _ in range(presses):
            page.keyboard.press("ArrowRight")
        _wait_for(lambda: readout.inner_text() == level, what=f"slider at {level}")
        panel.get_by_role("button", name="Save + next").click()
        _wait_for(lambda: len(_labels(notebooks)) == rows, what=f"row {rows} in labels.csv")
        _wait_for(lambda: _last_rated(notebooks) == (name, float(presses)), 90, "the rating committed")
        _wait_for(lambda: shown() != name, what="the panel to move on to the next image")

    # 2. the slider handle with the keyboard: ArrowRight x3 moves not rated -> 1 bad -> 2 poor -> 3 fair; save
    rate_with_slider(3, "3 fair", 1)
    # ... the next, unrated image does not inherit 3 fair: 4 x ArrowRight from "not rated" is 4 good
    rate_with_slider(4, "4 good", 2)
    # 3. the keys box: type 5 + Enter
    name = shown()
    keys = panel.locator(".widget-text").filter(has_text="Keys").locator("input")
    keys.click()
    page.keyboard.type("5")
    page.keyboard.press("Enter")
    _wait_for(lambda: len(_labels(notebooks)) == 3, what="a 3rd row")
    _wait_for(lambda: _last_rated(notebooks) == (name, 5.0), 90, "the rating committed")
    _wait_for(lambda: keys.input_value() == "", what="the keys box to clear")
    count = panel.locator(".widget-label").filter(has_text="labelled,")
    _wait_for(lambda: count.inner_text().startswith("3 labelled"), what="the count to say 3 labelled")
    # the box kept the focus: s + Enter skips, u + Enter undoes, without clicking again
    for key, text in (("s", "1 skipped"), ("u", "0 skipped")):
        page.keyboard.type(key)
        page.keyboard.press("Enter")
        _wait_for(lambda: text in count.inner_text(), 30, f"{key} + Enter in the keys box")
    _shot(panel, "02_label_panel_after_rating.png")
    # 4. Undo removes the last label from disk
    panel.get_by_role("button", name="Undo").click()
    _wait_for(lambda: len(_labels(notebooks)) == 2, what="undo to remove the row")
    _wait_for(lambda: shown() == name, what="undo to show the un-labelled image again")
    _shot(panel, "02_label_panel_after_undo.png")
    # 5. a focused button is pressed with the keyboard (Space, then Enter) like any HTML button
    for key, skipped in (("Space", 1), ("Enter", 2)):
        panel.get_by_role("button", name="Skip").focus()
        page.keyboard.press(key)
        _wait_for(lambda: f"{skipped} skipped" in count.inner_text(), 30, f"{key} on the focused Skip button")
    # ... and Tab moves the focus on: Skip -> Undo, whose Enter un-skips
    panel.get_by_role("button", name="Skip").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    _wait_for(lambda: "1 skipped" in count.inner_text(), 30, "Tab to Undo, Enter")
    _shot(panel, "02_label_panel_keyboard.png")


def test_adapt_in_the_browser_progresses_and_stops(lab, page):
    url, notebooks = lab
    _open(page, url, "03_adapt_on_gpu.ipynb")
    _run_all(page)
    panel = page.locator(".clipiqa-adapt-panel")
    panel.wait_for()
    indicator = page.locator(".jp-Notebook-ExecutionIndicator")
    run_cell = page.locator(".jp-CodeCell").filter(has_text="panel.run(block=True)")
    # while the blocking cell runs (kernel busy), the progress bar must advance
    seen, busy_seen = [], False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        prompt = run_cell.locator(".jp-InputPrompt").inner_text().strip()
        if prompt == "[*]:":
            busy = indicator.get_attribute("data-status") == "busy"
            busy_seen = busy_seen or busy
            value = _progress(panel)
            if busy and 0 < value < 100 and value not in seen:
                seen.append(value)
                if len(seen) == 2:
                    panel.scroll_into_view_if_needed()
                    _shot(page, "03_progress_while_kernel_busy.png")
        elif re.fullmatch(r"\[\d+\]:", prompt):
            break
        time.sleep(0.1)
    assert busy_seen and len(seen) >= 2, f"progress values seen while busy: {seen}"
    _wait_all_executed(page)
    assert _progress(panel) == 100.0
    _shot(panel, "03_adapt_panel_done.png")

    # a background run from the Run button: the kernel is idle, the bar moves, Stop stops it
    epochs = panel.locator(".widget-text").filter(has_text="Epochs").locator("input")
    epochs.fill("5000")
    epochs.press("Enter")
    status = panel.locator(".widget-label").filter(has_text=re.compile(r"^(done|step|running|stopp)"))
    panel.get_by_role("button", name="Run").click()
    def step() -> int:
        m = re.match(r"step (\d+)/", status.inner_text())
        return int(m.group(1)) if m else 0

    first = _wait_for(step, 120, "the background run to start stepping")
    _wait_for(lambda: step() >= first + 5, 120, "five more steps")
    assert indicator.get_attribute("data-status") == "idle"  # training runs in a thread: the notebook is free
    assert "/5000," in status.inner_text()  # the typed epochs reached the kernel (one full batch per epoch)
    panel.scroll_into_view_if_needed()
    _shot(page, "03_background_run_kernel_idle.png")
    panel.get_by_role("button", name="Stop").click()
    _wait_for(lambda: status.inner_text() == "stopped", 120, "the run to stop")
    _wait_for(lambda: panel.get_by_role("button", name="Run").is_enabled(), 30, "Run to be enabled again")
    _shot(panel, "03_adapt_panel_stopped.png")
    cards = sorted((notebooks / "clipiqa-work" / "smoke" / "adapt-session" / "checkpoints").glob("*/card.json"),
                   key=lambda p: json.loads(p.read_text())["created_ns"])
    assert len(cards) == 2 and json.loads(cards[-1].read_text())["stopped"] is True
    settings = json.loads((notebooks / "clipiqa-work" / "smoke" / "adapt-session" / "settings.json").read_text())
    assert settings["checkpoint"] == cards[0].parent.name  # the stopped run is kept, not activated
    assert "not active" in panel.inner_text()


def test_adapt_stop_during_run_all_stops_and_keeps_the_model(lab, page):
    """Stop works during Run All: the cell ``panel.run(block=True)`` keeps the kernel busy; the Stop click
    used to wait for the cell's end (training ran on for 147 s and its checkpoint became the session's model).
    Run All a copy of 03 with a long budget, click Stop while it trains: the run stops, the panel says the
    checkpoint is kept but not active, the card says stopped, the session's model is unchanged, and the rest of
    the notebook runs after it."""
    url, notebooks = lab
    name = "03_stop_during_run_all"
    for suffix in (".py", ".ipynb"):  # the pair, the source first (Jupytext opens a pair by its newest file)
        shutil.copy(notebooks / f"03_adapt_on_gpu{suffix}", notebooks / f"{name}{suffix}")
    epochs, folder = 5000, notebooks / "clipiqa-work" / "smoke" / "stop-session"
    _set_parameters(notebooks / f"{name}.ipynb", EPOCHS=epochs, SESSION=str(folder.relative_to(notebooks)))
    _open(page, url, f"{name}.ipynb")
    _run_all(page)
    panel = page.locator(".clipiqa-adapt-panel")
    panel.wait_for()
    run_cell = page.locator(".jp-CodeCell").filter(has_text="panel.run(block=True)")
    labels = panel.locator(".widget-label")

    def status() -> str:  # the status label's text now (no waiting: it reads "idle" until the run starts)
        texts = [t for t in labels.all_inner_texts() if re.match(r"(idle|done|step|running|stopp)", t)]
        return texts[0] if texts else ""

    def step() -> int:
        m = re.match(r"step (\d+)/", status())
        return int(m.group(1)) if m else 0

    _wait_for(lambda: step() >= 3, 300, "training to run a few steps")
    assert run_cell.locator(".jp-InputPrompt").inner_text().strip() == "[*]:"  # inside the blocking cell
    assert page.locator(".jp-Notebook-ExecutionIndicator").get_attribute("data-status") == "busy"
    panel.get_by_role("button", name="Stop").click()
    _wait_for(lambda: status() == "stopped", 60, "the run to stop (the click served by the busy kernel)")
    _wait_all_executed(page, rerun=False)  # the cells after it run, once, in order
    panel.scroll_into_view_if_needed()
    _shot(panel, "03_stopped_during_run_all.png")
    assert "not active" in panel.inner_text()
    assert panel.get_by_role("button", name="Use this stopped checkpoint").is_visible()
    printed = re.search(r"stopped - (\d+) steps", run_cell.locator(".jp-OutputArea").inner_text())
    assert printed and int(printed.group(1)) < epochs  # one full batch per epoch: far from the budget
    cards = [json.loads(p.read_text()) for p in (folder / "checkpoints").glob("*/card.json")]
    assert [c["stopped"] for c in cards] == [True]
    assert json.loads((folder / "settings.json").read_text()).get("checkpoint") is None  # still zero-shot


def test_compare_in_the_browser_summarises_splits_every_arm_finished(lab, page):
    url, notebooks = lab
    _run_whole_notebook(page, url, "04_qgr_compare.ipynb")
    panel = page.locator(".clipiqa-compare-panel")
    panel.scroll_into_view_if_needed()
    text = panel.inner_text()
    smoke_splits = re.search(r"N_SPLITS = (\d+) if SMOKE", (notebooks / "04_qgr_compare.py").read_text())
    assert smoke_splits, "notebook 04 names its smoke split count in N_SPLITS"
    assert "toy model trained on synthetic distortions" in text
    assert f"{smoke_splits.group(1)} splits per arm" in text, text  # every split of the smoke run, finished by both
    _wait_for(lambda: panel.locator("img").count() >= 2, 30, "the SRCC and trace figures")
    _shot(panel, "04_compare_panel.png")


def test_feasibility_in_the_browser_shows_curve_and_verdict(lab, page):
    url, notebooks = lab
    _run_whole_notebook(page, url, "07_plant_feasibility.ipynb")
    curve = page.locator(".jp-CodeCell").filter(has_text="learning_curve(curve)")
    curve.scroll_into_view_if_needed()
    assert curve.locator(".jp-OutputArea-output img").count() >= 1
    _shot(curve, "07_learning_curve.png")
    review = page.locator(".jp-CodeCell").filter(has_text="worst_predictions(held_out")
    assert review.locator(".jp-OutputArea-output img").count() == 3  # scatter, gallery, worst predictions
    verdict = page.locator(".jp-CodeCell").filter(has_text="print(verdict(")
    verdict.scroll_into_view_if_needed()
    text = verdict.inner_text().lower()
    assert "too few held-out labels" in text  # smoke mode: test sets of a few images
    assert "label about 100 images in all" in text  # the protocol's 20 % held out, whatever this split held out
    _shot(verdict, "07_verdict.png")


def _rater_notebook(path: Path, folder: Path) -> None:
    """A notebook that opens the shared session with a label panel (what each rater runs in their own tab)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from clipiqa.session import Session\nfrom clipiqa.widgets import LabelPanel\n\n"
        f"session = Session.open({str(folder)!r})\npanel = LabelPanel(session)\npanel")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


def test_two_raters_in_two_tabs_rate_one_session(lab, browser):
    """Two people, two tabs (two notebooks, two kernels), one session folder: both type their name
    once and rate the same images with the keys box; the export holds both ratings of each image."""
    import sqlite3

    import pandas as pd
    from PIL import Image

    from clipiqa.session import Session
    url, notebooks = lab
    images = notebooks / "two-raters-images"
    images.mkdir()
    for k in range(6):
        Image.new("RGB", (96, 64), (40 * k, 120, 200 - 30 * k)).save(images / f"shade{k}.png")
    folder = notebooks / "clipiqa-work" / "two-raters"
    Session(folder, images=images, model_name="tiny", device="cpu").close()
    tabs = {}
    for rater in ("ann", "ben"):
        _rater_notebook(notebooks / f"rate_{rater}.ipynb", folder)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(120_000)
        page = context.new_page()
        _open(page, url, f"rate_{rater}.ipynb")
        _run_all(page)
        _wait_all_executed(page)
        panel = page.locator(".clipiqa-label-panel")
        box = panel.locator(".widget-text").filter(has_text="Rater").locator("input")
        box.fill(rater)  # the name, typed once
        box.press("Enter")
        _wait_for(lambda: f"rating as {rater}" in panel.inner_text(), 60, f"the panel to rate as {rater}")
        tabs[rater] = (context, page, panel)

    def stored() -> list[tuple[str, str, float]]:
        con = sqlite3.connect(folder / "labels.sqlite")
        try:
            return con.execute("SELECT CAST(i.path AS TEXT), r.rater, r.score FROM ratings r JOIN images i "
                               "ON i.id = r.image WHERE r.undone IS NULL ORDER BY r.seq").fetchall()
        finally:
            con.close()

    scores = {"ann": ["4", "2", "5"], "ben": ["3", "2", "4"]}
    for k in range(3):  # the two tabs take turns, each on its own next image
        for rater in ("ann", "ben"):
            _, page, panel = tabs[rater]
            keys = panel.locator(".widget-text").filter(has_text="Keys").locator("input")
            keys.click()
            page.keyboard.type(scores[rater][k])
            page.keyboard.press("Enter")
            _wait_for(lambda: sum(r == rater for _, r, _ in stored()) == k + 1, 60, f"{rater}'s rating {k + 1}")
    rows = stored()
    assert sorted({r for _, r, _ in rows}) == ["ann", "ben"] and len(rows) == 6
    export = pd.read_csv(folder / "labels.csv")
    assert export["n_ratings"].tolist() == [2, 2, 2]  # both raters rated the same three images
    assert export["mos"].tolist() == [3.5, 2.0, 4.5]
    for rater, (context, page, panel) in tabs.items():  # each count was last drawn after its own rating
        count = panel.locator(".widget-label").filter(has_text="labelled,")
        seen = "6 ratings" if rater == "ben" else "5 ratings"
        _wait_for(lambda: f"all 2 raters: 3 images, {seen}" in count.inner_text(), 60, f"{rater}'s count")
        panel.scroll_into_view_if_needed()
        _shot(panel, f"two_raters_{rater}.png")
    for context, _, _ in tabs.values():
        context.close()


def test_label_panel_reading_aids_and_review_grid(lab, page):
    """The scale's words under the slider's stops (lined up with the handle), the progress bar, the 100 % zoom
    (the image's own pixels, scrollable, the file name still hidden) and the review grid of one's labels."""
    from PIL import Image
    from skimage import data

    from clipiqa.session import Session
    url, notebooks = lab
    images = notebooks / "reading-aids-images"
    images.mkdir()
    for name in ("astronaut", "coffee", "rocket"):  # 512 x 512, 600 x 400, 427 x 640: larger than the fitted view
        Image.fromarray(getattr(data, name)()).save(images / f"{name}.png")
    folder = notebooks / "clipiqa-work" / "reading-aids"
    Session(folder, images=sorted(map(str, images.glob("*.png"))), model_name="tiny", device="cpu").close()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        f"from clipiqa.session import Session\nfrom clipiqa.widgets import LabelPanel, review_grid\n\n"
        f"session = Session.open({str(folder)!r})\npanel = LabelPanel(session)\npanel",
        "review_grid(session)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, notebooks / "reading_aids.ipynb")
    _open(page, url, "reading_aids.ipynb")
    _run_all(page)
    _wait_all_executed(page)
    panel = page.locator(".clipiqa-label-panel")
    ticks = panel.locator(".clipiqa-slider-ticks")
    assert ticks.inner_text().split() == "1 bad 2 poor 3 fair 4 good 5 excellent".split()
    progress = panel.locator(".widget-hprogress")
    assert "Rated 0 of 3" in progress.inner_text() and _progress(panel) == 0
    # the words stand under the stops: one ArrowRight puts the handle on "1 bad", right above its word
    panel.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    _wait_for(lambda: panel.locator(".widget-readout").inner_text() == "1 bad", what="the slider at 1 bad")
    time.sleep(0.5)  # the handle's move is animated

    def centre(box) -> float:
        return box["x"] + box["width"] / 2
    word = ticks.locator(":scope > span").first  # the stop of level 1: "1" over "bad"
    assert word.inner_text().split() == ["1", "bad"]
    assert abs(centre(panel.locator(".noUi-handle").bounding_box()) - centre(word.bounding_box())) < 6
    # rate one with the keys box: the bar moves
    keys = panel.locator(".widget-text").filter(has_text="Keys").locator("input")
    keys.click()
    page.keyboard.type("4")
    page.keyboard.press("Enter")
    _wait_for(lambda: "Rated 1 of 3" in progress.inner_text(), 60, "the progress bar to count the rating")
    _wait_for(lambda: abs(_progress(panel) - 100 / 3) < 1, 30, "the bar at a third")
    panel.scroll_into_view_if_needed()
    _shot(panel, "label_panel.png")
    # 100 %: the image at its own pixels in a scrolling box, and still no file name in the title
    panel.get_by_role("button", name="100 %").click()
    title = panel.locator(".widget-html-content").nth(1)
    _wait_for(lambda: "shown at 100 %" in title.inner_text(), 60, "the 100 % view")
    img = panel.locator(".widget-image").first
    _wait_for(lambda: img.evaluate("e => e.naturalWidth > 0 && e.getBoundingClientRect().width === e.naturalWidth"),
              30, "the image drawn at its own pixels")
    size = re.search(r"(\d+) x (\d+) px", title.inner_text()).groups()
    assert img.evaluate("e => [e.naturalWidth, e.naturalHeight]") == [int(size[0]), int(size[1])]
    viewer = img.locator("xpath=..")
    assert viewer.evaluate("e => e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight")
    assert not re.search(r"\S+\.png", title.inner_text())
    _shot(panel, "label_panel_zoom_100.png")
    # the review grid, run again after rating: my one label under its level, with its file name
    cell = page.locator(".jp-CodeCell").filter(has_text="review_grid(session)").last
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    grid = cell.locator(".clipiqa-review-grid")
    _wait_for(lambda: grid.count() and "4 good (1)" in grid.inner_text(), 60, "the review grid with the rating")
    assert re.search(r"(astronaut|coffee|rocket)\.png", grid.inner_text())
    assert grid.locator("img").count() == 1
    _shot(cell, "label_review_grid.png")
