"""scripts/setup.sh installs only when needed (issue 14): once both `make lab` (no extra) and `make test` (the
test extra) have run, switching between them never reinstalls, so it never needs the network.

The script runs on a copy of the repository with a fake virtual environment whose ``bin/python`` only records
its arguments, and a PATH without apt-get (no Chromium install is attempted).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "sha256sum", "cut", "cat", "id", "dirname", "mkdir")


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/bash\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), tools / tool)
    return root, venv, log, str(tools)


def _setup(repo, *args) -> list[str]:
    """Run setup.sh; returns the editable installs it made (the spec of each ``pip install -e``)."""
    root, venv, log, tools = repo
    before = log.read_text().splitlines() if log.exists() else []
    subprocess.run(["bash", str(root / "scripts" / "setup.sh"), *args], check=True, capture_output=True,
                   env={"PATH": tools, "CLIPIQA_VENV": str(venv), "HOME": str(root)})
    after = log.read_text().splitlines() if log.exists() else []
    return [line.split()[-1] for line in after[len(before):] if " -e " in f" {line} "]


def test_switching_between_lab_and_test_never_reinstalls(repo):
    assert _setup(repo) == ["."]  # make lab on a fresh machine
    assert _setup(repo, "test") == [".[test]"]  # make test adds the test extra once
    assert _setup(repo) == []  # back to lab: nothing to install (the test extra stays)
    assert _setup(repo, "test") == []
    assert _setup(repo) == []


def test_test_first_then_lab_never_reinstalls(repo):
    assert _setup(repo, "test") == [".[test]"]
    assert _setup(repo) == []


def test_a_changed_pyproject_reinstalls_with_every_extra_kept(repo):
    root = repo[0]
    _setup(repo, "test")
    with open(root / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    assert _setup(repo) == [".[test]"]  # lab after a change keeps the test extra installed
    assert _setup(repo, "test") == []


def test_an_old_format_stamp_is_understood(repo):
    root, venv, log, _ = repo
    digest = subprocess.run(["bash", "-c", f"sha256sum < {root / 'pyproject.toml'} | cut -c1-16"],
                            capture_output=True, text=True, check=True).stdout.strip()
    (venv / ".clipiqa-install").write_text(f"{digest}-test\n")  # written by the former script
    assert _setup(repo) == [] and _setup(repo, "test") == []
