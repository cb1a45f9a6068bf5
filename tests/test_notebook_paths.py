"""The notebooks on the paths users take next: rating by hand with no labels yet, and real mode
without weights. Each runs one notebook headless in a fresh kernel on a temporary copy of ``notebooks/``, with
its parameters cell changed the way a user would change it.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _copy(tmp_path: Path) -> Path:
    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, work, ignore=shutil.ignore_patterns("clipiqa-work", ".ipynb_checkpoints"))
    return work


def _parameters(nb) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def _env(cache: Path, smoke: bool, **extra) -> dict:
    env = dict(os.environ, CLIPIQA_CACHE=str(cache), HF_HUB_OFFLINE="1", **extra)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPLBACKEND", None)
    if smoke:
        env["CLIPIQA_SMOKE"] = "1"
    else:
        for key in ("CLIPIQA_SMOKE", "CLIPIQA_WEIGHTS", "CLIPIQA_MODEL", "CLIPIQA_REHEARSAL", "HF_HUB_CACHE",
                    "HUGGINGFACE_HUB_CACHE", "CLIPIQA_DEVICE"):
            env.pop(key, None)
    return env


def _run(nb, work: Path, env: dict, allow_errors: bool = False):
    from nbclient import NotebookClient
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(work)}})
    client.execute(env=env)
    return nb


def _text(nb) -> str:
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _errors(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_notebook_02_by_hand_with_no_labels_yet(tmp_path, cache):
    """Notebook 02 rated by hand: with the stand-in rater off, 02 once failed at "what is on disk" (FileNotFoundError:
    labels.csv) before the first rating. A session without labels is a normal state."""
    work = _copy(tmp_path)
    nb = nbformat.read(work / "02_label_a_few.ipynb", as_version=4)
    _parameters(nb).source += "\nSTAND_IN_RATER = False  # rate by hand"
    _run(nb, work, _env(cache, smoke=True))
    assert not _errors(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    text = _text(nb)
    assert "0 labelled" in text and "no labels yet" in text
    folder = work / "clipiqa-work" / "smoke" / "label-session"
    assert (folder / "labels.csv").read_text().startswith("path,mos,")


def test_notebook_02_stand_in_leaves_work_for_the_skip_undo_cell(tmp_path, cache):
    """With the stand-in rater on, the panel opened on "0 to go", so the lesson's skip/undo cell had nothing to
    do; now the stand-in leaves a few images for the user, and skip then undo act on one of them."""
    work = _copy(tmp_path)
    nb = nbformat.read(work / "02_label_a_few.ipynb", as_version=4)
    _run(nb, work, _env(cache, smoke=True))
    assert not _errors(nb)
    skip_cell = next(c for c in nb.cells if c.cell_type == "code" and "panel.skip()" in c.source)
    shown = "".join(o.get("text", "") for o in skip_cell.outputs)
    assert re.search(r"\b[1-9]\d* to go", shown), shown  # images left, so skip + undo ran
    from clipiqa.session import Session
    s = Session.open(work / "clipiqa-work" / "smoke" / "label-session")
    assert s.counts()["to_go"] >= 1 and not s.skipped  # the skip was undone


def test_notebook_03_real_mode_without_weights_says_so_once(tmp_path, cache):
    """No weights is one short message and nothing runs after it: the adapt panel once showed the message, then
    ``panel.run(block=True)`` returned None and the next cell failed with AttributeError under a long traceback. Now
    the blocking run raises the panel's error, shown as one short message, and nothing runs after it (the model now
    loads, and fails, where 03 prints its weights line)."""
    work = _copy(tmp_path)
    nb = nbformat.read(work / "03_adapt_on_gpu.ipynb", as_version=4)
    params = _parameters(nb)
    params.source = params.source.replace("SMOKE = True", "SMOKE = False", 1)  # what a user edits
    hf_home = tmp_path / "empty-hf-home"
    hf_home.mkdir()
    from nbclient.exceptions import CellExecutionError
    with pytest.raises(CellExecutionError):
        _run(nb, work, _env(cache, smoke=False, HF_HOME=str(hf_home)))
    errors = _errors(nb)
    assert len(errors) == 1, [e.ename for e in errors]
    error = errors[0]
    assert error.ename == "WeightsUnavailableError"
    shown = "\n".join(ANSI.sub("", line) for line in error.traceback)
    assert "Traceback" not in shown and "File " not in shown and "---->" not in shown, shown
    assert shown.startswith("WeightsUnavailableError: No weights for model") and "full_traceback()" in shown
    failed = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and
                  any(o.output_type == "error" for o in c.outputs))
    # the first cell that loads the model fails (it prints the weights line since every notebook does), not a later
    # one on a result that does not exist
    assert "say_model(session.model)" in nb.cells[failed].source
    later = [c for c in nb.cells[failed + 1:] if c.cell_type == "code"]
    assert later and not any(c.execution_count for c in later)  # no second error: nothing ran after it
