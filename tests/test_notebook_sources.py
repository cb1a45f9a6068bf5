"""The notebooks are real sources: each ``notebooks/NN_name.py`` (Jupytext percent format, the
file a teacher edits) is paired with its ``.ipynb``; the committed pairs agree cell by cell (type, source, tags)
and carry no outputs, and the check fails on a stale pair until the sync is run."""
from __future__ import annotations

import re

import shutil
from pathlib import Path

import nbformat
import pytest

from clipiqa.notebook_sources import cells_of, check, main, pairs, read_source, sync

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A copy of the notebooks' sources and notebooks (no sessions)."""
    work = tmp_path / "notebooks"
    work.mkdir()
    for path in [*NOTEBOOKS_DIR.glob("*.py"), *NOTEBOOKS_DIR.glob("*.ipynb"), NOTEBOOKS_DIR / "jupytext.toml"]:
        shutil.copy(path, work / path.name)
    return work


def test_every_notebook_has_its_source_and_the_pairs_are_in_sync():
    found = pairs(NOTEBOOKS_DIR)
    assert len(found) == 9
    assert all(py.exists() and ipynb.exists() for py, ipynb in found)
    assert check(NOTEBOOKS_DIR) == [], "run `python -m clipiqa.notebook_sources sync notebooks`"
    assert not (NOTEBOOKS_DIR / "_build.py").exists()  # the generator is gone: the .py files are the sources


def test_the_pairing_is_declared_for_jupyterlab():
    """JupyterLab with Jupytext keeps the pair in sync on save only if the folder declares the pairing."""
    config = (NOTEBOOKS_DIR / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in config


def test_sources_hold_exactly_the_cells_of_the_notebooks():
    for py, ipynb in pairs(NOTEBOOKS_DIR):
        nb = nbformat.read(ipynb, as_version=4)
        assert cells_of(read_source(py)) == cells_of(nb), py.name
        tagged = [c for c in read_source(py).cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{py.name}: the parameters tag must survive in the .py"


def test_check_fails_on_a_stale_pair_and_passes_after_the_sync(folder):
    py, ipynb = folder / "01_zero_shot.py", folder / "01_zero_shot.ipynb"
    ids_before = [c.id for c in nbformat.read(ipynb, as_version=4).cells]
    text = py.read_text()
    edited = text.replace("# # 01 Zero-shot quality scores", "# # 01 Zero-shot quality scores (edited)", 1)
    assert edited != text
    py.write_text(edited)  # a teacher's edit of a text cell, not synced
    assert check(folder) == ["01_zero_shot.ipynb is stale: cell 0 differs in its source from 01_zero_shot.py "
                             "(run the sync)"]
    py.write_text(edited + "\n# %%\nprint('a new cell')\n")
    problems = check(folder)
    assert len(problems) == 1 and problems[0].startswith("01_zero_shot.ipynb is stale") and "sync" in problems[0]
    assert main(["check", str(folder)]) == 1

    assert sync(folder) == [ipynb]
    assert check(folder) == [] and main(["check", str(folder)]) == 0
    nb = nbformat.read(ipynb, as_version=4)
    assert nb.cells[0].source.startswith("# 01 Zero-shot quality scores (edited)")
    assert nb.cells[-1].source == "print('a new cell')"
    assert [c.id for c in nb.cells[:-1]] == ids_before  # unchanged cells keep their ids: a small git diff
    assert sync(folder) == []  # nothing left to do


def test_check_names_a_changed_tag(folder):
    py = folder / "04_qgr_compare.py"
    py.write_text(py.read_text().replace('# %% tags=["parameters"]', "# %%", 1))
    problems = check(folder)
    assert problems == ["04_qgr_compare.ipynb is stale: cell 1 differs in its tags from 04_qgr_compare.py "
                        "(run the sync)"]


def test_check_reports_outputs_and_the_sync_strips_them(folder):
    """What JupyterLab saves after a run: outputs and execution counts, which must not be committed."""
    ipynb = folder / "index.ipynb"
    nb = nbformat.read(ipynb, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 3
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nbformat.write(nb, ipynb)
    assert check(folder) == ["index.ipynb: has outputs or execution counts (run the sync to strip them)"]
    sync(folder)
    assert check(folder) == []
    assert all(not c.outputs and c.execution_count is None
               for c in nbformat.read(ipynb, as_version=4).cells if c.cell_type == "code")


def test_a_notebook_without_its_pair_is_reported_and_the_sync_makes_it(folder):
    (folder / "02_label_a_few.ipynb").unlink()
    shutil.copy(folder / "03_adapt_on_gpu.ipynb", folder / "08_new_lesson.ipynb")  # made in JupyterLab alone
    assert check(folder) == ["02_label_a_few.py: no 02_label_a_few.ipynb (run the sync)",
                             "08_new_lesson.ipynb: no 08_new_lesson.py source (run the sync)"]
    sync(folder)
    assert check(folder) == []
    made = nbformat.read(folder / "02_label_a_few.ipynb", as_version=4)
    nbformat.validate(made)
    assert made.metadata["kernelspec"]["name"] == "python3"
    assert cells_of(made) == cells_of(nbformat.read(NOTEBOOKS_DIR / "02_label_a_few.ipynb", as_version=4))
    assert (folder / "08_new_lesson.py").read_text() == (folder / "03_adapt_on_gpu.py").read_text()


def test_cli_sync_then_check(folder, capsys):
    py = folder / "06_meta_prompt_pretraining.py"
    text = py.read_text()
    edited = re.sub(r"META_EPOCHS = (\d+) if SMOKE", lambda m: f"META_EPOCHS = {int(m.group(1)) + 1} if SMOKE", text,
                    count=1)
    assert edited != text  # the edit a user makes in the parameters cell
    py.write_text(edited)
    assert main(["check", str(folder)]) == 1
    assert "06_meta_prompt_pretraining.ipynb is stale: cell 1 differs in its source" in capsys.readouterr().out
    assert main(["sync", str(folder)]) == 0
    assert "06_meta_prompt_pretraining.ipynb" in capsys.readouterr().out
    assert main(["check", str(folder)]) == 0
    with pytest.raises(SystemExit):
        main(["sync", str(folder / "missing")])


def test_reset_undoes_autosaved_parameter_edits_and_keeps_own_notebooks(tmp_path):
    import subprocess
    from clipiqa.notebook_sources import main, reset
    repo = tmp_path / "repo"
    shutil.copytree(NOTEBOOKS_DIR, repo / "notebooks", ignore=shutil.ignore_patterns("clipiqa-work", ".ipynb_checkpoints"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "shipped"], cwd=repo, check=True)
    shipped = {p.name: p.read_bytes() for p in (repo / "notebooks").iterdir()}
    for name in ("02_label_a_few.py", "02_label_a_few.ipynb"):  # what JupyterLab's autosave does to both files
        path = repo / "notebooks" / name
        path.write_text(path.read_text().replace("SMOKE = True", "SMOKE = False"))
    own = repo / "notebooks" / "my_analysis.ipynb"
    own.write_text("{}")
    assert sorted(p.name for p in reset(repo / "notebooks")) == ["02_label_a_few.ipynb", "02_label_a_few.py"]
    assert {p.name: p.read_bytes() for p in (repo / "notebooks").iterdir() if p != own} == shipped
    assert own.read_text() == "{}"  # never touched
    assert main(["reset", str(repo / "notebooks")]) == 0  # nothing left to reset
    plain = tmp_path / "plain"
    shutil.copytree(repo / "notebooks", plain, ignore=shutil.ignore_patterns(".git"))
    assert main(["reset", str(plain)]) == 1  # not a git checkout: says so
