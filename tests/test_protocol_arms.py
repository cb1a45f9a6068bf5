"""The arms of the evaluation protocol: each with its own documented recipe, the paper's 2x2 ablation by default,
and numbers that say what they are (recipe, n, splits per metric, stopped runs, zero-shot configuration)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipiqa.data import build_demo_set
from clipiqa.finetune import RELEASED_QGR_LAM, AdaptConfig, with_qgr
from clipiqa.factory import load_model
from clipiqa.protocol import (DEFAULT_METHODS, METHODS, ArmResult, MethodConfig, ProtocolCache, arm_config, arm_table_row,
                              register_method, run_protocol, score_predictions)
from clipiqa.recipes import RECIPES, recipe_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    df = build_demo_set(cache_dir=tmp_path_factory.mktemp("demo"), types=["gaussian_blur", "white_noise"],
                        levels=(1, 3, 5), size=64)
    keep = sorted(df["content_id"].unique())[:5]
    return df[df["content_id"].isin(keep)].reset_index(drop=True)


def tiny_factory(prompts=None):
    return load_model("tiny", device="cpu", prompts=prompts)


def test_default_arms_are_the_paper_ablation_beside_the_baselines():
    assert set(DEFAULT_METHODS) >= {"zero-shot", "ridge-probe", "classical-ridge", "coop", "coop+vpt"}
    ablation = {name: METHODS[name] for name in ("ft", "ft+qgr", "meta+ft", "meta+ft+qgr")}
    assert set(ablation) <= set(DEFAULT_METHODS)
    assert {m.trainable for m in ablation.values()} == {"last-blocks"}
    assert {m.trains for m in ablation.values()} == {METHODS["ft"].trains}  # one trainable set: an ablation
    configs = {name: arm_config(m, MethodConfig(), seed=0, qgr=name.endswith("qgr")) for name, m in ablation.items()}
    plain = {n: c.qgr.active for n, c in configs.items()}
    assert plain == {"ft": False, "ft+qgr": True, "meta+ft": False, "meta+ft+qgr": True}
    assert configs["ft+qgr"].qgr.lam == RELEASED_QGR_LAM
    # the four differ in QGR only (init differs through the model, not the config)
    stripped = {n: c.to_dict() | {"qgr": None} for n, c in configs.items()}
    assert len({repr(sorted(d.items())) for d in stripped.values()}) == 1


def test_each_adapted_arm_trains_with_its_own_documented_recipe():
    coop = arm_config(METHODS["coop"], MethodConfig())
    assert (coop.trainable, coop.lr, coop.momentum, coop.batch_size, coop.lr_schedule, coop.warmup_epochs) == \
        ("text", 2e-3, 0.9, 32, "cosine", 1)
    vpt = arm_config(METHODS["coop+vpt"], MethodConfig())
    assert vpt.trainable == "prompts" and vpt.lr_schedule == "cosine"
    ft = arm_config(METHODS["ft"], MethodConfig())
    assert (ft.trainable, ft.lr, ft.weight_decay, ft.batch_size, ft.epochs, ft.augment) == \
        ("last-blocks", 1e-3, 1e-4, 192, 50, "grmp")
    for name, method in METHODS.items():
        row = arm_table_row(method)
        assert row["trains"] and row["recipe"], name
        if method.adapts:
            assert method.recipe in RECIPES and RECIPES[method.recipe].source, name


def test_overrides_and_a_run_recipe_apply_where_they_should():
    config = MethodConfig(overrides={"epochs": 3}, recipe="grmp-released")
    released = arm_config(METHODS["meta+ft+qgr"], config, qgr=True)
    assert released.epochs == 3 and released.selection == "test-oracle" and released.lr_schedule == "plateau"
    assert released.selection_metric == "srcc+plcc" and released.select_initial and released.label_norm != "none"
    coop = arm_config(METHODS["coop"], config)  # the run recipe replaces only the paper-set arms' recipe
    assert coop.epochs == 3 and coop.lr_schedule == "cosine" and coop.selection == "fixed"
    with pytest.raises(ValueError, match="recipe"):
        recipe_config("nope")
    with pytest.raises(ValueError, match="AdaptConfig.epochs"):
        run_protocol(None, ["coop"], overrides={"epochs": 0})


def test_with_qgr_turns_a_zero_lam_into_the_released_one():
    off = AdaptConfig(qgr={"lam": 0.0})
    assert with_qgr(off, True).qgr.active and with_qgr(off, True).qgr.lam == RELEASED_QGR_LAM
    assert not with_qgr(AdaptConfig(), False).qgr.active
    assert with_qgr(AdaptConfig(qgr={"lam": 2.0}), True).qgr.lam == 2.0


def test_rows_name_their_recipe_and_n_and_the_zero_shot_configuration(demo):
    res = run_protocol(demo, ["zero-shot", "coop"], shots=8, n_splits=1, model_factory=tiny_factory,
                       overrides={"epochs": 1, "augment": "none"}, n_boot=50)
    per = res.per_split.set_index("method")
    assert per.loc["coop", "recipe"] == "coop [augment=none, epochs=1]"
    assert per.loc["zero-shot", "recipe"] == "none"
    assert (per["n"] == per["n_test"]).all()
    zs = [n for n in res.notes if n.startswith("zero-shot:")]
    assert zs and "224-px" in zs[0] and "positional embedding on" in zs[0] and "RN50" in zs[0]
    assert "coop [augment=none, epochs=1]" in res.to_text()
    assert set(res.histories) == {(0, "coop")} and res.histories[(0, "coop")].steps  # what the arm's training did
    assert "history" not in res.per_split


def test_arm_settings_come_as_one_method_config_or_as_keywords(demo):
    run = dict(shots=8, n_splits=1, model_factory=tiny_factory, n_boot=50)
    arms = ["zero-shot", "coop"]
    by_keywords = run_protocol(demo, arms, overrides={"epochs": 1, "augment": "none"}, selection="val", **run)
    config = MethodConfig(overrides={"epochs": 1, "augment": "none"}, selection="val")
    by_config = run_protocol(demo, arms, config=config, **run)
    # a keyword replaces that field of the config
    mixed = run_protocol(demo, arms, config=MethodConfig(overrides={"epochs": 1, "augment": "none"}), selection="val",
                         **run)
    for res in (by_config, mixed):
        pd.testing.assert_frame_equal(res.per_split.drop(columns="seconds"),
                                      by_keywords.per_split.drop(columns="seconds"))
        assert res.config["selection"] == "val" and res.config["overrides"] == {"epochs": 1, "augment": "none"}
    assert config.cache.workdir is None  # each run uses its own cache; the caller's config is left as it was
    with pytest.raises(TypeError, match="override.*overrides, recipe, selection, meta_init, batch_size, ridge_alpha"):
        run_protocol(demo, arms, override={"epochs": 1}, **run)
    with pytest.raises(TypeError, match="MethodConfig"):
        run_protocol(demo, arms, config={"epochs": 1}, **run)
    with pytest.raises(ValueError, match="MethodConfig.selection='best' is not allowed; use one of fixed"):
        MethodConfig(selection="best")


def test_summaries_count_the_splits_each_metric_is_defined_on(demo):
    @register_method("constant", "predicts one value: SRCC undefined")
    def constant(model_factory, train, test, config, seed):
        return np.zeros(len(test))
    try:
        res = run_protocol(demo, ["constant", "classical-ridge"], shots=8, n_splits=2, model_factory=tiny_factory,
                           n_boot=50)
    finally:
        METHODS.pop("constant")
    summary = res.summary.set_index("method")
    assert summary.loc["constant", "n_ok"] == 2 and summary.loc["constant", "srcc_splits"] == 0
    assert summary.loc["classical-ridge", "srcc_splits"] == 2
    assert "srcc 0/2" in res.to_text()


def test_an_arm_returns_predictions_or_an_arm_result_whose_parts_land_where_documented(demo):
    """A bare array is the predictions; an ArmResult's scores give the raw PLCC, its history is kept per split and
    its extras become per-split columns; a tuple is refused with a message that names the arm and ArmResult."""
    @register_method("plain", "negated level")
    def plain(model_factory, train, test, config, seed):
        return -test["level"].to_numpy(float)

    @register_method("typed", "negated level with scores, a history and a column")
    def typed(model_factory, train, test, config, seed):
        preds = -test["level"].to_numpy(float)
        return ArmResult(preds, scores=np.full(len(test), 0.5) + 0.01 * preds, history="the record",
                         extras={"my_column": 7})

    @register_method("pair", "the old (preds, extras) pair")
    def pair(model_factory, train, test, config, seed):
        return -test["level"].to_numpy(float), {"my_column": 1}
    try:
        res = run_protocol(demo, ["plain", "typed", "pair"], shots=8, n_splits=1, model_factory=tiny_factory,
                           n_boot=20)
    finally:
        for name in ("plain", "typed", "pair"):
            METHODS.pop(name)
    rows = res.per_split.set_index("method")
    assert rows.loc["plain", "status"] == "ok" and rows.loc["typed", "status"] == "ok"
    assert rows.loc["typed", "my_column"] == 7 and res.histories == {(0, "typed"): "the record"}
    assert rows.loc["typed", "rmse"] != rows.loc["plain", "rmse"]  # typed: raw metrics on its label-scale scores
    assert rows.loc["pair", "status"] == "error"
    assert "'pair' returned a tuple" in rows.loc["pair", "error"] and "ArmResult" in rows.loc["pair", "error"]


def test_raw_plcc_and_rmse_use_label_scale_scores_when_an_arm_has_them():
    rng = np.random.default_rng(0)
    target = rng.uniform(size=30)
    margin = 40 * (target - 0.5) + rng.normal(scale=1.0, size=30)  # a logit margin: far from the label scale
    p_high = 1 / (1 + np.exp(-margin))
    with_scores = score_predictions(margin, target, 50, 0, scores=p_high)
    without = score_predictions(margin, target, 50, 0)
    assert with_scores["srcc"] == without["srcc"]  # ranks come from the margin either way
    assert with_scores["rmse"] == pytest.approx(np.sqrt(np.mean((p_high - target) ** 2)))
    assert without["rmse"] > 5 * with_scores["rmse"]


def test_a_stopped_run_summarises_only_splits_every_arm_finished(demo):
    calls = {"n": 0}

    def stop():  # stop after split 0 and the first arm of split 1
        calls["n"] += 1
        return calls["n"] > 3

    res = run_protocol(demo, ["zero-shot", "classical-ridge"], shots=8, n_splits=3, model_factory=tiny_factory,
                       n_boot=50, stop=stop)
    assert res.stopped and len(res.per_split) == 3  # split 0: both arms; split 1: zero-shot only
    assert set(res.summary["n_ok"]) == {1}
    assert any("stopped after 1 complete split" in n for n in res.notes)


def test_readme_arm_table_matches_the_registry():
    text = (ROOT / "README.md").read_text()
    for name in (*DEFAULT_METHODS, "coop+qgr", "coop+vpt+qgr"):
        row = arm_table_row(METHODS[name])
        match = re.search(rf"^\| `{re.escape(name)}` \|(.+)\|$", text, re.MULTILINE)
        assert match, f"README arm table lacks a row for {name}"
        cells = [c.strip() for c in match.group(1).split("|")]
        assert cells[:4] == [row["trains"], row["init"], row["recipe"], row["budget"]], name


def test_an_arm_name_is_registered_once_unless_replaced():
    """One registry (clipiqa.registry.Registry): registering a taken name by accident fails and names the way out,
    instead of silently swapping the arm every listing and run uses."""
    before = METHODS["zero-shot"]
    with pytest.raises(ValueError, match="'zero-shot' is already registered; pass replace=True"):
        register_method("zero-shot", "a second zero-shot")(lambda *a: None)
    assert METHODS["zero-shot"] is before
    register_method("twice", "first")(lambda *a: None)
    try:
        register_method("twice", "second", replace=True)(lambda *a: None)
        assert METHODS["twice"].description == "second"
    finally:
        METHODS.pop("twice")
    assert list(METHODS)[:len(DEFAULT_METHODS)] == list(DEFAULT_METHODS)  # registration order, as listed


def test_protocol_cache_keeps_decoded_images_within_its_budget(tmp_path):
    """ProtocolCache.images is the shared ImageCache: beyond the budget the least recently used image is dropped
    and read again, so the pixels are always right and memory stays bounded."""
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (10, 10), (40 * i, 0, 0)).save(paths[-1])
    cache = ProtocolCache(image_budget_bytes=2 * 10 * 10 * 3)  # two images
    images = cache.images(paths + paths[:1])
    assert [im.getpixel((0, 0))[0] for im in images] == [0, 40, 80, 0]
    assert len(cache._images) == 2 and cache._images.nbytes <= cache.image_budget_bytes
    assert cache.images(paths[:1])[0] is images[-1]  # the most recent image is kept


def test_bench_runs_the_compare_panels_qgr_pairs_in_a_fresh_process(tmp_path):
    """Every arm the compare panel pairs is the protocol's own: ``clipiqa bench --methods coop+qgr,coop+vpt+qgr``
    in a fresh process (no panel built) finds both arms and runs them (tiny random-init model, 1 epoch)."""
    out = tmp_path / "bench"
    env = {**os.environ, "CLIPIQA_CACHE": str(tmp_path / "cache"), "CLIPIQA_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "clipiqa", "bench", "--dataset", "demo", "--model", "tiny",
                           "--device", "cpu", "--shots", "8", "--splits", "1", "--methods", "coop+qgr,coop+vpt+qgr",
                           "--epochs", "1", "--augment", "none", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "unknown method" not in done.stderr, done.stderr
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["method"]) == ["coop+qgr", "coop+vpt+qgr"]
