"""The line dashboard's logic without a browser: it scores what arrives, shows the latest scores, rejects, the
drift alarm and the label queue (tiny random-init model: machinery only)."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
from PIL import Image

import clipiqa
from clipiqa.pilot import fit_gate, model_identity
from clipiqa.widgets import LineDashboard


def _session(tmp_path):
    session = tmp_path / "session"
    session.mkdir()
    (session / "settings.json").write_text(json.dumps({"model_name": "tiny", "weights": None, "checkpoint": None,
                                                       "device": "cpu"}))
    return session


def _images(folder, n, seed, bright=None):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) if bright is None else \
            np.full((64, 64, 3), bright, np.uint8) + rng.integers(0, 8, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"img_{seed}_{k:02d}.png")


def test_dashboard_scores_new_images_and_shows_them(tmp_path):
    session, line = _session(tmp_path), tmp_path / "line"
    model = clipiqa.load_model("tiny", device="cpu")
    _images(line, 4, seed=0)
    paths = sorted(str(p) for p in line.iterdir())
    # a gate on this model whose threshold sits in the middle of the first images' margins
    margins = clipiqa.score_files(model, paths)["logit_margin"]
    gate = fit_gate(pd.DataFrame({"path": paths, "mos": [1, 1, 5, 5]}),
                    pd.DataFrame({"path": paths, "logit_margin": sorted(margins), "status": "ok"}),
                    model=model_identity(model), n_boot=5)
    board = LineDashboard(session, folder=line, gate=gate, model=model, reference=8)
    assert "4 images scored" in board.header.value and board.error == ""
    assert all(f"img_0_{k:02d}.png" in board.latest.value for k in range(4))
    decisions = [r["decision"] for r in board.line_log.rows()]
    assert set(decisions) <= {"pass", "reject"} and "pass" in decisions and "reject" in decisions
    assert len(board.rejects.children) == decisions.count("reject")  # one thumbnail per reject (up to 6)
    _images(line, 1, seed=1)
    board.refresh()
    assert "img_1_00.png" in board.latest.value and "5 images scored" in board.header.value
    assert "no drift alarm" in board.alarm.value and "too few" in board.alarm.value
    assert board.trend.value[:4] == b"\x89PNG"
    assert "random-init" in board.caveat.value


def test_dashboard_raises_the_drift_alarm_and_lists_the_queue(tmp_path):
    session, line = _session(tmp_path), tmp_path / "line"
    model = clipiqa.load_model("tiny", device="cpu")
    _images(line, 10, seed=0, bright=120)
    board = LineDashboard(session, folder=line, model=model, reference=10)
    _images(line, 10, seed=2, bright=10)  # the line turns dark
    board.refresh()
    assert "DRIFT" in board.alarm.value, board.alarm.value
    assert "img_2_" in board.queue.value  # images of the drifted window wait for labels
    board.start(interval=0.05)  # live: a background thread scores what arrives and redraws
    try:
        _images(line, 1, seed=3, bright=10)
        deadline = time.monotonic() + 120
        while "img_3_00.png" not in board.latest.value and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "img_3_00.png" in board.latest.value and board.error == ""
    finally:
        board.stop()
