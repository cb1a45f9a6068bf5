"""environment.yml installs exactly the project that pyproject.toml describes."""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]


def test_environment_yml_installs_this_project_and_nothing_else():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    python = next(d for d in conda if d.startswith("python"))
    minimum = re.search(r">=(\d+\.\d+)", project["requires-python"]).group(1)
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    assert sorted(conda) == sorted([python, "pip"]), "environment.yml must not add its own packages"
    assert len(pip) == 1 and re.fullmatch(r"-e \.?\[?[\w,]*\]?|-e \"?\.\[[\w,]+\]\"?", pip[0].strip())
    extras = re.findall(r"\[([\w,]+)\]", pip[0])
    for extra in (extras[0].split(",") if extras else []):
        assert extra in project["optional-dependencies"]


def test_widgets_install_as_clipiqa_widgets_not_top_level():
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"]["clipiqa.widgets"] == "widgets"
    assert "widgets" not in setuptools_cfg["packages"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make lab" in readme
    assert "make test" in ci


def test_every_subpackage_is_installed():
    """A non-editable install ships only the listed packages: a package folder missing from the list would be absent
    from a wheel while every editable-install test passes."""
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(("clipiqa", *p.parent.relative_to(ROOT / "clipiqa").parts))
             for p in (ROOT / "clipiqa").rglob("__init__.py")} | {"clipiqa.widgets"}
    assert sorted(found - set(setuptools_cfg["packages"])) == []


def _copy_project(dest: Path) -> Path:
    """What `pip install .` builds from: pyproject.toml, README, LICENSE and the two source folders."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    for folder in ("clipiqa", "widgets"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A wheel and an sdist built from a clean copy of the repository; returns (wheel, sdist, build output)."""
    tmp = tmp_path_factory.mktemp("build")
    src = _copy_project(tmp / "src")
    dist = tmp / "dist"
    code = ("import sys; from setuptools import build_meta as b; "
            f"print(b.build_wheel({str(dist)!r})); print(b.build_sdist({str(dist)!r}))")
    dist.mkdir()
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return next(dist.glob("*.whl")), next(dist.glob("*.tar.gz")), done.stdout + done.stderr


def test_building_a_wheel_and_sdist_prints_no_setuptools_warning(built):
    output = built[2]
    warnings = [line for line in output.splitlines() if "Warning" in line or "absent from the `packages`" in line]
    assert warnings == []


def test_wheel_and_sdist_hold_every_preset_and_the_lesson_weights(built):
    wheel, sdist, _ = built
    data = sorted(p.name for p in (ROOT / "clipiqa" / "presets").iterdir() if p.suffix in (".json", ".safetensors"))
    assert "lesson.safetensors" in data and "lesson.json" in data
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert [n for n in data if f"clipiqa/presets/{n}" not in in_wheel] == []
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert [n for n in data if f"clipiqa/presets/{n}" not in in_sdist] == []


def test_installed_wheel_finds_every_preset_and_the_lesson_weights(built, tmp_path):
    """A non-editable install (the wheel unpacked with pip --target) reads its presets and the committed lesson
    weights from the installed package, not from this checkout."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(built[0])], check=True)
    probe = ("import json, clipiqa, clipiqa.presets as p; from importlib import resources; "
             "w = resources.files('clipiqa').joinpath('presets', 'lesson.safetensors'); "
             "print(json.dumps([clipiqa.__file__, sorted(p.PRESETS), w.is_file(), str(w)]))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    where, names, has_weights, weights = json.loads(done.stdout.splitlines()[-1])
    assert Path(where).is_relative_to(target)
    expected = sorted(json.loads(p.read_text())["name"] for p in (ROOT / "clipiqa" / "presets").glob("*.json"))
    assert names == expected and "lesson" in names
    assert has_weights and Path(weights).is_relative_to(target)
