"""The guided notebooks as real sources: each notebook is a Jupytext percent-format script ``NN_name.py`` (the file
a teacher edits and git diffs) paired with ``NN_name.ipynb`` (what JupyterLab opens, committed without outputs).

* :func:`sync` writes every ``.ipynb`` from its ``.py`` (cell ids and notebook metadata of the existing ``.ipynb``
  kept, outputs and execution counts stripped); a lone ``.ipynb`` (a notebook made in JupyterLab without
  Jupytext) gets its ``.py``.
* :func:`check` lists what is out of order: a ``.py`` without its ``.ipynb`` or the reverse, cells that differ
  (type, source, tags), outputs or execution counts in a committed ``.ipynb``. CI runs it
  (``tests/test_notebook_sources.py``).

From a shell: ``python -m clipiqa.notebook_sources sync [FOLDER]`` after editing a ``.py``, and
``python -m clipiqa.notebook_sources check [FOLDER]`` (exit status 1 when something is out of sync), and
``python -m clipiqa.notebook_sources reset [FOLDER]`` to undo edits autosaved into the shipped notebooks; FOLDER
defaults to ``notebooks``. In JupyterLab with Jupytext installed, saving a notebook writes both files (the pairing
is in ``notebooks/jupytext.toml``); run ``sync`` before committing, since JupyterLab saves outputs too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .extras import require

require("jupytext", "lab", "clipiqa.notebook_sources (the notebooks' .py pairing)")
import jupytext  # noqa: E402  (the 'lab' extra, checked above)
import nbformat  # noqa: E402
from jupytext.combine import combine_inputs_with_outputs  # noqa: E402

__all__ = ["SOURCE_FORMAT", "pairs", "cells_of", "check", "sync", "reset", "strip_outputs", "main"]

SOURCE_FORMAT = "py:percent"
"""The Jupytext format of the notebook sources (as in ``notebooks/jupytext.toml``)."""
SOURCE_OPTIONS = {"extension": ".py", "format_name": "percent", "notebook_metadata_filter": "-all"}
"""How a new ``.py`` is written: percent cells and no YAML header (the kernelspec lives in the ``.ipynb``)."""
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(source .py, notebook .ipynb)`` for every notebook name in ``folder`` (either file may be missing),
    sorted by name. Only the folder itself is looked at, not its subfolders (sessions, checkpoints)."""
    folder = Path(folder)
    stems = sorted({p.stem for p in folder.glob("*.py")} | {p.stem for p in folder.glob("*.ipynb")})
    return [(folder / f"{stem}.py", folder / f"{stem}.ipynb") for stem in stems]


def read_source(path: str | Path) -> nbformat.NotebookNode:
    """The notebook that a percent-format ``.py`` describes."""
    return jupytext.read(path, fmt=SOURCE_FORMAT)


def cells_of(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    """What must agree between a source and its notebook: each cell's type, source and tags."""
    return [(c.cell_type, c.source, tuple(c.get("metadata", {}).get("tags", ()))) for c in nb.cells]


def _first_difference(source: list, notebook: list) -> str:
    for i, (a, b) in enumerate(zip(source, notebook)):
        if a != b:
            what = "type" if a[0] != b[0] else "source" if a[1] != b[1] else "tags"
            return f"cell {i} differs in its {what}"
    return f"the .py has {len(source)} cells, the .ipynb {len(notebook)}"


def check(folder: str | Path) -> list[str]:
    """Everything out of order in ``folder``, one line each; an empty list when every pair is in sync and no
    notebook carries outputs."""
    problems = []
    for py, ipynb in pairs(folder):
        if not ipynb.exists():
            problems.append(f"{py.name}: no {ipynb.name} (run the sync)")
            continue
        if not py.exists():
            problems.append(f"{ipynb.name}: no {py.name} source (run the sync)")
            continue
        nb = nbformat.read(ipynb, as_version=4)
        source, notebook = cells_of(read_source(py)), cells_of(nb)
        if source != notebook:
            problems.append(f"{ipynb.name} is stale: {_first_difference(source, notebook)} from {py.name} "
                            "(run the sync)")
        code = [c for c in nb.cells if c.cell_type == "code"]
        if any(c.get("outputs") or c.get("execution_count") is not None for c in code):
            problems.append(f"{ipynb.name}: has outputs or execution counts (run the sync to strip them)")
    return problems


def strip_outputs(nb) -> nbformat.NotebookNode:
    """``nb`` with no outputs and no execution counts (in place; returned for chaining)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def _notebook_from_source(py: Path, ipynb: Path) -> nbformat.NotebookNode:
    """The notebook of ``py``, keeping what the existing ``ipynb`` has beyond the cells' inputs (notebook
    metadata, cell ids, cell metadata other than tags) where its cells match."""
    nb = read_source(py)
    if ipynb.exists():
        return combine_inputs_with_outputs(nb, nbformat.read(ipynb, as_version=4), fmt=SOURCE_FORMAT)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.id = f"{py.stem.replace('_', '-')}-{i:02d}"
    return nb


def _write_text(path: Path, text: str) -> bool:
    """Write ``text`` unless ``path`` holds it already (no needless change of modification time)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def sync(folder: str | Path) -> list[Path]:
    """Write every ``.ipynb`` in ``folder`` from its ``.py`` source, outputs stripped, and a ``.py`` for every
    ``.ipynb`` that has none. Returns the files that changed."""
    changed = []
    for py, ipynb in pairs(folder):
        if py.exists():
            nb = strip_outputs(_notebook_from_source(py, ipynb))
            nbformat.validate(nb)
            if _write_text(ipynb, nbformat.writes(nb) + "\n"):
                changed.append(ipynb)
        else:
            nb = strip_outputs(nbformat.read(ipynb, as_version=4))
            if _write_text(py, jupytext.writes(nb, fmt=SOURCE_OPTIONS)):
                changed.append(py)
            if _write_text(ipynb, nbformat.writes(nb) + "\n"):
                changed.append(ipynb)
    return changed


def reset(folder: str | Path) -> list[Path]:
    """Put the shipped notebooks back as committed (both files of each pair) and return the files that changed.

    JupyterLab autosaves a parameters cell you edited into the tracked ``.ipynb`` and, through Jupytext, its
    ``.py``, so the next "default" run would use your values: ``reset`` undoes that from git (``git checkout
    HEAD -- <changed notebook files>``). Files git does not track (your own notebooks) are left alone."""
    import subprocess
    folder = Path(folder)
    tracked = [str(p) for pair in pairs(folder) for p in pair]
    try:
        changed = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", *tracked], cwd=folder, check=True,
                                 capture_output=True, text=True).stdout.split()
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, check=True, capture_output=True,
                             text=True).stdout.strip()
        if changed:
            subprocess.run(["git", "checkout", "HEAD", "--", *changed], cwd=top, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"cannot reset {folder} from git ({e}); reset works in a git checkout of clipiqa: "
                           "otherwise copy the notebooks again from a fresh clone") from e
    return [Path(top) / c for c in changed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipiqa.notebook_sources",
                                     description="Keep the notebooks' .py sources and their .ipynb in sync.")
    parser.add_argument("command", choices=["sync", "check", "reset"],
                        help="sync: write each .ipynb from its .py (outputs stripped); check: list what is stale; "
                             "reset: put the shipped notebooks back as committed (undo autosaved parameter edits)")
    parser.add_argument("folder", nargs="?", default="notebooks", help="the notebooks folder (default: notebooks)")
    args = parser.parse_args(argv)
    if not Path(args.folder).is_dir():
        parser.error(f"folder {args.folder!r} does not exist; give the notebooks folder, e.g. notebooks")
    if args.command == "sync":
        for path in sync(args.folder):
            print(f"wrote {path}")
        return 0
    if args.command == "reset":
        try:
            done = reset(args.folder)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        for path in done:
            print(f"reset {path}")
        print(f"{len(done)} notebook file(s) reset" if done else "nothing to reset: the notebooks are as committed")
        return 0
    problems = check(args.folder)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
