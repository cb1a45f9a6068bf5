"""CPU threads: a clipiqa process never starts busy-waiting threads for cores that others are using.

``import clipiqa`` calls :func:`configure` (once per process). Why, and the measurements, in docs/design.md
("CPU threads"). In short: torch's CPU kernels run on OpenMP (GNU libgomp in the pip wheels), whose idle threads
spin for up to 300000 pause instructions (milliseconds) before they sleep. One process alone gains from that;
four processes on two cores spend their time spinning instead of working (measured: 70x slower each). The spin
is read from the environment once, when torch loads OpenMP, so it must be set before ``import torch``: the
notebooks' first cell imports clipiqa before anything imports torch, and so do the CLI and scripts that start with
``import clipiqa``.

What :func:`configure` does, by ``CLIPIQA_THREADS``:

* unset or ``auto``: before torch loads, a short spin (``GOMP_SPINCOUNT``; ``KMP_BLOCKTIME`` for LLVM/Intel
  OpenMP builds) unless the user chose a wait policy, and ``OMP_NUM_THREADS`` = the CPUs this process may use
  (affinity and cgroup quota, e.g. a JupyterHub ``cpu_limit``) when that is fewer than the machine's cores,
  divided by ``LOCAL_WORLD_SIZE`` for the ranks of a distributed run;
  after torch loaded (too late for this process's spin, set all the same for the processes it starts), fewer
  torch threads when the load average says the cores are busy;
* a positive integer N: N threads (``OMP_NUM_THREADS`` before torch loads, ``torch.set_num_threads`` after), plus
  the short spin as in ``auto``;
* ``keep``: nothing changes (torch's and OpenMP's own defaults).

And at the start of each long piece of work (a training loop, scoring files: :func:`sharing_cpus`), in ``auto``
mode only, torch's threads drop to the cores that other work leaves free *now* (threads runnable at this moment,
``/proc/loadavg``'s running count, not the lagging load average), at least one, and are restored after. A run
alone keeps every core; four runs started together each take one thread instead of fighting over both cores.

The environment variables set here are inherited by every child process (DataLoader workers, which torch runs
with one thread anyway, torchrun ranks, label-store worker processes, notebook kernels started by a process that
imported clipiqa), so they spin briefly too. Variables the user set are never overwritten.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, MutableMapping, NamedTuple

__all__ = ["ENV", "SPIN", "Plan", "plan", "configure", "available_cpus", "cgroup_cpu_limit", "threads_for_load",
           "status", "ranks_here", "runnable_now", "threads_to_share", "sharing_cpus"]

ENV = "CLIPIQA_THREADS"
SPIN = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "1"}
"""The short spin: GNU OpenMP spins at most 10000 pause instructions (tens of microseconds, instead of the default
300000) and LLVM/Intel OpenMP 1 ms (instead of 200 ms) before an idle thread sleeps. Measured in docs/design.md."""
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
"""A user who set any of these chose the wait policy: clipiqa leaves the spin alone."""


class Plan(NamedTuple):
    """What :func:`configure` does in one process."""

    mode: str
    """``keep``, ``auto`` or ``N`` (the value of ``CLIPIQA_THREADS``, normalised)."""
    environ: dict
    """Variables to set in ``os.environ`` (never one the user set); once torch is loaded they only reach the
    processes this one starts."""
    torch_threads: int | None
    """``torch.set_num_threads`` value (only after torch loaded), or None."""
    reason: str
    """One line, for :func:`status` and the README's checks."""


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us`` / period of
    v1), or None when there is none. Container limits (Docker ``--cpus``, JupyterHub's ``cpu_limit``) land here
    while ``os.cpu_count()`` still reports every core of the host."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota (rounded up, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def threads_for_load(cpus: int, load: float, current: int) -> int:
    """Threads for a process whose OpenMP already spins the long default: the cores the load average leaves free
    (at least 1), never more than it has now. One thread starts no OpenMP team, so nothing spins at all."""
    free = int(cpus - load + 0.5)
    return max(1, min(current, free))


def ranks_here(environ: Mapping[str, str]) -> int:
    """Processes of one distributed run on this machine (``LOCAL_WORLD_SIZE``, set by torchrun and other
    launchers; 1 otherwise). torchrun itself already sets ``OMP_NUM_THREADS=1`` for several ranks; a launcher
    that does not gets each rank its share of the CPUs."""
    try:
        return max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def plan(environ: Mapping[str, str], torch_loaded: bool, cpus: int, machine_cpus: int,
         load: float = 0.0, torch_threads: int | None = None) -> Plan:
    """What to do, as a pure function of the environment, whether torch is loaded, the CPUs this process may use,
    the machine's cores, the 1-minute load average and torch's current thread count (when loaded)."""
    raw = environ.get(ENV, "").strip().lower() or "auto"
    if raw in ("keep", "off"):
        return Plan("keep", {}, None, f"{ENV}={raw}: torch's and OpenMP's defaults")
    number = None
    if raw != "auto":
        try:
            number = int(raw)
        except ValueError:
            number = None
        if number is None or number < 1:
            raise ValueError(f"{ENV}={environ.get(ENV)!r} is not allowed; use auto (the default), keep (torch's "
                             "and OpenMP's own settings) or a positive number of threads, e.g. 1")
    mode = "auto" if number is None else str(number)
    user_wait = any(v in environ for v in WAIT_VARS)
    if not torch_loaded:
        env = {} if user_wait else dict(SPIN)
        if number is not None:
            env["OMP_NUM_THREADS"] = str(number)
        elif "OMP_NUM_THREADS" not in environ and (cpus < machine_cpus or ranks_here(environ) > 1):
            env["OMP_NUM_THREADS"] = str(max(1, cpus // ranks_here(environ)))
        return Plan(mode, env, None, "before torch: " + (", ".join(f"{k}={v}" for k, v in env.items()) or
                                                           "the user's settings"))
    children = {} if user_wait else dict(SPIN)  # too late for this process, in time for the ones it starts
    if number is not None:
        return Plan(mode, children, number, f"torch was loaded first: {number} threads ({ENV})")
    if user_wait or "OMP_NUM_THREADS" in environ or torch_threads is None:
        return Plan(mode, children, None, "torch was loaded first: the user's settings")
    threads = threads_for_load(cpus, load, torch_threads)
    return Plan(mode, children, threads if threads != torch_threads else None,
                f"torch was loaded first (OpenMP spins its default): {threads} threads for load {load:.1f} "
                f"on {cpus} CPUs")


_done: dict = {}


def configure(environ: MutableMapping[str, str] | None = None) -> Plan:
    """Apply :func:`plan` to this process (once; later calls return the first plan). Called by ``import clipiqa``."""
    if "plan" in _done:
        return _done["plan"]
    environ = os.environ if environ is None else environ
    torch = sys.modules.get("torch")
    loaded = torch is not None and hasattr(torch, "get_num_threads")
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    result = plan(environ, loaded, available_cpus(), os.cpu_count() or 1, load,
                  torch.get_num_threads() if loaded else None)
    for key, value in result.environ.items():
        if key == "OMP_NUM_THREADS" and result.mode not in ("auto", "keep"):
            environ[key] = value  # CLIPIQA_THREADS=N is the more specific request
        else:
            environ.setdefault(key, value)
    if result.torch_threads is not None:
        torch.set_num_threads(result.torch_threads)
    _done["plan"] = result
    # threads chosen by someone (OMP_NUM_THREADS, CLIPIQA_THREADS=N or keep) are never changed per piece of work
    _done["share"] = result.mode == "auto" and "OMP_NUM_THREADS" not in environ
    return result


def runnable_now(path: str = "/proc/loadavg", samples: int = 5, interval: float = 0.004) -> float | None:
    """Threads runnable on the machine at this moment other than the one asking: the median, over ``samples``
    reads ``interval`` seconds apart, of ``/proc/loadavg``'s running count (its fourth field, ``running/total``,
    which includes the reader) minus one. None where the file does not exist (not Linux)."""
    counts = []
    for i in range(samples):
        try:
            with open(path) as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(counts))


def threads_to_share(machine_cpus: int, others: float, current: int) -> int:
    """Threads for a piece of work when ``others`` threads of other work are runnable on ``machine_cpus`` cores:
    the cores they leave free, at least 1, never more than the process has now (its cgroup or the user's limit)."""
    free = int(machine_cpus - others + 0.5)
    return max(1, min(current, free))


@contextmanager
def sharing_cpus() -> Iterator[int | None]:
    """Run a long piece of work with the cores other work leaves free now (auto mode; see the module text);
    yields the thread count it chose (None when it changed nothing) and restores torch's count after."""
    import torch
    current = torch.get_num_threads()
    # one thread cannot be shared further: no need to read /proc (scoring one image at a time stays cheap)
    others = runnable_now() if _done.get("share") and current > 1 else None
    threads = None if others is None else threads_to_share(os.cpu_count() or 1, others, current)
    if threads is None or threads == current:
        yield None
        return
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(current)


def status() -> str:
    """What this process runs with: clipiqa's plan, the OpenMP variables, torch's threads (when loaded)."""
    result = _done.get("plan")
    names = ("OMP_NUM_THREADS", *WAIT_VARS, ENV)
    env = ", ".join(f"{k}={os.environ[k]}" for k in names if k in os.environ) or "no OpenMP variables"
    torch = sys.modules.get("torch")
    threads = f"; torch threads {torch.get_num_threads()}" if torch is not None and hasattr(
        torch, "get_num_threads") else ""
    return f"{result.reason if result else 'not configured'} ({env}){threads}"
