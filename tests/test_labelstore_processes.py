"""Many processes on one Session folder: concurrent raters lose nothing, killed writers lose no
confirmed rating and leave no temporary file. Children import clipiqa.session without torch (see
tests/labelstore_workers.py), so each test stays within seconds on 2 cores."""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import labelstore_workers  # noqa: E402
from store_reads import stored_ratings, temporaries  # noqa: E402

from clipiqa.session import Session  # noqa: E402


def _images(tmp_path, n: int) -> pd.DataFrame:
    root = tmp_path / "img"
    root.mkdir()
    paths = [str(root / f"img{i:04d}.jpg") for i in range(n)]
    for p in paths:
        open(p, "wb").close()
    return pd.DataFrame({"path": paths})


def _stored(folder) -> list[tuple[str, str, float]]:
    return [(path, rater, score) for path, rater, score, _ in stored_ratings(folder)]


@pytest.mark.parametrize("layout", ["4 raters x 100 images", "4 kernels of one rater, disjoint quarters"])
def test_four_processes_rating_at_once_lose_nothing(tmp_path, layout):
    """4 x 100 ratings leave 400; the issue's reproduction (one rater, disjoint parts of 100 images in several
    kernels, which left 50 of 100 on disk) leaves 100."""
    images = _images(tmp_path, 100)
    folder = tmp_path / "s"
    session = Session(folder, images=images, model_name="tiny")
    paths = session.images
    if layout.startswith("4 raters"):
        jobs = [(f"rater{k}", [(p, float(1 + (i + k) % 5)) for i, p in enumerate(paths)]) for k in range(4)]
    else:
        jobs = [("default", [(p, float(1 + i % 5)) for i, p in enumerate(paths) if i % 4 == k]) for k in range(4)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=labelstore_workers.rate_many, args=(str(folder), rater, items, barrier))
             for rater, items in jobs]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0], "a rating process failed (see its stderr above)"
    stored = _stored(folder)
    total = sum(len(items) for _, items in jobs)
    assert total == (400 if layout.startswith("4 raters") else 100)
    assert len(stored) == total, f"{total - len(stored)} ratings lost"
    assert sorted(stored) == sorted((p, rater, score) for rater, items in jobs for p, score in items)
    export = pd.read_csv(session.labels_path)
    expected = pd.DataFrame([(p, rater, s) for rater, items in jobs for p, s in items],
                            columns=["path", "rater", "score"]).groupby("path")["score"]
    assert len(export) == len(images) and export["n_ratings"].sum() == total
    assert export.set_index("path")["mos"].sort_index().tolist() == pytest.approx(expected.mean().sort_index()
                                                                                   .tolist())
    assert session.counts()["rated_images"] == len(images) and not temporaries(folder)
    print(f"\n{layout}: {total} ratings from 4 spawned processes in {time.monotonic() - t0:.1f} s")


def test_killed_writers_lose_no_confirmed_rating_and_leave_no_temporary_file(tmp_path, monkeypatch):
    """20 SIGKILLs at random moments of rapid rating; a rating counts as confirmed when the child reported it
    after ``label`` returned. Children come from a forkserver that preloaded the session module (a clean
    process, forked per child in milliseconds instead of a fresh interpreter each time; Python 3.11's
    forkserver ignores the parent's sys.path, hence PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    images = _images(tmp_path, 600)
    folder = tmp_path / "s"
    Session(folder, images=images, model_name="tiny").close()
    items = [(p, float(1 + i % 5)) for i, p in enumerate(images["path"])]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["labelstore_workers", "pytest"])  # pytest: the children's __mp_main__
    rng = random.Random(0)
    confirmed: dict[str, float] = {}
    orphans = kills = 0
    t0 = time.monotonic()
    for _ in range(20):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=labelstore_workers.rate_until_killed, args=(str(folder), items, send))
        proc.start()
        send.close()
        assert recv.poll(60) and recv.recv()[0] == "ready"
        time.sleep(rng.uniform(0.01, 0.3))  # the child rates meanwhile
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it rated everything left before the kill (its "finished" message is checked below)
        proc.join(30)
        kills += proc.exitcode == -signal.SIGKILL
        finished = False
        while recv.poll():
            try:
                path, score = recv.recv()
            except EOFError:
                break
            finished |= path == "finished"
            if path not in ("ready", "finished"):
                confirmed[path] = score
        recv.close()
        orphans += len(temporaries(folder))  # a kill inside an export write leaves one until the next write
        assert proc.exitcode == -signal.SIGKILL or finished, f"a child ended on its own: exit {proc.exitcode}"
        if finished:
            break  # every image is rated
    assert kills >= 5 and len(confirmed) > 40, (kills, len(confirmed))
    stored = {p: s for p, _, s in _stored(folder)}
    lost = {p: s for p, s in confirmed.items() if stored.get(p) != s}
    assert not lost, f"{len(lost)} confirmed rating(s) lost"
    session = Session.open(folder)  # the next user of the folder
    assert not temporaries(folder)
    assert {p: v["score"] for p, v in session.labels.items()} == stored
    export = pd.read_csv(session.labels_path)
    assert dict(zip(export["path"], export["mos"])) == stored  # the export matches the database
    print(f"\n{kills} kills: {len(confirmed)} confirmed ratings kept, {len(stored) - len(confirmed)} committed but "
          f"unreported, {orphans} orphaned temporary file(s) seen between kills and removed; "
          f"{time.monotonic() - t0:.1f} s")
