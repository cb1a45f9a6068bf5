"""scripts/setup.sh installs only when needed: once both `make lab` (the lab extra) and `make test` (the
test extra) have run, switching between them never reinstalls, so it never needs the network. It installs torch from
PyTorch's CPU wheel index on a machine without an NVIDIA GPU, the CUDA wheels otherwise.

The script runs on a copy of the repository with a fake virtual environment whose ``bin/python`` only records
its arguments, and a PATH without apt-get (no Chromium install is attempted) and, unless a test adds a fake one,
without nvidia-smi.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "sha256sum", "cut", "cat", "id", "dirname", "mkdir", "grep", "tr")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


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


def _pip_calls(repo, *args, env=None) -> list[str]:
    """Run setup.sh; returns the argument lines of the pip calls it made."""
    root, venv, log, tools = repo
    before = log.read_text().splitlines() if log.exists() else []
    subprocess.run(["bash", str(root / "scripts" / "setup.sh"), *args], check=True, capture_output=True,
                   env={"PATH": tools, "CLIPIQA_VENV": str(venv), "HOME": str(root), **(env or {})})
    after = log.read_text().splitlines() if log.exists() else []
    return after[len(before):]


def _setup(repo, *args) -> list[str]:
    """Run setup.sh; returns the editable installs it made (the spec of each ``pip install -e``)."""
    return [line.split()[-1] for line in _pip_calls(repo, *args) if " -e " in f" {line} "]


def test_switching_between_lab_and_test_never_reinstalls(repo):
    assert _setup(repo, "lab") == [".[lab]"]  # make lab on a fresh machine
    assert _setup(repo, "test") == [".[lab,test]"]  # make test adds the test extra once
    assert _setup(repo, "lab") == []  # back to lab: nothing to install (the test extra stays)
    assert _setup(repo, "test") == []
    assert _setup(repo, "lab") == []


def test_test_first_then_lab_installs_the_lab_extra_once(repo):
    assert _setup(repo, "test") == [".[test]"]  # the test extra pulls the lab extra: pip installs nothing new
    assert _setup(repo, "lab") == [".[test,lab]"]
    assert _setup(repo, "lab") == [] and _setup(repo, "test") == []


def test_the_core_alone(repo):
    assert _setup(repo) == ["."]
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


# ------------------------------------------------------------------------------------------ which torch wheels
def _pins() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [d for d in project["dependencies"] if d.split("==")[0] in ("torch", "torchvision")]


def _torch_install(repo, gpu: bool | None, **env) -> list[str]:
    """The arguments of setup.sh's torch install on a machine whose nvidia-smi lists a GPU (True), fails (False), or
    is absent (None)."""
    tools = Path(repo[3])
    if gpu is not None:
        (tools / "nvidia-smi").write_text(f"#!/bin/bash\n{'echo GPU 0: NVIDIA H100' if gpu else 'exit 9'}\n")
        (tools / "nvidia-smi").chmod(0o755)
    calls = [line.split() for line in _pip_calls(repo, env=env) if "torch==" in line]
    assert len(calls) == 1, calls
    return calls[0]


def _index(args: list[str]) -> str | None:
    return args[args.index("--index-url") + 1] if "--index-url" in args else None


def test_torch_from_the_cpu_wheels_without_an_nvidia_gpu(repo):
    args = _torch_install(repo, gpu=None)
    assert _index(args) == CPU_INDEX
    assert sorted(a for a in args if "==" in a) == sorted(_pins()) and len(_pins()) == 2


def test_torch_from_the_cpu_wheels_when_nvidia_smi_finds_no_gpu(repo):
    assert _index(_torch_install(repo, gpu=False)) == CPU_INDEX


def test_torch_from_pips_own_indexes_when_the_cpu_index_cannot_be_reached(repo):
    """A machine that reaches only its package mirror: the probe of PyTorch's CPU index fails, so the pinned
    wheels come from pip's configured indexes (no --index-url), and the step says why."""
    root, venv, log, tools = repo
    (venv / "bin" / "python").write_text(
        f'#!/bin/bash\nif [[ "$*" == *urlopen* ]]; then exit 1; fi\necho "$*" >> {log}\n')
    args = _torch_install(repo, gpu=None)
    assert _index(args) is None and sorted(a for a in args if "==" in a) == sorted(_pins())
    done = subprocess.run(["bash", str(root / "scripts" / "setup.sh")], capture_output=True, text=True, check=True,
                          env={"PATH": tools, "CLIPIQA_VENV": str(venv), "CLIPIQA_SETUP_DRY_RUN": "1"})
    assert "cannot be reached" in done.stderr


def test_torch_cuda_wheels_from_pypi_with_an_nvidia_gpu(repo):
    args = _torch_install(repo, gpu=True)
    assert _index(args) is None and sorted(a for a in args if "==" in a) == sorted(_pins())


@pytest.mark.parametrize("gpu, choice, index", [(True, "cpu", CPU_INDEX), (None, "cuda", None),
                                                (None, "https://download.pytorch.org/whl/cu126",
                                                 "https://download.pytorch.org/whl/cu126")])
def test_clipiqa_torch_overrides_the_choice(repo, gpu, choice, index):
    assert _index(_torch_install(repo, gpu=gpu, CLIPIQA_TORCH=choice)) == index


def test_an_unknown_clipiqa_torch_value_is_refused_naming_it(repo):
    root, venv, log, tools = repo
    done = subprocess.run(["bash", str(root / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env={"PATH": tools, "CLIPIQA_VENV": str(venv), "CLIPIQA_TORCH": "gpu"})
    assert done.returncode != 0 and "CLIPIQA_TORCH is 'gpu'" in done.stderr and "cpu, cuda" in done.stderr
    assert not log.exists()


def test_dry_run_shows_the_choice_and_installs_nothing(repo):
    root, venv, log, tools = repo
    done = subprocess.run(["bash", str(root / "scripts" / "setup.sh")], capture_output=True, text=True, check=True,
                          env={"PATH": tools, "CLIPIQA_VENV": str(venv), "CLIPIQA_SETUP_DRY_RUN": "1"})
    ran = log.read_text() if log.exists() else ""  # the CPU index's reachability probe may run; pip may not
    assert "pip" not in ran and not (venv / ".clipiqa-install").exists()
    assert f"--index-url {CPU_INDEX} {' '.join(_pins())}" in done.stdout
    steps = [line for line in done.stderr.splitlines() if line.startswith("setup: ") and "/3 " in line]
    assert len(steps) == 3 and "CPU wheels" in steps[1]
