"""``clipiqa explain`` in-process with the random-init tiny model: files written, rows, exit codes."""
from __future__ import annotations

import pandas as pd
import pytest

from clipiqa.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main


@pytest.fixture
def two_photos(photo_dir):
    for extra in ("rocket.jpg", "coffee.jpg"):
        (photo_dir / extra).unlink()
    return photo_dir


def test_explain_writes_overlays_and_csv(two_photos, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["explain", str(two_photos), "--model", "tiny", "--device", "cpu", "--method", "gradcam,ig",
               "--ig-steps", "4", "--out", str(out)])
    assert rc == EXIT_OK
    for stem in ("astronaut", "chelsea"):
        for method in ("gradcam", "ig"):
            assert (out / f"{stem}_{method}.png").stat().st_size > 1000
    table = pd.read_csv(out / "diagnostics.csv")
    assert len(table) == 4 and (table["status"] == "ok").all() and set(table["kind"]) == {"image"}
    assert table["score"].between(0, 1).all() and table["top10_share"].between(0.1, 1).all()
    assert table["model"].str.contains("random init").all() and table["note"].str.contains("meaningless").all()
    assert "random-init" in capsys.readouterr().err


def test_bad_file_gets_an_error_row_and_exit_2(two_photos, tmp_path):
    (two_photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = main(["explain", str(two_photos / "astronaut.jpg"), str(two_photos / "broken.jpg"), "--model", "tiny",
               "--device", "cpu", "--method", "gradcam", "--method", "gradcam-conv1", "--out", str(out)])
    assert rc == EXIT_PARTIAL
    table = pd.read_csv(out / "diagnostics.csv")
    bad = table[table["status"] == "error"]
    assert len(bad) == 1 and "broken.jpg" in bad["error"].iloc[0] and "not a recognised image" in bad["error"].iloc[0]
    assert set(table.loc[table["status"] == "ok", "method"]) == {"gradcam", "gradcam-conv1"}


def test_usage_errors_exit_1(two_photos, tmp_path, capsys):
    base = ["--model", "tiny", "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(["explain", str(two_photos), "--method", "lime", *base]) == EXIT_USAGE
    assert "unknown method(s) lime" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["explain", str(empty), *base]) == EXIT_USAGE
    capsys.readouterr()
    assert main(["explain", str(two_photos), "--model", "tiny"]) == EXIT_USAGE  # images need --out
    assert "--out" in capsys.readouterr().err
    assert main(["explain", str(two_photos), "--diagnostics", "--demo-types", "nope", *base]) == EXIT_USAGE


def test_diagnostics_rows_and_files(two_photos, tmp_path):
    out = tmp_path / "out"
    rc = main(["explain", str(two_photos / "chelsea.jpg"), "--model", "tiny", "--device", "cpu", "--method",
               "gradcam", "--out", str(out), "--diagnostics", "--demo-images", "2", "--demo-types", "gaussian_blur"])
    assert rc == EXIT_OK
    table = pd.read_csv(out / "diagnostics.csv")
    assert set(table["kind"]) == {"image", "distortion_focus", "content_vs_distortion"}
    metrics = table.dropna(subset=["metric"]).set_index(["kind", "metric"])["value"]
    assert 0 <= metrics[("content_vs_distortion", "eta2_content")] <= 1
    assert metrics[("distortion_focus", "focus_mean")] > 0
    for name in ("demo_focus.csv", "demo_content_vs_distortion.csv", "demo_focus_gradcam.png",
                 "demo_content_vs_distortion.png"):
        assert (out / name).exists()
