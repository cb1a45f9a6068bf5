"""The core works without the optional extras (docs/design.md, 'What is core'): with every package of the
``deploy``, ``pilot`` and ``lab`` extras hidden, ``import clipiqa``, every public verb, every module but the lab's
notebook pairing, the panels and the command line load, and a model scores an image; each optional job says which
extra it needs. pyproject's extras are the ones clipiqa.extras names, and the test extra pulls them all."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from clipiqa.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = sorted({p for packages in EXTRAS.values() for p in packages} | {"nbformat", "nbclient", "playwright"})
OPTIONAL_MODULES = {"clipiqa.notebook_sources": "lab"}  # modules that are an extra's job, not the core's
HIDE = f"import sys\nfor _name in {OPTIONAL!r}:\n    sys.modules[_name] = None  # import fails: not installed\n"


def _run(code: str, tmp_path: Path) -> dict:
    """Run ``code`` in a fresh interpreter with the optional packages hidden; it prints one JSON line last."""
    out = subprocess.run([sys.executable, "-c", HIDE + textwrap.dedent(code)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                                         "HOME": str(tmp_path), "CLIPIQA_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_core_imports_and_scores_without_the_optional_packages(tmp_path):
    result = _run(f"""
        import importlib, json, pkgutil
        import numpy as np
        from PIL import Image
        import clipiqa, clipiqa.widgets
        verbs = {{name: type(getattr(clipiqa, name)).__name__ for name in clipiqa.__all__}}
        skipped = {sorted(OPTIONAL_MODULES)!r}
        loaded = []
        for pkg in (clipiqa, clipiqa.widgets):
            for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                if info.name.endswith("__main__") or info.name in skipped:
                    continue
                importlib.import_module(info.name)
                loaded.append(info.name)
        from clipiqa.cli import build_parser
        build_parser()
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save("grey.png")
        table = clipiqa.score_files(clipiqa.load_model("tiny", device="cpu"), ["grey.png"])
        print(json.dumps({{"verbs": verbs, "loaded": loaded, "status": list(table["status"]),
                           "hidden": [m for m in {OPTIONAL!r} if sys.modules.get(m) is not None]}}))
        """, tmp_path)
    assert result["hidden"] == []  # nothing brought an optional package back
    assert {"load_model", "score_files", "adapt", "save_checkpoint", "meta_pretrain", "run_protocol", "Session",
            "explain"} <= set(result["verbs"])
    assert {"clipiqa.session", "clipiqa.pilot.watch", "clipiqa.widgets.label", "clipiqa.export",
            "clipiqa.commands.dashboard"} <= set(result["loaded"])
    assert result["status"] == ["ok"]


def test_each_optional_job_names_its_extra(tmp_path):
    result = _run("""
        import contextlib, io, json
        from clipiqa.cli import main
        from clipiqa.extras import MissingExtraError
        said = {}
        for name, argv in {"export": ["export", "--model", "tiny", "--out", "s.onnx"],
                           "score_onnx": ["score", "--onnx", "s.onnx", "."],
                           "dashboard": ["dashboard", "."]}.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(argv)
            said[name] = [code, err.getvalue()]
        try:
            import clipiqa.notebook_sources
        except MissingExtraError as e:
            said["notebook_sources"] = [1, str(e)]
        print(json.dumps(said))
        """, tmp_path)
    for job, extra in {"export": "deploy", "score_onnx": "deploy", "dashboard": "pilot",
                       "notebook_sources": "lab"}.items():
        code, message = result[job]
        assert code == 1 and f"pip install 'clipiqa[{extra}]'" in message, (job, message)
    assert "clipiqa export needs onnxruntime, which is not installed" in result["export"][1]


def test_pyproject_extras_are_clipiqas_and_the_test_extra_pulls_them_all():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements):
        return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}

    assert {e: names(extras[e]) for e in extras if e != "test"} == {e: set(p) for e, p in EXTRAS.items()}
    assert not names(project["dependencies"]) & {p for packages in EXTRAS.values() for p in packages}
    pulled = [r for r in extras["test"] if r.startswith("clipiqa[")]
    assert len(pulled) == 1 and set(pulled[0][len("clipiqa["):-1].split(",")) == set(EXTRAS)
