"""CPU threads: what a process that imports clipiqa (a script, the CLI, a notebook kernel) runs with.

Each check starts a fresh interpreter, since the OpenMP settings only matter before torch loads. The README's
section "A class on one server" states these settings; these tests hold it to them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from clipiqa.threads import cgroup_cpu_limit, plan

ROOT = Path(__file__).resolve().parents[1]
OWN = ("CLIPIQA_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")
REPORT = ("import json, os, sys, torch\n"
          "print(json.dumps({'env': {k: os.environ.get(k) for k in %r}, 'threads': torch.get_num_threads(),\n"
          "                  'cpus': len(os.sched_getaffinity(0))}))" % (OWN,))


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OWN}
    env.update(extra)
    return env


def report(first: str, **extra) -> dict:
    """Run ``first`` then the report in a fresh interpreter with only ``extra`` of the thread variables set."""
    done = subprocess.run([sys.executable, "-c", first + "\n" + REPORT], env=clean_env(**extra), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_clipiqa_before_torch_sets_a_short_spin_and_keeps_every_cpu():
    got = report("import clipiqa")
    assert got["env"]["GOMP_SPINCOUNT"] == "10000"
    assert got["env"]["KMP_BLOCKTIME"] == "1"
    assert got["env"]["OMP_WAIT_POLICY"] is None and got["env"]["OMP_NUM_THREADS"] is None
    assert got["threads"] == got["cpus"]  # a lone run keeps the speed of every core


def test_a_child_process_inherits_the_short_spin():
    code = ("import clipiqa, os, subprocess, sys\n"
            "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get(\"GOMP_SPINCOUNT\"))'],"
            " capture_output=True, text=True, check=True).stdout)")
    done = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "10000", done.stderr[-2000:]


def test_a_number_of_threads_sets_openmp_and_torch():
    got = report("import clipiqa", CLIPIQA_THREADS="1")
    assert got["threads"] == 1 and got["env"]["OMP_NUM_THREADS"] == "1"
    assert got["env"]["GOMP_SPINCOUNT"] == "10000"


def test_a_number_of_threads_still_applies_when_torch_was_imported_first():
    got = report("import torch, clipiqa", CLIPIQA_THREADS="1")
    assert got["threads"] == 1
    assert got["env"]["GOMP_SPINCOUNT"] == "10000"  # too late here, in time for the processes it starts


def test_keep_changes_nothing():
    got = report("import clipiqa", CLIPIQA_THREADS="keep")
    assert got["env"] == {k: ("keep" if k == "CLIPIQA_THREADS" else None) for k in OWN}
    assert got["threads"] == got["cpus"]


def test_a_wait_policy_the_user_chose_is_left_alone():
    got = report("import clipiqa", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    assert got["env"]["GOMP_SPINCOUNT"] is None and got["env"]["KMP_BLOCKTIME"] is None
    assert got["env"]["OMP_WAIT_POLICY"] == "PASSIVE" and got["threads"] == 1


def test_a_bad_value_says_what_is_allowed():
    done = subprocess.run([sys.executable, "-c", "import clipiqa"], env=clean_env(CLIPIQA_THREADS="many"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "CLIPIQA_THREADS='many' is not allowed" in done.stderr and "keep" in done.stderr


def test_the_cli_runs_with_the_short_spin(tmp_path):
    got = report("import runpy, sys\nsys.argv = ['clipiqa', 'models']\n"
                 "try:\n    runpy.run_module('clipiqa', run_name='__main__')\nexcept SystemExit:\n    pass")
    assert got["env"]["GOMP_SPINCOUNT"] == "10000"


# ------------------------------------------------------------------------------------------- containers
@pytest.mark.parametrize("text, cpus", [("150000 100000\n", 1.5), ("max 100000\n", None), ("200000 100000", 2.0)])
def test_a_cgroup_quota_is_read_in_cpus(tmp_path, text, cpus):
    (tmp_path / "cpu.max").write_text(text)
    assert cgroup_cpu_limit(tmp_path) == cpus


def test_no_cgroup_file_means_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None


def test_a_container_limit_below_the_host_cores_sets_the_thread_count():
    assert plan({}, torch_loaded=False, cpus=2, machine_cpus=64).environ["OMP_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in plan({}, torch_loaded=False, cpus=64, machine_cpus=64).environ
    assert "OMP_NUM_THREADS" not in plan({"OMP_NUM_THREADS": "8"}, torch_loaded=False, cpus=2,
                                         machine_cpus=64).environ


def test_ranks_of_a_distributed_run_share_the_cpus():
    assert plan({"LOCAL_WORLD_SIZE": "4"}, torch_loaded=False, cpus=16, machine_cpus=16).environ[
        "OMP_NUM_THREADS"] == "4"
    assert plan({"LOCAL_WORLD_SIZE": "4"}, torch_loaded=False, cpus=2, machine_cpus=2).environ[
        "OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in plan({"LOCAL_WORLD_SIZE": "1"}, torch_loaded=False, cpus=2,
                                         machine_cpus=2).environ


def test_torch_loaded_first_on_a_busy_machine_drops_to_the_free_cores():
    assert plan({}, torch_loaded=True, cpus=2, machine_cpus=2, load=3.0, torch_threads=2).torch_threads == 1
    assert plan({}, torch_loaded=True, cpus=16, machine_cpus=16, load=4.2, torch_threads=16).torch_threads == 12
    assert plan({}, torch_loaded=True, cpus=2, machine_cpus=2, load=0.1, torch_threads=2).torch_threads is None


# ------------------------------------------------------------------------------------------- notebooks
@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_each_notebook_sets_the_threads_before_torch_loads(name):
    """The first code cell imports clipiqa before anything imports torch (it may load torch after that, e.g. for
    short errors): the plan says it was made before torch, so torch's OpenMP read the short spin."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    first = next(c.source for c in nb.cells if c.cell_type == "code")
    code = ("import os, sys\n" + first + "\nfrom clipiqa.threads import status\nprint(status())")
    done = subprocess.run([sys.executable, "-c", code], env=clean_env(), cwd=ROOT / "notebooks", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("before torch: GOMP_SPINCOUNT=10000, KMP_BLOCKTIME=1"), done.stdout


@pytest.mark.slow
def test_a_notebook_kernel_runs_with_the_documented_settings(tmp_path):
    """A real kernel (nbclient, as Voila, papermill and JupyterLab start one): the README's settings, and
    ``CLIPIQA_THREADS=1`` set for the kernel gives one thread."""
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from clipiqa.notebook import settings"),
                                         nbformat.v4.new_code_cell(REPORT)])
    for extra, threads in (({}, None), ({"CLIPIQA_THREADS": "1"}, 1)):
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute(env=clean_env(**extra))
        got = json.loads(nb.cells[1].outputs[0]["text"].strip().splitlines()[-1])
        assert got["env"]["GOMP_SPINCOUNT"] == "10000" and got["env"]["KMP_BLOCKTIME"] == "1"
        assert got["threads"] == (threads or got["cpus"])


# ------------------------------------------------------------------------------ per piece of work
def test_runnable_now_reads_the_instant_running_count(tmp_path):
    """``/proc/loadavg``'s fourth field counts the threads runnable now, the reader included."""
    from clipiqa.threads import runnable_now
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("3.10 2.00 1.00 5/812 4242\n")
    assert runnable_now(str(loadavg), samples=3, interval=0) == 4.0
    loadavg.write_text("0.00 0.00 0.00 1/90 7\n")
    assert runnable_now(str(loadavg), samples=1) == 0.0
    assert runnable_now(str(tmp_path / "missing")) is None
    loadavg.write_text("garbage\n")
    assert runnable_now(str(loadavg), samples=1) is None


def test_threads_to_share_leaves_the_cores_others_use():
    from clipiqa.threads import threads_to_share
    assert threads_to_share(2, others=0, current=2) == 2    # alone: every core
    assert threads_to_share(2, others=3, current=2) == 1    # three others on two cores: one thread, never zero
    assert threads_to_share(16, others=4, current=16) == 12
    assert threads_to_share(64, others=30, current=2) == 2  # a 2-CPU container on a busy 64-core host keeps its 2
    assert threads_to_share(2, others=0, current=1) == 1    # never more than the process has (the user's choice)
    assert threads_to_share(4, others=1.4, current=4) == 3 and threads_to_share(4, others=1.6, current=4) == 2


SHARE = ("import json, subprocess, sys, time\n"
         "import clipiqa, torch\n"
         "from clipiqa.threads import sharing_cpus\n"
         "before = torch.get_num_threads()\n"
         "burners = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(%d)]\n"
         "time.sleep(1.0)\n"
         "try:\n"
         "    with sharing_cpus() as chosen:\n"
         "        inside = torch.get_num_threads()\n"
         "finally:\n"
         "    for b in burners: b.kill()\n"
         "print(json.dumps({'before': before, 'chosen': chosen, 'inside': inside,\n"
         "                  'after': torch.get_num_threads()}))\n")


@pytest.mark.skipif(not Path("/proc/loadavg").is_file() or (os.cpu_count() or 1) < 2,
                    reason="needs Linux's /proc/loadavg and at least 2 cores")
def test_work_started_beside_busy_processes_takes_the_free_cores_and_gives_them_back():
    """Two processes spinning on the CPUs: a training or scoring started now gets fewer threads than torch's
    default (the cores they leave free, at least one), and torch's count is restored after. With
    ``CLIPIQA_THREADS=2`` (the user's choice) nothing changes."""
    burners = min(2, (os.cpu_count() or 2) - 1)
    for extra, expect_change in (({}, True), ({"CLIPIQA_THREADS": "2"}, False)):
        done = subprocess.run([sys.executable, "-c", SHARE % burners], env=clean_env(**extra),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got["after"] == got["before"]
        if expect_change:
            assert got["chosen"] is not None and 1 <= got["inside"] < got["before"], got
        else:
            assert got["chosen"] is None and got["inside"] == got["before"] == 2, got
