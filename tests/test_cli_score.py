"""`clipiqa score` and `clipiqa models`: a row for every file, defined statuses and exit codes."""
import subprocess
import sys

import pandas as pd
import pytest

from bad_images import write_bad_images
from clipiqa.cli import main


def test_score_mixed_folder_gives_a_row_per_file_and_exit_2(tmp_path, capsys):
    files = write_bad_images(tmp_path / "mixed")
    out = tmp_path / "scores.csv"
    code = main(["score", str(tmp_path / "mixed"), "--model", "tiny", "--device", "cpu", "--out", str(out),
                 "--batch-size", "4"])
    assert code == 2
    table = pd.read_csv(out, keep_default_na=False)
    assert sorted(table["path"]) == sorted(p for p, _ in files.values())
    by_path = table.set_index("path")
    for name, (path, expected) in files.items():
        row = by_path.loc[path]
        assert row["status"] == expected, name
        if expected == "ok":
            assert 0.0 <= float(row["score"]) <= 1.0 and row["error"] == ""
        else:
            assert row["score"] == "" and path in row["error"], name
    assert set(table["model"]) == {"tiny [random init: meaningless]"}
    err = capsys.readouterr().err
    n_bad = sum(e == "error" for _, e in files.values())
    assert f"{n_bad} failed" in err and "meaningless" in err


def test_score_good_files_exit_0_and_deterministic(photo_dir, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["score", str(photo_dir), "--model", "tiny", "--out", str(a), "--batch-size", "3"]) == 0
    assert main(["score", *sorted(map(str, photo_dir.iterdir())), "--model", "tiny", "--out", str(b),
                 "--batch-size", "1"]) == 0
    ta, tb = pd.read_csv(a), pd.read_csv(b)
    assert (ta["status"] == "ok").all() and len(ta) == 4
    merged = ta.merge(tb, on="path")
    assert (merged["score_x"] - merged["score_y"]).abs().max() < 1e-5


@pytest.mark.parametrize("argv", [
    ["score", "nowhere/"],
    ["score", ".", "--model", "nope"],
    ["score", ".", "--batch-size", "0", "--model", "tiny"],
    ["frobnicate"],
])
def test_usage_errors_exit_1(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 1
    assert "error" in capsys.readouterr().err


def test_missing_weights_is_a_usage_error_with_instructions(photo_dir, capsys, monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["score", str(photo_dir), "--model", "vitb16-openai"]) == 1
    assert "--weights" in capsys.readouterr().err


def test_models_lists_presets_and_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "clipiqa", "models"], capture_output=True, text=True, check=True)
    for name in ("vitb16-openai", "vitb32-openai", "tiny"):
        assert name in result.stdout
    assert "meaningless" in result.stdout
