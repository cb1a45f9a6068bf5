"""The evaluation protocol on a small demo subset with the tiny random-init model: the machinery (same splits
and draws for every method, metrics, summaries, files, notes), never a quality claim."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clipiqa.checkpoint import save_checkpoint
from clipiqa.finetune import OPTIMISTIC_NOTE
from clipiqa.data import build_demo_set
from clipiqa.data.splits import standard_splits
from clipiqa.factory import load_model
from clipiqa.prompts import PromptConfig
from clipiqa.protocol import (METHODS, METRICS, NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS, PER_SPLIT_COLUMNS,
                              format_summary, register_method, run_protocol)

FAST = {"epochs": 2, "augment": "none"}
METHODS_UNDER_TEST = ["zero-shot", "ridge-probe", "classical-ridge", "coop", "coop+vpt", "meta+ft", "spy", "boom"]
SEEN: list[dict] = []



@pytest.fixture(scope="module", autouse=True)
def test_methods():
    """A spy that records what it is given, and a method that always fails."""
    @register_method("spy", "records its inputs; predicts the negated level")
    def spy(model_factory, train, test, config, seed):
        SEEN.append({"train": sorted(train["path"]), "test": sorted(test["path"]), "seed": seed})
        return -test["level"].to_numpy(float)

    @register_method("boom", "always fails")
    def boom(model_factory, train, test, config, seed):
        raise RuntimeError("kaboom")
    yield
    METHODS.pop("spy")
    METHODS.pop("boom")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """5 references x 3 types x 3 levels (+ references): 50 images."""
    df = build_demo_set(cache_dir=tmp_path_factory.mktemp("demo"), types=["gaussian_blur", "white_noise", "jpeg"],
                        levels=(1, 3, 5), size=96)
    keep = sorted(df["content_id"].unique())[:5]
    sub = df[df["content_id"].isin(keep)].reset_index(drop=True)
    sub.attrs = dict(df.attrs)
    return sub


def tiny_factory(prompts=None):
    return load_model("tiny", device="cpu", prompts=prompts)


@pytest.fixture(scope="module")
def result(demo, tmp_path_factory, test_methods):
    SEEN.clear()
    out = tmp_path_factory.mktemp("protocol")
    progress = []
    res = run_protocol(demo, METHODS_UNDER_TEST, shots=10, n_splits=2, seed=0, model_factory=tiny_factory,
                       overrides=FAST, out_dir=out, on_progress=progress.append, n_boot=200)
    res.progress = progress
    return res


def test_every_method_sees_the_same_splits_and_draws(result, demo):
    per = result.per_split
    assert len(per) == 2 * len(METHODS_UNDER_TEST)
    for split_index, rows in per.groupby("split"):
        assert rows["split_hash"].nunique() == 1 and rows["labelled_hash"].nunique() == 1
        assert set(rows["method"]) == set(METHODS_UNDER_TEST)
        assert rows["n_train"].eq(10).all() and rows["n_test"].nunique() == 1
    expected = standard_splits(demo, n_splits=2, seed=0)
    assert list(per.groupby("split")["split_hash"].first()) == [s.hash for s in expected]
    # the spy got exactly the few-shot draw and the held-out side of each split
    assert len(SEEN) == 2
    for seen, split, labelled in zip(SEEN, result.splits, result.labelled):
        assert seen["train"] == sorted(labelled["path"]) and seen["test"] == sorted(split.test["path"])
        assert seen["seed"] == split.seed


def test_each_held_out_image_keeps_its_prediction(result):
    """Per-image predictions are kept: notebook 07's scatter, gallery and worst-prediction list need the predictions
    behind each SRCC."""
    from clipiqa.metrics import srcc
    ok = result.per_split[result.per_split["status"] == "ok"]
    assert set(result.predictions) == set(zip(ok["split"], ok["method"]))
    for (i, method), held_out in result.predictions.items():
        assert sorted(held_out["path"]) == sorted(result.splits[i].test["path"])
        row = ok[(ok["split"] == i) & (ok["method"] == method)].iloc[0]
        assert srcc(held_out["pred"], held_out["q"]) == pytest.approx(row["srcc"], nan_ok=True)


def test_summary_figure_draws_each_method_in_its_colour(result):
    """Each method in its one colour of every chart (the summary drew all of them in one blue), caveat in the title."""
    from matplotlib.colors import to_hex

    from clipiqa.palette import arm_colour
    ax = result.plot(caveat="toy model, a caveat").axes[0]
    dots = {to_hex(c.get_facecolor()[0]) for c in ax.collections if len(c.get_offsets()) and len(c.get_facecolor())}
    ok = result.per_split.loc[result.per_split["status"] == "ok", "method"].unique()
    assert dots == {arm_colour(m) for m in ok}
    assert ax.get_title().endswith("toy model, a caveat")


def test_splits_are_by_content_and_draws_come_from_the_train_side(result):
    for split, labelled in zip(result.splits, result.labelled):
        assert split.by == "content"
        assert not set(split.train["content_id"]) & set(split.test["content_id"])
        assert set(labelled["path"]) <= set(split.train["path"])
        assert not set(labelled["path"]) & set(split.test["path"])
        assert len(labelled) == 10


def test_table_columns_status_and_metrics(result):
    per = result.per_split
    assert list(per.columns[:len(PER_SPLIT_COLUMNS)]) == list(PER_SPLIT_COLUMNS)
    status = per.groupby("method")["status"].agg(set).to_dict()
    for m in ("zero-shot", "ridge-probe", "classical-ridge", "coop", "coop+vpt", "spy"):
        assert status[m] == {"ok"}, (m, per.loc[per["method"] == m, "error"].tolist())
    assert status["meta+ft"] == {"skipped"} and status["boom"] == {"error"}
    assert per.loc[per["method"] == "meta+ft", "error"].str.contains("meta checkpoint").all()
    assert per.loc[per["method"] == "boom", "error"].str.contains("RuntimeError: kaboom").all()
    ok = per[per["status"] == "ok"]
    for col in ("srcc", "krcc", "plcc", "rmse", "srcc_ci_lo", "srcc_ci_hi", "chance_band", "seconds"):
        assert ok[col].notna().all(), col
    assert (ok["srcc_ci_lo"] <= ok["srcc_ci_hi"]).all()
    n = per["n_test"].iloc[0]
    assert ok["chance_band"].iloc[0] == pytest.approx(1.959964 / np.sqrt(n - 1), rel=1e-4)
    spy = per[per["method"] == "spy"]
    assert (spy["srcc"] > 0.9).all()  # the negated level is (almost) the label
    adapted = per[per["method"].isin(["coop", "coop+vpt"])]
    assert (adapted["selection"] == "fixed").all() and (adapted["train_steps"] == 2).all()
    assert (per.loc[per["method"] == "zero-shot", "selection"] == "n/a").all()
    assert [p["done"] for p in result.progress] == list(range(1, len(per) + 1))


def test_summary_recomputed_by_hand(result):
    per, summary = result.per_split, result.summary.set_index("method")
    assert list(summary.index) == METHODS_UNDER_TEST
    for method, rows in per[per["status"] == "ok"].groupby("method"):
        for metric in METRICS:
            values = rows[metric].dropna().to_numpy(float)
            assert summary.loc[method, f"{metric}_mean"] == pytest.approx(values.mean())
            assert summary.loc[method, f"{metric}_median"] == pytest.approx(np.median(values))
            assert summary.loc[method, f"{metric}_std"] == pytest.approx(values.std(ddof=1))
    assert summary.loc["meta+ft", "n_skipped"] == 2 and summary.loc["meta+ft", "n_ok"] == 0
    assert summary.loc["boom", "n_error"] == 2 and "kaboom" in summary.loc["boom", "reason"]
    text = result.to_text()
    assert "meta" in text and "skipped" in text and NOTE_RANDOM_INIT in text


def test_files_and_notes(result):
    out = result.out_dir
    for name in ("per_split.csv", "summary.csv", "summary.json", "summary.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv")[["method", "srcc_mean"]],
                                  result.summary[["method", "srcc_mean"]], check_dtype=False)
    payload = json.loads((out / "summary.json").read_text())
    assert {"config", "dataset", "versions", "notes", "summary", "random_init"} <= set(payload)
    assert payload["random_init"] is True and payload["config"]["shots"] == 10
    assert payload["dataset"]["split_by"] == "content" and payload["dataset"]["n_images"] == 50
    assert "torch" in payload["versions"] and "sklearn" in payload["versions"]
    assert NOTE_RANDOM_INIT in payload["notes"] and NOTE_SYNTHETIC_LABELS in payload["notes"]
    assert result.random_init
    assert result.per_split["note"].str.contains("random-init weights").all()
    assert result.per_split["random_init"].all()


def test_same_seed_same_numbers(result, demo):
    methods = ["zero-shot", "ridge-probe", "classical-ridge", "coop"]
    again = run_protocol(demo, methods, shots=10, n_splits=2, seed=0, model_factory=tiny_factory,
                         overrides=FAST, n_boot=200)
    cols = ["split", "method", "split_hash", "labelled_hash", *METRICS, "srcc_ci_lo", "srcc_ci_hi"]
    first = result.per_split[result.per_split["method"].isin(methods)][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(again.per_split[cols], first)
    other = run_protocol(demo, ["zero-shot"], shots=10, n_splits=2, seed=5, model_factory=tiny_factory)
    assert list(other.per_split["split_seed"]) == [5, 6]


def test_fraction_shots_test_oracle_note_and_bad_arguments(demo):
    res = run_protocol(demo, ["coop"], shots=0.5, n_splits=1, seed=0, model_factory=tiny_factory,
                       overrides=FAST, selection="test-oracle")
    row = res.per_split.iloc[0]
    assert row["status"] == "ok" and row["n_train"] == round(0.5 * row["n_pool"])
    assert OPTIMISTIC_NOTE in res.notes and OPTIMISTIC_NOTE in row["note"] and row["selection"] == "test-oracle"
    with pytest.raises(ValueError, match="training pool"):
        run_protocol(demo, ["zero-shot"], shots=1000, n_splits=1, model_factory=tiny_factory)
    with pytest.raises(ValueError, match="unknown method"):
        run_protocol(demo, ["zero-shot", "nope"], shots=5, n_splits=1, model_factory=tiny_factory)
    with pytest.raises(ValueError, match="selection"):
        run_protocol(demo, ["zero-shot"], shots=5, n_splits=1, model_factory=tiny_factory, selection="best")


def test_missing_meta_checkpoint_is_an_error_not_a_crash(demo, tmp_path):
    res = run_protocol(demo, ["meta+ft+qgr"], shots=5, n_splits=1, model_factory=tiny_factory,
                       meta_init=tmp_path / "nothing", overrides=FAST)
    row = res.per_split.iloc[0]
    assert row["status"] == "error" and "does not exist" in row["error"]


def test_meta_methods_start_from_a_given_checkpoint(demo, tmp_path):
    init = tiny_factory(prompts=PromptConfig(n_ctx=2, visual_tokens=4))
    save_checkpoint(init, tmp_path / "best", trainable="prompts")
    calls = []

    def factory(prompts=None):
        calls.append(prompts)
        return tiny_factory(prompts)
    res = run_protocol(demo, ["meta+ft", "meta+ft+qgr"], shots=8, n_splits=1, model_factory=factory,
                       meta_init=tmp_path / "best", overrides=FAST)
    assert (res.per_split["status"] == "ok").all(), res.per_split["error"].tolist()
    assert calls.count(tmp_path / "best") == 2
    assert list(res.per_split["qgr_lam"]) == [0.0, 5.0]
    assert list(res.per_split["trainable"]) == ["last-blocks", "last-blocks"]


def test_format_summary_aligns_long_method_names():
    rows = [{"method": m, "n_ok": 2, "n_skipped": 0, "n_error": 0, "srcc_mean": 0.5, "srcc_std": 0.1,
             "srcc_median": 0.5, "krcc_mean": 0.4, "plcc_mean": 0.5, "plcc_logistic_mean": 0.5, "rmse_mean": 0.3,
             "chance_band": 0.3, "seconds_mean": 1.0, "recipe": "", "reason": ""}
            for m in ("zero-shot", "classical-ridge", "meta+ft+qgr")]
    lines = format_summary(pd.DataFrame(rows)).splitlines()[2:]
    assert len({line.index("0.500±") for line in lines}) == 1, lines
