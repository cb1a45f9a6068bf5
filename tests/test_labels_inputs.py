"""read_labels: a scale that cannot be read upside down and inputs resolved before
they are trusted. Each failure once reported is a test here."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixtures_datasets import make_pyiqa_meta, write_image
from scipy.stats import spearmanr

from clipiqa.data.readers import DatasetFormatError, read_labels


def _images(folder: Path, *names: str) -> None:
    for i, name in enumerate(names):
        write_image(folder / name, shade=i * 40)


# ------------------------------------------------------------------------------------ scale and direction


@pytest.mark.parametrize("dataset,n", [("live", 10), ("csiq", 8)])
def test_pyiqa_dmos_with_dataset_is_anti_correlated(tmp_path: Path, dataset: str, n: int) -> None:
    csv, images = make_pyiqa_meta(tmp_path, dataset)
    df = read_labels(csv, images, dataset=dataset)
    assert len(df) == n
    assert spearmanr(df["q"], df["mos"])[0] == pytest.approx(-1.0)
    assert df.attrs["higher_better"] is False and df.attrs["dataset"] == dataset
    lo, hi = df.attrs["score_range"]
    np.testing.assert_allclose(df["q"], 1 - (df["mos"] - lo) / (hi - lo))
    assert df["content_id"].nunique() < len(df)  # ref_name groups the distorted images


def test_live_pyiqa_range_alone_is_refused(tmp_path: Path) -> None:
    # LIVE's pyiqa meta file says "mos" but holds DMOS: a range without a direction used to invert it silently
    csv, images = make_pyiqa_meta(tmp_path, "live")
    with pytest.raises(DatasetFormatError) as info:
        read_labels(csv, images)  # default 1-5: out of range, and the advice must name the direction
    assert "higher_better" in str(info.value) and "dataset=" in str(info.value)
    with pytest.raises(DatasetFormatError, match="higher_better=True.*higher_better=False"):
        read_labels(csv, images, score_range=(0, 100))
    flipped = read_labels(csv, images, score_range=(0, 100), higher_better=False)
    assert spearmanr(flipped["q"], flipped["mos"])[0] == pytest.approx(-1.0)


def test_dmos_header_needs_a_direction(tmp_path: Path) -> None:
    csv, images = make_pyiqa_meta(tmp_path, "csiq")
    with pytest.raises(DatasetFormatError) as info:
        read_labels(csv, images, score_range=(0, 1))
    message = str(info.value)
    assert "dmos" in message and "higher_better" in message and "dataset=" in message
    # even on the default 1-5 range (KADID's 'dmos' is higher-better, LIVE's is not): say which
    _images(tmp_path / "k", "a.png", "b.png")
    kadid = tmp_path / "k" / "meta.csv"
    kadid.write_text("ref_name,dist_name,dmos\nr.png,a.png,4.5\nr.png,b.png,2\n")
    with pytest.raises(DatasetFormatError, match="higher_better"):
        read_labels(kadid)
    df = read_labels(kadid, dataset="kadid10k")
    assert df["q"].tolist() == [pytest.approx(0.875), pytest.approx(0.25)]


def test_dataset_and_contradicting_direction_is_refused(tmp_path: Path) -> None:
    csv, images = make_pyiqa_meta(tmp_path, "csiq")
    with pytest.raises(ValueError, match="lower scores are better"):
        read_labels(csv, images, dataset="csiq", higher_better=True)
    with pytest.raises(ValueError, match="unknown dataset"):
        read_labels(csv, images, dataset="imagenet")


def test_default_acr_still_needs_nothing(tmp_path: Path) -> None:
    _images(tmp_path, "a.png", "b.png")
    (tmp_path / "l.csv").write_text("path,score\na.png,1\nb.png,5\n")
    df = read_labels(tmp_path / "l.csv")
    assert df["q"].tolist() == [0.0, 1.0] and df.attrs["higher_better"] is True
    assert read_labels(tmp_path / "l.csv", score_range=(1, 5))["q"].tolist() == [0.0, 1.0]


def test_livec_pyiqa_drops_practice_images_with_a_warning(tmp_path: Path) -> None:
    csv, images = make_pyiqa_meta(tmp_path, "livec")
    with pytest.warns(UserWarning, match="practice") as record:
        df = read_labels(csv, images, dataset="livec")
    message = " ".join(str(w.message) for w in record)
    assert all(f"t{k}.bmp" in message for k in range(1, 8))
    assert len(df) == 8 and "99" not in df["mos"].astype(str).tolist()
    np.testing.assert_allclose(df["q"], (20 + 5 * np.arange(8)) / 100)
    np.testing.assert_allclose(df["mos_std"], 10 + np.arange(8))


# ---------------------------------------------------------------------------------- resolved before trusted


def test_aliased_duplicates_are_caught_naming_both_rows(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg", "sub/c.jpg")
    for alias in ("./a.jpg", "sub/../a.jpg", str(tmp_path / "a.jpg")):
        csv = tmp_path / "labels.csv"
        csv.write_text(f"path,score\na.jpg,4\nb.jpg,3\n{alias},1\n")
        with pytest.raises(DatasetFormatError) as info:
            read_labels(csv, tmp_path)
        message = str(info.value)
        assert "line 2" in message and "line 4" in message and alias in message, message


def test_paths_outside_the_images_root_are_refused(tmp_path: Path) -> None:
    _images(tmp_path / "root", "a.jpg")
    _images(tmp_path / "elsewhere", "secret.jpg")
    csv = tmp_path / "root" / "labels.csv"
    for outside in ("../elsewhere/secret.jpg", str(tmp_path / "elsewhere" / "secret.jpg")):
        csv.write_text(f"path,score\na.jpg,4\n{outside},2\n")
        with pytest.raises(DatasetFormatError) as info:
            read_labels(csv, tmp_path / "root")
        assert "outside" in str(info.value) and "allow_outside_root" in str(info.value)
        assert "line 3" in str(info.value) and outside in str(info.value)
        df = read_labels(csv, tmp_path / "root", allow_outside_root=True)
        assert df["path"].tolist()[1] == str(tmp_path / "elsewhere" / "secret.jpg")
    # without images_root, relative paths may not climb out of the CSV's folder either
    csv.write_text("path,score\na.jpg,4\n../elsewhere/secret.jpg,2\n")
    with pytest.raises(DatasetFormatError, match="outside"):
        read_labels(csv)


def test_blank_path_with_a_score_is_named(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,score\na.jpg,4\n,3\nb.jpg,2\n")
    with pytest.raises(DatasetFormatError, match="line 3"):
        read_labels(csv)
    # fully blank lines carry nothing and are skipped
    csv.write_text("path,score\na.jpg,4\n\n,\nb.jpg,2\n")
    assert len(read_labels(csv)) == 2


@pytest.mark.parametrize("first", ["a.jpg,abc", "a.jpg,", "a.jpg,nan?"])
def test_headerless_bad_first_row_is_not_dropped(tmp_path: Path, first: str) -> None:
    _images(tmp_path, "a.jpg", "b.jpg", "c.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"{first}\nb.jpg,3\nc.jpg,2\n")
    with pytest.raises(DatasetFormatError, match="line 1"):
        read_labels(csv)


def test_unknown_header_is_taken_with_a_warning(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("picture,grade\na.jpg,3\nb.jpg,2\n")
    with pytest.warns(UserWarning, match="line 1.*header"):
        df = read_labels(csv)
    assert len(df) == 2


@pytest.mark.parametrize("sep,decimal", [(";", ","), (";", "."), ("\t", "."), ("\t", ",")])
def test_semicolon_and_tab_files_are_read(tmp_path: Path, sep: str, decimal: str) -> None:
    _images(tmp_path, "a.jpg", "b.jpg", "c.jpg")
    csv = tmp_path / "labels.csv"
    scores = ["4.5", "3", "1.25"]
    rows = [f"{n}{sep}{s.replace('.', decimal)}" for n, s in zip(("a.jpg", "b.jpg", "c.jpg"), scores)]
    csv.write_text(f"path{sep}score\n" + "\n".join(rows) + "\n")
    df = read_labels(csv)
    np.testing.assert_allclose(df["mos"], [4.5, 3.0, 1.25])
    assert df.attrs["delimiter"] == sep


def test_undetectable_delimiter_is_named(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("path|score\na.jpg|3\n")
    with pytest.raises(DatasetFormatError) as info:
        read_labels(csv)
    message = str(info.value)
    assert "delimiter" in message and "semicolon" in message and "tab" in message


def test_row_with_too_many_fields_is_named(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,score\na.jpg,3\nb,c.jpg,2\n")
    with pytest.raises(DatasetFormatError, match="line 3"):
        read_labels(csv)


def test_quoted_paths_with_delimiters_and_utf8_bom(tmp_path: Path) -> None:
    _images(tmp_path, "a,b.jpg", "c;d.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_bytes('\ufeffpath,score\n"a,b.jpg",3\nc;d.jpg,2\n'.encode("utf-8"))
    df = read_labels(csv)
    assert [os.path.basename(p) for p in df["path"]] == ["a,b.jpg", "c;d.jpg"]


def test_session_style_absolute_paths_without_root_still_read(tmp_path: Path) -> None:
    _images(tmp_path / "photos", "a.jpg", "b.jpg")
    (tmp_path / "sess").mkdir()
    csv = tmp_path / "sess" / "labels.csv"
    csv.write_text(f"path,score,content_id\n{tmp_path / 'photos' / 'a.jpg'},2,\n{tmp_path / 'photos' / 'b.jpg'},5,\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = read_labels(csv, score_range=(1, 5))
    assert df["q"].tolist() == [0.25, 1.0]
