"""Many clipiqa processes on one machine: concurrent runs against a lone run, measured in one go.

    python benchmarks/threads.py                 # the rows of the README and docs/design.md ("CPU threads")
    python benchmarks/threads.py --concurrent 4 --repeats 1 --with-old-concurrent

Rows (every figure a ratio against a lone run measured in the same invocation):

* notebook 03's smoke training (the lesson toy, the embedded demo photos, notebook 03's smoke settings, the
  ``Session.adapt`` its panel runs): the training seconds ``History.seconds`` reports, as in the notebook's output
  line; lone with the old default (``CLIPIQA_THREADS=keep``: torch's own threads, OpenMP's default wait) against
  lone with clipiqa's setting (target: at most 1.10x), and N runs at once with clipiqa's setting against the lone
  old-default run (target: each at most 3x);
* ``clipiqa score`` (the lesson model on the demo photos): the wall time of the whole process, the same two rows.

The machine may be shared: the load average at the start and end is printed and stored; a busy machine makes
every ratio noisy. ``--with-old-concurrent`` adds N concurrent runs with the old default (measured at about 70x
on an idle 2-core machine: minutes). Writes ``<out>/bench-threads.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

OLD = {"CLIPIQA_THREADS": "keep"}
"""The old default: clipiqa leaves OpenMP and torch's thread count alone."""
OWN_VARS = ("CLIPIQA_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
            "MKL_NUM_THREADS")


# ----------------------------------------------------------------------------------------------- child: training
def child_train(work: str) -> None:
    """Notebook 03's cells in smoke mode, headless: the demo session with stand-in ratings, then the training its
    panel runs (``Session.adapt`` with the panel's ``AdaptConfig``; the panel's live curves are left out)."""
    import resource

    import clipiqa  # noqa: F401  (first, as in the notebook's parameters cell)
    from clipiqa.notebook import settings
    _, model, weights, device, demo_limit, _, demo_types, size = settings(True)
    import torch
    from clipiqa.data import build_demo_set
    from clipiqa.session import Session
    from clipiqa.finetune import AdaptConfig
    from clipiqa.qgr import QGRConfig

    demo = build_demo_set(types=demo_types, size=size)
    session = Session(os.path.join(work, "label-session"), images=demo.sample(n=demo_limit or 40, random_state=0),
                      model_name=model, weights=weights, device=device)
    severity = demo.set_index("path")["q"]
    for path in session.images:
        session.label(path, 1 + round(4 * severity[path]))
    # the AdaptConfig notebook 03's panel builds in smoke mode (AdaptPanel.config), run as its Run button does
    config = AdaptConfig(trainable="last-blocks", epochs=40, lr=3e-2, selection="fixed", qgr=QGRConfig(lam=5.0),
                         n_views=1, momentum=0.9)
    history = session.adapt(config, shots=30, device=device)
    print(json.dumps({"seconds": history.seconds, "steps": len(history.steps), "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# ----------------------------------------------------------------------------------------------- parent
def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OWN_VARS}
    env.update(extra)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _start(kind: str, extra: dict, work: Path, images: Path):
    work.mkdir(parents=True, exist_ok=True)
    if kind == "train":
        cmd = [sys.executable, __file__, "--child-train", str(work)]
    else:
        cmd = [sys.executable, "-m", "clipiqa", "score", "--model", "lesson", str(images),
               "--out", str(work / "scores.csv")]
    return subprocess.Popen(cmd, env=_env(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), \
        time.perf_counter()


def run_batch(kind: str, extra: dict, n: int, root: Path, images: Path) -> list[float]:
    """Start ``n`` processes at once; the seconds of each (training seconds, or the score process's wall time)."""
    started = [_start(kind, extra, root / f"{kind}-{time.monotonic_ns()}-{i}", images) for i in range(n)]
    done: dict = {}

    def wait(i: int) -> None:  # one thread per process: each wall time ends when that process exits
        proc, t0 = started[i]
        stdout, stderr = proc.communicate(timeout=1800)
        done[i] = (proc.returncode, stdout, stderr, time.perf_counter() - t0)

    waiters = [threading.Thread(target=wait, args=(i,)) for i in range(n)]
    for t in waiters:
        t.start()
    for t in waiters:
        t.join()
    out = []
    for i in range(n):
        code, stdout, stderr, wall = done[i]
        if code != 0:
            raise RuntimeError(f"{kind} child failed ({code}):\n{stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1])["seconds"] if kind == "train" else wall)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="lone runs per setting (median)")
    parser.add_argument("--only", default="train,score", help="train, score or both")
    parser.add_argument("--with-old-concurrent", action="store_true")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="measure this environment as 'ours' instead of clipiqa's default (exploration)")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--child-train", metavar="WORK", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_train:
        child_train(args.child_train)
        return 0
    ours = dict(kv.split("=", 1) for kv in args.env)
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} cores "
          "(a busy machine makes every ratio noisy)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="clipiqa-bench-threads-") as tmp:
        root = Path(tmp)
        images = root / "images"
        if "score" in args.only:
            import clipiqa.data as cdata
            demo = cdata.build_demo_set(types=["gaussian_blur", "white_noise", "jpeg"], size=64)
            images.mkdir()
            for p in demo["path"]:
                shutil.copy(p, images / Path(p).name)
        for kind in [k for k in ("train", "score") if k in args.only]:
            old_lone, new_lone = [], []
            for _ in range(args.repeats):  # alternated, so drifting machine load hits both alike
                old_lone += run_batch(kind, OLD, 1, root, images)
                new_lone += run_batch(kind, ours, 1, root, images)
                print(f"{kind}: lone, old default {old_lone[-1]:.2f} s, clipiqa's setting {new_lone[-1]:.2f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
            base = statistics.median(old_lone)
            new = statistics.median(new_lone)
            rows.append({"row": f"{kind}: lone, clipiqa's setting vs old default", "baseline_s": base,
                         "ours_s": new, "ratio": new / base, "target": 1.10})
            many = run_batch(kind, ours, args.concurrent, root, images)
            rows.append({"row": f"{kind}: {args.concurrent} at once (each) vs one alone (old default)",
                         "baseline_s": base, "ours_s": max(many), "each_s": many,
                         "ratio": max(many) / base, "target": 3.0})
            if args.with_old_concurrent:
                old_many = run_batch(kind, OLD, args.concurrent, root, images)
                rows.append({"row": f"{kind}: {args.concurrent} at once, old default, vs one alone",
                             "baseline_s": base, "ours_s": max(old_many), "each_s": old_many,
                             "ratio": max(old_many) / base, "target": None})
            for r in rows[-3 if args.with_old_concurrent else -2:]:
                ok = "" if r["target"] is None else ("  ok" if r["ratio"] <= r["target"] else "  MISSED")
                each = f" (each: {', '.join(f'{s:.1f}' for s in r['each_s'])})" if "each_s" in r else ""
                print(f"{r['row']:<62} {r['baseline_s']:7.2f} s -> {r['ours_s']:7.2f} s  "
                      f"{r['ratio']:5.2f}x (target <= {r['target']}){ok}{each}", flush=True)
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-threads.json").write_text(json.dumps(
        {"cores": os.cpu_count(), "load_start": load0, "load_end": load1, "ours_env": ours or "clipiqa default",
         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
