"""The line monitor: drift tests on hand-made samples, and watch passes over a simulated line (tiny model).

The tiny model is random-init, so its margins mean nothing about quality; drift on its *embeddings* still sees a
change in the pictures (dark vs clean), which is what these tests rely on.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import clipiqa
from clipiqa.data import apply_distortion, demo_references
from clipiqa.pilot.drift import drift_report, ks_drift, mmd_drift
from clipiqa.pilot.watch import LineLog, watch_once


def test_ks_and_mmd_see_a_shift_and_not_its_absence():
    rng = np.random.default_rng(0)
    a, b, shifted = rng.normal(0, 1, 60), rng.normal(0, 1, 60), rng.normal(1.5, 1, 60)
    assert ks_drift(a, b)[1] > 0.05 and ks_drift(a, shifted)[1] < 1e-4
    x, y = rng.normal(0, 1, (40, 8)), rng.normal(0, 1, (40, 8))
    moved = y + np.r_[2.0, np.zeros(7)]
    same_stat, same_p = mmd_drift(x, y, n_permutations=200)
    moved_stat, moved_p = mmd_drift(x, moved, n_permutations=200)
    assert same_p > 0.01 and moved_p <= 1 / 201 + 1e-12 and moved_stat > same_stat
    with pytest.raises(ValueError, match="width"):
        mmd_drift(x, y[:, :4])


def test_small_windows_are_not_judged():
    report = drift_report([0.1] * 5, [0.2] * 20)
    assert report.drifted is None and "too few" in report.reason
    assert json.loads(json.dumps(report.to_dict()))["ks_pvalue"] is None


def _line(folder, names, distortion=None, level=4):
    folder.mkdir(parents=True, exist_ok=True)
    refs = demo_references(size=64)
    paths = []
    for k, name in enumerate(names):
        img = refs[name]
        # small per-image variations so that a clean batch is a sample, not copies
        img = apply_distortion(img, "white_noise", 1, rng=k)
        if distortion is not None:
            img = apply_distortion(img, distortion, level, rng=k)
        p = folder / f"{folder.name}_{k:03d}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def model():
    return clipiqa.load_model("tiny", device="cpu")


def test_watch_scores_once_logs_and_raises_drift_only_on_a_changed_line(model, tmp_path):
    names = list(demo_references(size=64))
    log = LineLog(tmp_path / "labels.sqlite")
    clean = _line(tmp_path / "clean", (names * 3)[:24])
    first = watch_once(model, clean, log, "v1", reference=12, window=12)
    assert (first.scored, first.known) == (24, 0)
    assert first.drift.drifted is False  # both windows from the same clean line
    again = watch_once(model, clean, log, "v1", reference=12, window=12)
    assert (again.scored, again.known) == (0, 24)  # idempotent: nothing is scored twice
    clean2 = _line(tmp_path / "clean2", (names * 3)[3:15])
    second = watch_once(model, clean2, log, "v1", reference=12, window=12)
    assert second.scored == 12 and second.drift.drifted is False
    # the line changes: every image much darker (distinct contents, so no two files have the same bytes)
    dark = _line(tmp_path / "dark", (names * 3)[:12], distortion="darken", level=5)
    third = watch_once(model, dark, log, "v1", reference=12, window=12)
    assert third.scored == 12 and third.drift.drifted is True, third.drift
    assert third.requested > 0 and all(p in dark for p, _ in log.label_requests())
    rows = log.rows("v1")
    assert len(rows) == 48 and {r["model_version"] for r in rows} == {"v1"}
    assert all(len(r["sha256"]) == 64 and r["embedding"].shape == rows[0]["embedding"].shape for r in rows)


def test_unreadable_files_get_error_rows_and_no_decision(model, tmp_path):
    log = LineLog(tmp_path / "labels.sqlite")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = watch_once(model, [str(bad)], log, "v1")
    assert result.failed == 1 and result.scored == 0
    (row,) = log.rows()
    assert row["status"] == "error" and row["decision"] is None and row["error"]
    with pytest.raises(FileNotFoundError, match="session folder"):
        LineLog(tmp_path / "nowhere" / "labels.sqlite")


def test_cli_watch_once_is_idempotent_and_refuses_a_gate_of_another_model(tmp_path, capsys):
    from clipiqa.cli import main
    from clipiqa.pilot import fit_gate
    import pandas as pd
    session = tmp_path / "session"
    session.mkdir()
    (session / "settings.json").write_text(json.dumps({"model_name": "tiny", "weights": None, "checkpoint": None}))
    line = tmp_path / "line"
    paths = _line(line, list(demo_references(size=64))[:6])
    run = ["watch", str(line), "--session", str(session), "--once", "--json", "--device", "cpu"]
    assert main(run) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["scored"] == 6 and first["already_logged"] == 0 and first["drift"]["drifted"] is None
    assert main(run) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["scored"] == 0 and second["already_logged"] == 6
    # a gate fitted for another checkpoint is refused before anything is scored
    labels = pd.DataFrame({"path": paths, "mos": [1, 2, 4, 5, 1, 5]})
    scores = pd.DataFrame({"path": paths, "logit_margin": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "status": "ok"})
    gate = fit_gate(labels, scores, model={"model": "tiny", "fingerprint": "x", "checkpoint_sha256": "other"},
                    n_boot=10)
    gate.save(tmp_path / "gate.json")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(line / "new.png")
    assert main([*run, "--gate", str(tmp_path / "gate.json")]) == 1
    assert "another model version" in capsys.readouterr().err
    rows = LineLog(session / "labels.sqlite").rows()
    assert len(rows) == 6  # the refused run scored nothing


def test_the_line_queue_comes_first_in_the_labelling_suggestions(tmp_path, demo_table):
    from clipiqa.session import Session
    session = Session(tmp_path / "s", images=demo_table.head(6), model_name="tiny", device="cpu")
    line = _line(tmp_path / "line", list(demo_references(size=64))[:3])
    log = LineLog(session.database_path)
    log.request_labels([line[2], line[0]], "near the threshold")
    first = session.suggest_next(k=3)
    assert first[:2] == [line[2], line[0]]  # the line's requests first, oldest first
    assert first[2] in list(demo_table.head(6)["path"].map(str))  # then the usual suggestion
    assert set(line[::2]) <= set(session.images)  # requested images joined the session
    session.label(line[2], 2)
    assert session.suggest_next(k=1) == [line[0]]  # a labelled request leaves the queue
