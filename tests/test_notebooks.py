"""The guided notebooks: stripped of outputs in git, one parameters cell each, and every one runs top to bottom
headless in smoke mode (``CLIPIQA_SMOKE=1``: the lesson toy model, embedded demo photos) and, as the dress
rehearsal of the real path, with ``SMOKE = False`` on the paper's ViT-B/16 architecture with random
weights laid into a temporary Hugging Face cache as the hub lays a download (``tests/rehearsal.py``), offline, on
the CPU (``DEVICE = "auto"``), with ``CLIPIQA_REHEARSAL=1`` shrinking image counts, epochs and splits only.

Each notebook runs in a fresh kernel of this interpreter, with a copy of ``notebooks/`` as working directory
(so session folders land in a temporary place) and a temporary ``CLIPIQA_CACHE`` shared by all of them (the
demo set is built once). ``OMP_NUM_THREADS=1`` unless set: the tiny model gains nothing from intra-op threads,
and on a busy 2-core machine OpenMP spin-waiting made smoke runs up to ten times slower.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from clipiqa.notebook_sources import sync
from notebook_lessons import LESSON_CHECKS

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = ["01_zero_shot.ipynb", "02_label_a_few.ipynb", "03_adapt_on_gpu.ipynb", "04_qgr_compare.ipynb",
            "05_explain.ipynb", "06_meta_prompt_pretraining.ipynb", "07_plant_feasibility.ipynb",
            "08_line_dashboard.ipynb", "index.ipynb"]


def test_all_notebooks_are_there():
    assert NOTEBOOKS == EXPECTED


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped_with_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs must be stripped"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    src = tagged[0].source
    assert "SMOKE = True" in src and 'os.environ.get("CLIPIQA_SMOKE") == "1"' in src
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_sources_reproduce_the_notebooks(tmp_path):
    """Each notebook is written from its Jupytext source ``notebooks/NN_name.py``: syncing a copy changes nothing."""
    for name in NOTEBOOKS:
        shutil.copy(NOTEBOOKS_DIR / name, tmp_path / name)
        shutil.copy(NOTEBOOKS_DIR / name.replace(".ipynb", ".py"), tmp_path / name.replace(".ipynb", ".py"))
    sync(tmp_path)
    for name in NOTEBOOKS:
        assert (tmp_path / name).read_text() == (NOTEBOOKS_DIR / name).read_text(), \
            f"{name} differs from its .py source: run `python -m clipiqa.notebook_sources sync notebooks`"


def _copy_notebooks(tmp_path_factory, name: str):
    """A copy of the notebooks folder (the kernels' working directory) and a cache folder beside it."""
    root = tmp_path_factory.mktemp(name)
    work = root / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, work, ignore=shutil.ignore_patterns("clipiqa-work", ".ipynb_checkpoints"))
    return work, root / "cache"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The smoke runs' copy of the notebooks and their shared demo cache."""
    return _copy_notebooks(tmp_path_factory, "notebooks")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, workdir):
    from nbclient import NotebookClient
    work, cache = workdir
    env = dict(os.environ, CLIPIQA_SMOKE="1", CLIPIQA_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPLBACKEND", None)  # an exported backend would silence inline figures
    nb = nbformat.read(work / name, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    t0 = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - t0
    print(f"\n{name}: {seconds:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    shown = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for c in code for o in c.outputs)
    assert "toy model trained on synthetic distortions" in shown, "smoke-mode numbers must say they are a toy's"
    if name in LESSON_CHECKS:  # the lesson's takeaways exist, say "toy model", and its mechanism holds
        LESSON_CHECKS[name](shown)


@pytest.fixture(scope="module")
def rehearsal_workdir(tmp_path_factory):
    """A fresh copy of the notebooks for the real-mode runs (they share sessions: 03 adapts 02's labels)."""
    return _copy_notebooks(tmp_path_factory, "notebooks-rehearsal")


def real_mode(nb) -> None:
    """What a user does for a real run: set ``SMOKE = False`` in the parameters cell, nothing else."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "SMOKE = True  #" in cell.source
    cell.source = cell.source.replace("SMOKE = True  #", "SMOKE = False  #", 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_real_mode_on_the_rehearsal_model(name, rehearsal_workdir):
    from nbclient import NotebookClient
    from rehearsal import rehearsal_cache, rehearsal_env
    work, cache = rehearsal_workdir
    env = rehearsal_env(rehearsal_cache("vitb16-openai"), CLIPIQA_CACHE=str(cache))
    env.pop("CLIPIQA_SMOKE", None)
    env.setdefault("OMP_NUM_THREADS", "2")  # a ViT-B/16 gains from both cores
    env.pop("MPLBACKEND", None)
    nb = nbformat.read(work / name, as_version=4)
    real_mode(nb)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    t0 = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - t0
    print(f"\n{name} (real mode, random ViT-B/16 from the fake hub cache): {seconds:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    shown = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) + str(o.get("data", {}).get(
        "text/html", "")) for c in code for o in c.outputs)
    assert "random-init" in shown or "random init" in shown, "real-mode numbers from random weights must say so"
    assert "models--timm--vit_base_patch16_clip_224.openai" in shown, "real mode prints the weights line"
