"""Tests for clipiqa.data.readers on small fixture folders in each dataset's real layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_datasets import (FIXTURES, LIVE_ORGS_DROPPED, fixture_for, live_dmos, live_orgs, make_csiq,
                               make_kadid10k, make_koniq10k, make_labels_csv, make_live, make_livec,
                               make_spaq, make_tid2013, write_image)
from scipy.io import savemat

from clipiqa.data.readers import (COMMON_COLUMNS, DATASETS, READERS, DatasetFormatError, normalize_scores,
                                  per_subset_minmax, read_dataset, read_labels)

REGISTERED = sorted(READERS)  # every test over datasets runs for every registered reader


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fixture folder per dataset, shared by the read-only tests of this module."""
    base = tmp_path_factory.mktemp("datasets")
    return {name: fixture_for(name).build(base / name) for name in REGISTERED}


@pytest.fixture(scope="module")
def tables(built: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """Each fixture folder read once."""
    return {name: read_dataset(name, root) for name, root in built.items()}


# ----------------------------------------------------------------------------------- the contract
def test_a_dataset_is_a_spec_a_reader_and_a_fixture():
    """ARCHITECTURE's 'where to add' for a dataset, enforced: every spec has a registered reader, and every
    registered reader a fixture in its real on-disk format (else the tests below would skip it unnoticed)."""
    assert set(READERS) == set(DATASETS), "a DatasetSpec without a reader, or a reader without a spec"
    missing = [name for name in READERS if name not in FIXTURES]
    assert not missing, f"registered readers without a fixture in tests/fixtures_datasets.py: {missing}"
    assert not set(FIXTURES) - set(READERS), "a fixture for a dataset that is not registered"


@pytest.mark.parametrize("command", ["adapt", "bench"])
def test_cli_help_names_every_registered_dataset(command: str, capsys: pytest.CaptureFixture) -> None:
    from clipiqa.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    missing = [name for name in READERS if name not in text]
    assert not missing, f"clipiqa {command} --help does not name {missing}"


# ----------------------------------------------------------------------------------- common


@pytest.mark.parametrize("name", REGISTERED)
def test_common_table(name: str, tables: dict[str, pd.DataFrame], built: dict[str, Path]) -> None:
    df = tables[name]
    assert len(df) == fixture_for(name).rows
    assert tuple(df.columns[:7]) == COMMON_COLUMNS
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in df["path"])
    assert df["path"].is_unique
    assert df["q"].between(0, 1).all()
    assert df["mos"].dtype == np.float64 and df["q"].dtype == np.float64
    spec = DATASETS[name]
    assert df.attrs["dataset"] == name
    assert df.attrs["score_range"] == spec.score_range
    assert df.attrs["higher_better"] is spec.higher_better
    assert df.attrs["synthetic"] is spec.synthetic
    assert df.attrs["root"] == os.path.abspath(built[name])
    assert os.path.isfile(df.attrs["labels_file"])
    expected_q = normalize_scores(df["mos"].to_numpy(), spec.score_range, spec.higher_better)
    np.testing.assert_allclose(df["q"], expected_q)


@pytest.mark.parametrize("name", REGISTERED)
def test_content_groups(name: str, tables: dict[str, pd.DataFrame]) -> None:
    df = tables[name]
    if DATASETS[name].synthetic:
        assert df["content_id"].nunique() < len(df)
        assert df["distortion"].notna().all()
    else:
        assert df["content_id"].is_unique
        assert df["content_id"].tolist() == [os.path.basename(p) for p in df["path"]]
        assert df["distortion"].isna().all() and df["level"].isna().all()


@pytest.mark.parametrize("alias,canonical", [("KonIQ-10k", "koniq10k"), ("koniq", "koniq10k"),
                                             ("CLIVE", "livec"), ("kadid", "kadid10k"),
                                             ("TID_2013", "tid2013"), ("LIVE-R2", "live")])
def test_aliases(alias: str, canonical: str, tables: dict[str, pd.DataFrame],
                 built: dict[str, Path]) -> None:
    df = read_dataset(alias, built[canonical])
    assert df.attrs["dataset"] == canonical
    assert df["path"].tolist() == tables[canonical]["path"].tolist()


def test_unknown_name_lists_supported(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        read_dataset("imagenet", tmp_path)
    for name in DATASETS:
        assert name in str(info.value)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="does not exist"):
        read_dataset("koniq10k", tmp_path / "nowhere")


def test_error_is_value_error_with_parts() -> None:
    err = DatasetFormatError("bad", "/x/y.csv", "layout here")
    assert isinstance(err, ValueError)
    assert err.path == "/x/y.csv" and "layout here" in str(err) and "/x/y.csv" in str(err)


@pytest.mark.parametrize("name", REGISTERED)
def test_missing_label_file_names_it(name: str, tmp_path: Path) -> None:
    label_file = fixture_for(name).label_file
    root = fixture_for(name).build(tmp_path / name)
    (root / label_file).unlink()
    with pytest.raises(DatasetFormatError) as info:
        read_dataset(name, root)
    message = str(info.value)
    assert os.path.basename(label_file) in message
    assert "Expected layout" in message
    assert info.value.expected == DATASETS[name].layout


@pytest.mark.parametrize("name", [n for n in REGISTERED if n not in FIXTURES or FIXTURES[n].image])
def test_missing_image_is_error(name: str, tmp_path: Path) -> None:
    image = fixture_for(name).image
    root = fixture_for(name).build(tmp_path / name)
    (root / image).unlink()
    with pytest.raises(DatasetFormatError) as info:
        read_dataset(name, root)
    assert "1 of" in str(info.value)
    stem = os.path.basename(image).split(".")[0]
    assert stem in str(info.value)


def test_missing_images_lists_five_and_count(tmp_path: Path) -> None:
    root = make_koniq10k(tmp_path / "k", n=10)
    for i in range(7):
        (root / "1024x768" / f"{1000 + i}.jpg").unlink()
    with pytest.raises(DatasetFormatError) as info:
        read_dataset("koniq10k", root)
    message = str(info.value)
    assert "7 of 10" in message
    assert "1000.jpg" in message and "1004.jpg" in message and "1005.jpg" not in message


def test_missing_column_lists_found(tmp_path: Path) -> None:
    root = make_kadid10k(tmp_path / "kadid")
    table = pd.read_csv(root / "dmos.csv").drop(columns="dmos")
    table.to_csv(root / "dmos.csv", index=False)
    with pytest.raises(DatasetFormatError, match="no column 'dmos'.*dist_img"):
        read_dataset("kadid10k", root)


# ---------------------------------------------------------------------------------- KonIQ


def test_koniq_values_and_split(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["koniq10k"]
    np.testing.assert_allclose(df["mos"], 10.0 + 8 * np.arange(10))
    np.testing.assert_allclose(df["q"], (10.0 + 8 * np.arange(10)) / 100)
    assert df["mos_std"].isna().all()  # SD is on the 1-5 scale, not MOS_zscore's
    assert df["split"].value_counts().to_dict() == {"training": 6, "validation": 2, "test": 2}
    assert df.attrs["score_column"] == "MOS_zscore"


def test_koniq_upper_case_names_and_mos_scale(tmp_path: Path) -> None:
    root = make_koniq10k(tmp_path / "k", n=5, with_sets=False, upper_case=True)
    assert (root / "KONIQ10K_SCORES_AND_DISTRIBUTIONS.CSV").exists()
    df = read_dataset("koniq", root, score_column="MOS")
    assert "split" not in df.columns
    assert df.attrs["score_range"] == (1.0, 5.0) and df.attrs["score_column"] == "MOS"
    np.testing.assert_allclose(df["mos"], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(df["q"], [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(df["mos_std"], 0.5)


def test_koniq_falls_back_to_small_images(tmp_path: Path) -> None:
    root = make_koniq10k(tmp_path / "k", n=4)
    (root / "1024x768").rename(root / "512x384")
    assert all("512x384" in p for p in read_dataset("koniq10k", root)["path"])


# ---------------------------------------------------------------------------------- LIVEC


def test_livec_drops_practice_images(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["livec"]
    assert not any(os.path.basename(p).startswith("t") for p in df["path"])
    assert df["content_id"].iloc[0] == "100.bmp"
    np.testing.assert_allclose(df["mos"], 20.0 + 5 * np.arange(8))
    np.testing.assert_allclose(df["mos_std"], 10.0 + np.arange(8))
    assert (df["mos"] != 99).all()


def test_livec_length_mismatch(tmp_path: Path) -> None:
    root = make_livec(tmp_path / "c")
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.ones((1, 5))})
    with pytest.raises(DatasetFormatError, match="15 image names but 5 MOS"):
        read_dataset("livec", root)


# ---------------------------------------------------------------------------------- KADID


def test_kadid_groups_types_levels(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["kadid10k"]
    assert sorted(df["content_id"].unique()) == ["I01", "I02", "I03"]
    assert (df.groupby("content_id").size() == 4).all()
    assert sorted(df["distortion"].unique()) == ["01", "02"]
    assert df["level"].dtype == np.int64 and sorted(df["level"].unique()) == [1, 2]
    row = df[df["path"].str.endswith("I02_02_02.png")].iloc[0]
    assert row["mos"] == pytest.approx(4.25) and row["q"] == pytest.approx(0.8125)
    assert row["mos_std"] == pytest.approx(np.sqrt(0.08))
    # 'dmos' is higher-better: the least distorted image has the highest q
    assert df.loc[df["q"].idxmax(), "level"] == 1


# ---------------------------------------------------------------------------------- TID2013


def test_tid_mixed_case_names(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["tid2013"]
    names = [os.path.basename(p) for p in df["path"]]
    assert "I02_01_1.BMP" in names  # listed lower-case, stored upper-case
    assert "i03_01_1.bmp" in names  # listed upper-case, stored lower-case
    assert sorted(df["content_id"].unique()) == ["i01", "i02", "i03"]
    assert df["level"].tolist()[:4] == [1, 2, 1, 2]
    np.testing.assert_allclose(df["mos"].iloc[:4], [7, 6, 6.5, 5.5])
    np.testing.assert_allclose(df["q"].iloc[0], 7 / 9)
    np.testing.assert_allclose(df["mos_std"].iloc[:2], [0.1, 0.2])


def test_tid_bad_line(tmp_path: Path) -> None:
    root = make_tid2013(tmp_path / "t")
    with open(root / "mos_with_names.txt", "a") as handle:
        handle.write("oops\n")
    with pytest.raises(DatasetFormatError, match="line 13"):
        read_dataset("tid2013", root)


# ---------------------------------------------------------------------------------- CSIQ


@pytest.mark.parametrize("variant", ["xlsx", "csv", "tsv"])
def test_csiq_variants_and_direction(variant: str, tmp_path: Path) -> None:
    df = read_dataset("CSIQ", make_csiq(tmp_path / variant, variant=variant))
    assert len(df) == 12
    assert sorted(df["content_id"].unique()) == ["1600", "aerial_city"]
    assert sorted(df["distortion"].unique()) == ["awgn", "jpeg", "jpeg2000"]
    # DMOS is lower-better: lowest DMOS -> highest q, and q = 1 - dmos on the 0-1 scale
    assert df["q"].idxmax() == df["mos"].idxmin()
    np.testing.assert_allclose(df["q"], 1 - df["mos"])
    row = df[df["path"].str.endswith("aerial_city.jpeg2000.2.png")].iloc[0]
    assert row["mos"] == pytest.approx(0.36) and row["distortion"] == "jpeg2000"
    assert row["level"] == 2 and row["mos_std"] == pytest.approx(0.02)


def test_csiq_missing_sheet(tmp_path: Path) -> None:
    root = make_csiq(tmp_path / "c", variant="csv")
    (root / "csiq.DMOS.csv").unlink()
    pd.DataFrame({"a": [1]}).to_excel(root / "csiq.DMOS.xlsx", sheet_name="other", index=False)
    with pytest.raises(DatasetFormatError, match="all_by_image"):
        read_dataset("csiq", root)


# ---------------------------------------------------------------------------------- LIVE


def test_live_entry_order_and_orgs(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["live"]
    orgs, dmos = live_orgs(), live_dmos()
    kept = np.flatnonzero(orgs != 1)
    assert len(df) == 779
    np.testing.assert_allclose(df["mos"], dmos[kept])
    # entry 227 is the first jpeg image, entry 460 the first wn image
    relative = [os.path.relpath(p, df.attrs["root"]) for p in df["path"]]
    expected = {227: "jpeg/img1.bmp", 460: "wn/img1.bmp", 981: "fastfading/img174.bmp",
                226: "jp2k/img227.bmp"}
    for entry, rel in expected.items():
        if orgs[entry] != 1:
            assert relative[int(np.searchsorted(kept, entry))] == rel
    assert df["distortion"].value_counts().sum() == 779
    assert set(df["distortion"]) == {"jp2k", "jpeg", "wn", "gblur", "fastfading"}
    assert df["content_id"].nunique() == 29
    assert df["level"].isna().all()


def test_live_direction(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["live"]
    assert df.loc[df["mos"].idxmin(), "q"] == df["q"].max()
    assert df["q"].iloc[0] == pytest.approx(1 - df["mos"].iloc[0] / 100)


def test_live_wrong_entry_count(tmp_path: Path) -> None:
    root = make_live(tmp_path / "l")
    savemat(root / "dmos_realigned.mat", {"dmos_new": np.ones((1, 10)), "orgs": np.zeros((1, 10))})
    with pytest.raises(DatasetFormatError, match="dmos_new has 10 entries, expected 982"):
        read_dataset("live", root)


# ---------------------------------------------------------------------------------- SPAQ


def test_spaq_values(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["spaq"]
    np.testing.assert_allclose(df["mos"], 10.0 + 15 * np.arange(6))
    np.testing.assert_allclose(df["q"], (10.0 + 15 * np.arange(6)) / 100)
    assert df["content_id"].iloc[0] == "00001.jpg"


def test_spaq_image_dir_override(tmp_path: Path) -> None:
    root = make_spaq(tmp_path / "s", n=3)
    (root / "TestImage").rename(root / "TestImage_512")
    with pytest.raises(DatasetFormatError, match="TestImage"):
        read_dataset("spaq", root)
    df = read_dataset("spaq", root, image_dir="TestImage_512")
    assert len(df) == 3 and all("TestImage_512" in p for p in df["path"])


# ---------------------------------------------------------------------------- score mapping


def test_normalize_scores() -> None:
    assert normalize_scores(3.0, (1, 5)) == 0.5
    np.testing.assert_allclose(normalize_scores([0.0, 0.25, 1.2], (0, 1), higher_better=False),
                               [1.0, 0.75, 0.0])
    series = normalize_scores(pd.Series([0.0, 50.0, 150.0], index=[3, 4, 5]), (0, 100))
    assert series.index.tolist() == [3, 4, 5] and series.tolist() == [0.0, 0.5, 1.0]
    assert np.isnan(normalize_scores([np.nan], (0, 1))[0])
    with pytest.raises(ValueError):
        normalize_scores(1.0, (5, 1))


def test_per_subset_minmax(tables: dict[str, pd.DataFrame]) -> None:
    df = tables["csiq"]
    out = per_subset_minmax(df, by="distortion")
    for _, group in out.groupby("distortion"):
        assert group["q"].max() == pytest.approx(1.0) and group["q"].min() == pytest.approx(0.0)
        # lower DMOS is better, so the minimum DMOS in each subset maps to q = 1
        assert group.loc[group["mos"].idxmin(), "q"] == pytest.approx(1.0)
    assert "never on test data" in out.attrs["q_mapping"]
    assert "q_mapping" not in df.attrs  # input untouched
    np.testing.assert_allclose(df["q"], 1 - df["mos"])


def test_per_subset_minmax_direction_survives_csv_round_trip(tables: dict[str, pd.DataFrame],
                                                             tmp_path: Path) -> None:
    # attrs (higher_better=False for CSIQ's DMOS) are lost in a CSV round trip: the direction must
    # come from the table itself (q against mos), never default to higher-better and invert DMOS
    csv = tmp_path / "csiq.csv"
    tables["csiq"].to_csv(csv, index=False)
    df = pd.read_csv(csv)
    assert "higher_better" not in df.attrs
    out = per_subset_minmax(df, by="distortion")
    for _, group in out.groupby("distortion"):
        assert group.loc[group["mos"].idxmin(), "q"] == pytest.approx(1.0)
    np.testing.assert_allclose(per_subset_minmax(df, higher_better=False)["q"], out["q"])
    with pytest.raises(ValueError, match="higher_better"):
        per_subset_minmax(df.drop(columns="q"))


# ------------------------------------------------------------------------------ read_labels


def test_read_labels_plain(tmp_path: Path) -> None:
    csv = make_labels_csv(tmp_path, "plain")
    df = read_labels(csv)
    assert len(df) == 5 and tuple(df.columns) == COMMON_COLUMNS
    np.testing.assert_allclose(df["q"], np.arange(5) * 0.75 / 4)
    assert df["content_id"].tolist() == ["c0", "c0", "c1", "c1", "c2"]
    assert df.attrs["synthetic"] is True and df.attrs["layout"] == "plain"
    assert df.attrs["score_range"] == (1.0, 5.0)
    assert all(os.path.isfile(p) and os.path.isabs(p) for p in df["path"])


def test_read_labels_images_root_and_range(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / "photos" / f"a{i}.png")
    csv = tmp_path / "meta" / "labels.csv"
    csv.parent.mkdir()
    pd.DataFrame({"Path": [f"a{i}.png" for i in range(3)], "Score": [0, 50, 100]}).to_csv(csv, index=False)
    with pytest.raises(DatasetFormatError, match="outside score_range"):
        read_labels(csv, tmp_path / "photos")
    df = read_labels(csv, tmp_path / "photos", score_range=(0, 100), higher_better=False)
    np.testing.assert_allclose(df["q"], [1.0, 0.5, 0.0])
    assert df["content_id"].tolist() == ["a0.png", "a1.png", "a2.png"]
    assert df.attrs["synthetic"] is False
    with pytest.raises(DatasetFormatError, match="3 of 3 image files"):
        read_labels(csv, score_range=(0, 100), higher_better=False)  # resolves against the CSV's folder


def test_read_labels_pyiqa_and_headerless(tmp_path: Path) -> None:
    pyiqa = read_labels(make_labels_csv(tmp_path, "pyiqa"))
    assert pyiqa.attrs["layout"] == "pyiqa"
    np.testing.assert_allclose(pyiqa["mos"], 1 + np.arange(5) * 0.75)
    np.testing.assert_allclose(pyiqa["mos_std"], 0.3)
    bare = read_labels(make_labels_csv(tmp_path, "headerless"))
    assert bare["path"].tolist() == pyiqa["path"].tolist()
    np.testing.assert_allclose(bare["q"], pyiqa["q"])
    assert bare["mos_std"].isna().all()


def test_read_labels_pyiqa_full_reference(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / f"d{i}.png")
    csv = tmp_path / "meta_info_fr.csv"
    pd.DataFrame({"ref_name": ["r1.png", "r1.png", "r2.png", "r2.png"],
                  "dist_name": [f"d{i}.png" for i in range(4)], "dmos": [10, 20, 30, 40]}
                 ).to_csv(csv, index=False)
    df = read_labels(csv, score_range=(0, 100), higher_better=False)
    assert df.attrs["layout"] == "pyiqa-fr" and df.attrs["synthetic"] is True
    assert df["content_id"].tolist() == ["r1", "r1", "r2", "r2"]
    np.testing.assert_allclose(df["q"], [0.9, 0.8, 0.7, 0.6])


def test_read_labels_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="label file not found"):
        read_labels(tmp_path / "none.csv")
    write_image(tmp_path / "x.png")
    dup = tmp_path / "dup.csv"
    dup.write_text("path,score\nx.png,3\nx.png,4\n")
    with pytest.raises(DatasetFormatError, match="more than once"):
        read_labels(dup)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,score\nx.png,good\n")
    with pytest.raises(DatasetFormatError, match="non-numeric"):
        read_labels(bad)
