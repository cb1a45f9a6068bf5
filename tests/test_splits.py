"""Tests for clipiqa.data.splits: group-aware seeded splits, few-shot draws, hashes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fixtures_datasets import make_kadid10k

from clipiqa.data.readers import read_dataset
from clipiqa.data.splits import Split, few_shot, holdout, split_dataset, split_hash, standard_splits


def table(n_contents: int = 20, per_content: int = 5, synthetic: bool = True,
          root: str = "/data/set") -> pd.DataFrame:
    """A common-table-like frame (no files needed) with ``n_contents`` groups."""
    rows = [{"path": f"{root}/c{c:02d}/img{k}.png", "mos": float(c + k), "q": 0.5,
             "content_id": f"c{c:02d}"} for c in range(n_contents) for k in range(per_content)]
    df = pd.DataFrame(rows)
    df.attrs = {"synthetic": synthetic, "root": root, "dataset": "toy"}
    return df


def test_content_split_keeps_groups_apart() -> None:
    df = table()
    split = split_dataset(df, seed=3)
    assert split.by == "content" and split.seed == 3
    train_groups, test_groups = set(split.train["content_id"]), set(split.test["content_id"])
    assert not train_groups & test_groups
    assert len(train_groups) == 16 and len(test_groups) == 4
    assert len(split.train) == 80 and len(split.test) == 20
    assert sorted(split.train.index.tolist() + split.test.index.tolist()) == list(range(100))
    assert split.train.attrs["root"] == "/data/set"


def test_image_split_for_in_the_wild() -> None:
    # in-the-wild tables have one image per content (content_id = the image name)
    df = table(n_contents=50, per_content=1, synthetic=False)
    split = split_dataset(df, seed=0)
    assert split.by == "image"
    assert len(split.train) == 40 and len(split.test) == 10
    # by="image" forced on grouped data: content groups may straddle the split (folders of 5)
    grouped = table(n_contents=10, per_content=5, synthetic=False)
    forced = split_dataset(grouped, seed=0, by="image")
    assert forced.by == "image" and len(forced.test) == 10
    assert not set(split_dataset(grouped, seed=0).train["content_id"]) & set(
        split_dataset(grouped, seed=0).test["content_id"])


def test_same_seed_same_split_any_row_order() -> None:
    df = table()
    a = split_dataset(df, seed=7)
    shuffled = df.sample(frac=1.0, random_state=1)
    shuffled.attrs = dict(df.attrs)
    b = split_dataset(shuffled, seed=7)
    assert a.hash == b.hash
    assert sorted(a.test["path"]) == sorted(b.test["path"])
    assert len(a.hash) == 16 and int(a.hash, 16) >= 0


def test_different_seed_different_split() -> None:
    df = table()
    hashes = {split_dataset(df, seed=s).hash for s in range(5)}
    assert len(hashes) == 5


def test_hash_stable_across_machines_and_matches_split() -> None:
    here, there = table(root="/home/a/data"), table(root="D:/datasets/x")
    assert split_dataset(here, seed=1).hash == split_dataset(there, seed=1).hash
    split = split_dataset(here, seed=1)
    assert split_hash(split) == split.hash == split_hash((split.train, split.test))
    assert split_hash(split.train) != split_hash(split.test)
    swapped = Split(train=split.test, test=split.train, seed=1, by="content", hash="")
    assert split_hash(swapped) != split.hash
    with pytest.raises(TypeError):
        split_hash([1, 2])


def test_hash_without_root_attr_uses_common_folder() -> None:
    a, b = table(root="/x/data"), table(root="/y/other/data")
    a.attrs, b.attrs = {"synthetic": True}, {"synthetic": True}
    assert split_dataset(a, seed=2).hash == split_dataset(b, seed=2).hash


def test_standard_splits() -> None:
    splits = standard_splits(table(), n_splits=10, seed=5)
    assert [s.seed for s in splits] == list(range(5, 15))
    assert len({s.hash for s in splits}) == 10
    assert splits[3].hash == split_dataset(table(), seed=8).hash
    assert "Split(seed=5" in repr(splits[0])


def test_split_errors() -> None:
    with pytest.raises(ValueError, match="train_frac"):
        split_dataset(table(), seed=0, train_frac=1.0)
    with pytest.raises(ValueError, match="seed"):
        split_dataset(table(), seed=-1)
    with pytest.raises(ValueError, match="at least 2 groups"):
        split_dataset(table(n_contents=1), seed=0)
    with pytest.raises(ValueError, match="by must be"):
        split_dataset(table(), seed=0, by="reference")
    with pytest.raises(ValueError, match="content_id"):
        split_dataset(table().drop(columns="content_id"), seed=0, by="content")


def test_few_shot_from_train_only() -> None:
    split = split_dataset(table(), seed=4)
    shots = few_shot(split.train, 25, seed=4)
    assert len(shots) == 25
    assert set(shots.index) <= set(split.train.index)
    assert not set(shots["path"]) & set(split.test["path"])
    again = few_shot(split.train, 25, seed=4)
    assert shots.index.tolist() == again.index.tolist()
    other = few_shot(split.train, 25, seed=5)
    assert set(other.index) != set(shots.index)


def test_few_shot_nested_and_order_independent() -> None:
    train = split_dataset(table(), seed=0).train
    small, large = few_shot(train, 10, seed=1), few_shot(train, 40, seed=1)
    assert set(small.index) <= set(large.index)
    reversed_train = train.iloc[::-1]
    assert set(few_shot(reversed_train, 10, seed=1).index) == set(small.index)


def test_few_shot_fractions() -> None:
    train = split_dataset(table(), seed=0).train  # 80 images
    assert len(few_shot(train, 0.2, seed=0)) == 16
    assert len(few_shot(train, 1.0, seed=0)) == 80
    assert len(few_shot(train, 0.001, seed=0)) == 1


@pytest.mark.parametrize("n,error", [(81, ValueError), (0, ValueError), (1.5, ValueError),
                                     (0.0, ValueError), (True, TypeError), ("5", TypeError)])
def test_few_shot_errors(n: object, error: type) -> None:
    train = split_dataset(table(), seed=0).train
    with pytest.raises(error):
        few_shot(train, n, seed=0)


def test_few_shot_too_many_message() -> None:
    train = split_dataset(table(), seed=0).train
    with pytest.raises(ValueError, match="asked for 200 .* only 80"):
        few_shot(train, 200, seed=0)


def test_holdout_group_aware() -> None:
    shots = table(n_contents=10, per_content=3)
    fit, val = holdout(shots, 0.2, seed=0)
    assert not set(fit["content_id"]) & set(val["content_id"])
    assert val["content_id"].nunique() == 2 and len(fit) + len(val) == 30
    fit2, val2 = holdout(shots, 0.2, seed=0)
    assert val2.index.tolist() == val.index.tolist()
    with pytest.raises(ValueError):
        holdout(shots, 0.0, seed=0)
    plain = table(n_contents=10, per_content=1, synthetic=False)
    fit3, val3 = holdout(plain, 0.3, seed=1)
    assert len(val3) == 3 and len(fit3) == 7


def test_split_real_reader_output(tmp_path: Path) -> None:
    df = read_dataset("kadid10k", make_kadid10k(tmp_path / "kadid", n_refs=5))
    split = split_dataset(df, seed=0)
    assert split.by == "content"
    assert split.train["content_id"].nunique() == 4 and split.test["content_id"].nunique() == 1
    assert not set(split.train["content_id"]) & set(split.test["content_id"])
    assert split.train.attrs["dataset"] == "kadid10k"
    moved = read_dataset("kadid10k", make_kadid10k(tmp_path / "elsewhere" / "k", n_refs=5))
    assert split_dataset(moved, seed=0).hash == split.hash


# ---------------------------------------------------------------------------- splits that survive pandas


def _pandas_variants(df: pd.DataFrame, tmp_path: Path) -> dict[str, pd.DataFrame]:
    """The table after a CSV round trip, a merge and a concat: pandas drops ``attrs`` in each."""
    csv = tmp_path / "table.csv"
    df.to_csv(csv, index=False)
    round_trip = pd.read_csv(csv)
    extra = pd.DataFrame({"path": df["path"], "note": range(len(df))})
    merged = df.merge(extra, on="path")
    half = len(df) // 2
    concat = pd.concat([round_trip.iloc[:half], df.iloc[half:]], ignore_index=True)
    return {"csv": round_trip, "merge": merged, "concat": concat}


def _straddling(train: pd.DataFrame, test: pd.DataFrame) -> set:
    return set(train["content_id"].astype(str)) & set(test["content_id"].astype(str))


def test_content_split_survives_csv_merge_concat(tmp_path: Path) -> None:
    df = read_dataset("kadid10k", make_kadid10k(tmp_path / "kadid", n_refs=20))
    assert df.attrs["synthetic"] is True and df["content_id"].nunique() == 20
    for how, variant in _pandas_variants(df, tmp_path).items():
        assert "synthetic" not in variant.attrs, how  # the variant really lost its attrs
        split = split_dataset(variant, seed=0)
        assert split.by == "content", how
        assert not _straddling(split.train, split.test), how
        for s in standard_splits(variant, n_splits=3, seed=1):
            assert s.by == "content" and not _straddling(s.train, s.test), how
        fit, val = holdout(variant, 0.25, seed=2)
        assert not _straddling(fit, val), how
        # the same split as on the original table (same images on each side)
        assert sorted(split.test["path"]) == sorted(split_dataset(df, seed=0).test["path"]), how


def test_groups_decide_without_attrs() -> None:
    # attrs claiming "not synthetic" do not let grouped contents straddle the split
    df = table(n_contents=10, per_content=5, synthetic=False)
    assert split_dataset(df, seed=0).by == "content"
    assert holdout(df, 0.2, seed=0)[1]["content_id"].nunique() == 2
    # one image per content: by image, whatever attrs say
    single = table(n_contents=10, per_content=1, synthetic=True)
    assert split_dataset(single, seed=0).by == "image"
    # an explicit by= still wins
    assert split_dataset(df, seed=0, by="image").by == "image"
    # no content_id column: by image
    assert split_dataset(df.drop(columns="content_id"), seed=0).by == "image"


def test_missing_content_ids_fall_back_to_the_image() -> None:
    df = table(n_contents=6, per_content=3)
    df.loc[df.index[:6], "content_id"] = None  # two contents' rows lose their id
    split = split_dataset(df, seed=0)
    assert split.by == "content"
    assert len(split.train) + len(split.test) == 18
    named = _straddling(split.train.dropna(subset=["content_id"]), split.test.dropna(subset=["content_id"]))
    assert not named
