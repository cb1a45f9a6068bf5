"""environment.yml installs exactly the project that pyproject.toml describes."""
import re
import tomllib
from pathlib import Path

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
