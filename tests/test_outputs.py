"""Outputs that round-trip and are checked before the work starts (tiny random-init model)."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipiqa.cli import main
from clipiqa.csvio import read_csv

TINY = ["--model", "tiny", "--device", "cpu"]


@pytest.fixture
def odd_folder(tmp_path):
    """Three small photos whose names hold a non-UTF-8 byte, a carriage return, and a quote plus a comma."""
    folder = tmp_path / "odd"
    folder.mkdir()
    names = [b"caf\xe9.png", b"split\rrow.png", b'q"uote,comma.png']
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(os.path.join(os.fsencode(folder), name),
                                                                             "PNG")
    return folder, sorted(os.fsdecode(os.path.join(os.fsencode(folder), n)) for n in names)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any command loads a model: the checks must come first."""
    import clipiqa.factory

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output check")
    monkeypatch.setattr(clipiqa.factory, "load_model", refuse)


def test_score_out_round_trips_odd_file_names(odd_folder, tmp_path, capsys):
    folder, paths = odd_folder
    out = tmp_path / "scores.csv"
    assert main(["score", str(folder), *TINY, "--out", str(out)]) == 0, capsys.readouterr().err
    table = read_csv(out)
    assert sorted(table["path"]) == paths and (table["status"] == "ok").all()
    assert {"score", "logit_margin", "model"} <= set(table.columns)
    for p in table["path"]:
        assert os.path.isfile(p)  # every path read back names the file on disk


def test_score_to_stdout_writes_the_raw_bytes(odd_folder, capsysbinary):
    folder, paths = odd_folder
    assert main(["score", str(folder), *TINY]) == 0
    data = capsysbinary.readouterr().out
    assert b"caf\xe9.png" in data
    import io
    assert sorted(read_csv(io.BytesIO(data))["path"]) == paths


def test_score_out_keeps_the_mode_of_the_file_it_replaces(odd_folder, tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("old\n")
    os.chmod(out, 0o640)
    assert main(["score", str(odd_folder[0]), *TINY, "--out", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640 and len(read_csv(out)) == 3


@pytest.mark.parametrize("command", [
    ["score", "{images}", *TINY],
    ["bench", "--dataset", "demo", "--shots", "5", *TINY],
    ["explain", "{images}", *TINY],
    ["adapt", "--labels", "{labels}", *TINY],
    ["pretrain", *TINY],
])
def test_out_in_a_missing_folder_is_a_usage_error_before_any_model_loads(command, odd_folder, tmp_path, capsys,
                                                                         no_model):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score\na.png,3\nb.png,4\n")
    argv = [a.format(images=odd_folder[0], labels=labels) for a in command]
    out = tmp_path / "no" / "such" / "folder" / "result"
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--out" in err and "does not exist" in err and str(out.parent) in err, err
    assert not (tmp_path / "no").exists()


def test_score_out_that_is_a_folder_is_a_usage_error(odd_folder, tmp_path, capsys, no_model):
    assert main(["score", str(odd_folder[0]), *TINY, "--out", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["folder", "pair"])
def test_adapt_refuses_an_existing_checkpoint_without_force(layout, tmp_path, capsys, no_model):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score\na.png,3\nb.png,4\n")
    if layout == "folder":
        out = tmp_path / "ckpt"
        out.mkdir()
        (out / "card.json").write_text("{}")
        keep = out / "card.json"
    else:
        out = tmp_path / "model.safetensors"
        out.write_bytes(b"old")
        keep = out
    assert main(["adapt", "--labels", str(labels), *TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already" in err and "--force" in err, err
    assert keep.read_bytes() in (b"{}", b"old")


def test_adapt_force_overwrites_and_keeps_the_mode(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{1 + i}")
    labels = folder / "labels.csv"
    labels.write_text("path,score\n" + "\n".join(rows) + "\n")
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "card.json").write_text("{}")
    (out / "history.csv").write_text("old\n")
    os.chmod(out / "history.csv", 0o600)
    argv = ["adapt", "--labels", str(labels), *TINY, "--out", str(out), "--epochs", "1", "--augment", "none",
            "--batch-size", "4", "--trainable", "text", "--force"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "card.json").read_text())["format"] == "clipiqa-checkpoint"
    assert stat.S_IMODE(os.stat(out / "history.csv").st_mode) == 0o600
    assert len(pd.read_csv(out / "history.csv")) >= 1
    assert not [n for n in os.listdir(out) if n.endswith(".clipiqa-tmp")]


def test_pretrain_refuses_an_existing_run_without_state(tmp_path, capsys, no_model):
    out = tmp_path / "meta"
    (out / "best").mkdir(parents=True)
    (out / "best" / "card.json").write_text("{}")
    assert main(["pretrain", *TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already" in err and "--force" in err, err


def test_score_reports_skipped_files_on_stderr(odd_folder, tmp_path, capsys):
    folder = odd_folder[0]
    (folder / "notes.txt").write_text("x")
    os.mkfifo(folder / "pipe.png")
    assert main(["score", str(folder), *TINY, "--out", str(tmp_path / "s.csv")]) == 0
    err = capsys.readouterr().err
    assert "notes.txt" in err and "named pipe" in err and "skipped 2" in err, err


def test_score_max_pixels(tmp_path, capsys):
    """A 108-MP phone photo scores with the defaults (draft mode); a progressive one needs --max-pixels."""
    folder = tmp_path / "big"
    folder.mkdir()
    im = Image.new("L", (12000, 9000), 128)
    im.save(folder / "baseline.jpg", quality=80)
    im.save(folder / "progressive.jpg", quality=80, progressive=True)
    del im
    out = tmp_path / "s.csv"
    assert main(["score", str(folder), *TINY, "--out", str(out)]) == 2
    table = read_csv(out).set_index("path")
    assert table.loc[str(folder / "baseline.jpg"), "status"] == "ok"
    row = table.loc[str(folder / "progressive.jpg")]
    assert row["status"] == "error" and "--max-pixels" in row["error"]
    assert main(["score", str(folder), *TINY, "--out", str(out), "--max-pixels", "120M"]) == 0
    assert (read_csv(out)["status"] == "ok").all()


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_bad_max_pixels_is_a_usage_error(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["score", str(tmp_path), *TINY, "--max-pixels", value])
    assert info.value.code == 1 and "--max-pixels" in capsys.readouterr().err


def test_a_named_fifo_gets_an_error_row_and_never_blocks(odd_folder, tmp_path, capsys):
    fifo = tmp_path / "stream.jpg"
    os.mkfifo(fifo)
    out = tmp_path / "s.csv"
    assert main(["score", str(fifo), str(odd_folder[0]), *TINY, "--out", str(out)]) == 2
    row = read_csv(out).set_index("path").loc[str(fifo)]
    assert row["status"] == "error" and "named pipe" in row["error"] and "empty" not in row["error"]
