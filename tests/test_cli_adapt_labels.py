"""``clipiqa adapt`` label flags: --dataset, --higher-better/--lower-better, --allow-outside-root. Most tests parse
the flags and read the labels without loading a model."""
from __future__ import annotations

import argparse
import json

import pytest
from fixtures_datasets import make_pyiqa_meta, write_image
from scipy.stats import spearmanr

from clipiqa.cli import UsageError, main
from clipiqa.commands.adapt import _configure, _read


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _configure(parser)
    return parser.parse_args([*argv, "--out", "unused"])


def test_dataset_flag_reads_dmos_the_right_way_up(tmp_path):
    csv, images = make_pyiqa_meta(tmp_path, "live")
    args = _args("--labels", str(csv), "--images-root", str(images), "--dataset", "LIVE")
    labels = _read(args)
    assert spearmanr(labels["q"], labels["mos"])[0] == pytest.approx(-1.0)
    # the card is written from args: they now hold the scale that was used
    assert args.score_range == (0.0, 100.0) and args.lower_better is True


def test_range_without_direction_is_refused_naming_the_flags(tmp_path):
    csv, images = make_pyiqa_meta(tmp_path, "live")
    with pytest.raises(UsageError) as info:
        _read(_args("--labels", str(csv), "--images-root", str(images), "--score-range", "0", "100"))
    message = str(info.value)
    assert "--higher-better" in message and "--lower-better" in message and "--dataset" in message
    labels = _read(_args("--labels", str(csv), "--images-root", str(images), "--score-range", "0", "100",
                         "--lower-better"))
    assert spearmanr(labels["q"], labels["mos"])[0] == pytest.approx(-1.0)
    mos_file = _read(_args("--labels", str(csv), "--images-root", str(images), "--score-range", "0", "100",
                           "--higher-better"))
    assert spearmanr(mos_file["q"], mos_file["mos"])[0] == pytest.approx(1.0)


def test_dataset_and_contradicting_direction_or_unknown_dataset(tmp_path):
    csv, images = make_pyiqa_meta(tmp_path, "csiq")
    with pytest.raises(UsageError, match="drop --higher-better"):
        _read(_args("--labels", str(csv), "--images-root", str(images), "--dataset", "csiq", "--higher-better"))
    with pytest.raises(UsageError, match="unknown dataset"):
        _read(_args("--labels", str(csv), "--images-root", str(images), "--dataset", "imagenet"))
    with pytest.raises(SystemExit):  # argparse: the two directions exclude each other
        _args("--labels", str(csv), "--higher-better", "--lower-better")


def test_plain_acr_file_needs_no_flags(tmp_path):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name)
    (tmp_path / "l.csv").write_text("path,score\na.png,2\nb.png,5\n")
    args = _args("--labels", str(tmp_path / "l.csv"))
    assert _read(args)["q"].tolist() == [0.25, 1.0]
    assert args.score_range == (1.0, 5.0) and args.lower_better is False


def test_outside_root_names_the_flag(tmp_path):
    write_image(tmp_path / "root" / "a.png")
    write_image(tmp_path / "other" / "b.png")
    csv = tmp_path / "root" / "l.csv"
    csv.write_text("path,score\na.png,2\n../other/b.png,4\n")
    with pytest.raises(UsageError, match="--allow-outside-root"):
        _read(_args("--labels", str(csv), "--images-root", str(tmp_path / "root")))
    labels = _read(_args("--labels", str(csv), "--images-root", str(tmp_path / "root"), "--allow-outside-root"))
    assert len(labels) == 2


def test_adapt_with_dataset_writes_the_real_scale_in_the_card(tmp_path, capsys):
    csv, images = make_pyiqa_meta(tmp_path / "csiq", "csiq")
    out = tmp_path / "ckpt"
    rc = main(["adapt", "--labels", str(csv), "--images-root", str(images), "--dataset", "csiq", "--out", str(out),
               "--model", "tiny", "--device", "cpu", "--epochs", "1", "--augment", "none", "--batch-size", "8",
               "--trainable", "text", "--no-qgr"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "card.json").read_text())["data"]
    assert data["higher_better"] is False and data["score_range"] == [0.0, 1.0] and data["n_images"] == 8


def test_adapt_refuses_range_only_dmos_file_before_loading_a_model(tmp_path, capsys):
    csv, images = make_pyiqa_meta(tmp_path, "live")
    rc = main(["adapt", "--labels", str(csv), "--images-root", str(images), "--score-range", "0", "100",
               "--out", str(tmp_path / "o"), "--model", "tiny", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "--lower-better" in err, err
    assert not (tmp_path / "o").exists()
