"""Automatic QGR strength (lam="auto"): chosen from the labelled images only, recorded, offered as bench arms.
Tiny random-init model: the machinery, never a quality claim."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import clipiqa
from clipiqa.checkpoint import read_checkpoint, save_checkpoint
from clipiqa.data import apply_distortion, demo_references
from clipiqa.finetune import AdaptConfig, adapt, with_qgr
from clipiqa.finetune.auto_lam import choose_lam, content_folds
from clipiqa.protocol import DEFAULT_METHODS, METHODS, MethodConfig, arm_config, arm_table_row
from clipiqa.qgr import QGRConfig

ROOT = Path(__file__).resolve().parents[1]
AUTO = QGRConfig(lam="auto", auto_grid=(0.0, 5.0), auto_folds=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auto")
    rows = []
    for name, ref in list(demo_references(size=64).items())[:8]:
        for level in (0, 2, 4):
            img = ref if level == 0 else apply_distortion(ref, "gaussian_blur", level, rng=0)
            path = folder / f"{name}_{level}.png"
            Image.fromarray(img).save(path)
            rows.append({"path": str(path), "q": 1 - level / 5, "content_id": name})
    table = pd.DataFrame(rows)
    contents = sorted(table["content_id"].unique())
    return table[table["content_id"].isin(contents[:5])].reset_index(drop=True), \
        table[table["content_id"].isin(contents[5:])].reset_index(drop=True)


def _config(**kw):
    base = dict(epochs=1, batch_size=8, augment="none", lr=1e-2, momentum=0.9, eval_batch_size=32, qgr=AUTO)
    base.update(kw)
    return AdaptConfig(**base)


def test_folds_keep_each_content_in_one_fold_and_cover_every_image_once(images):
    train, _ = images
    folds = content_folds(train, 3, seed=4)
    assert len(folds) == 3
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(train)))
    for fit, out in folds:
        assert set(train["content_id"].iloc[fit]).isdisjoint(train["content_id"].iloc[out])
    shuffled = train.iloc[::-1].reset_index(drop=True)  # row order does not change the folds
    fold_paths = lambda t, fs: sorted(tuple(sorted(t["path"].iloc[h])) for _, h in fs)  # noqa: E731
    assert fold_paths(shuffled, content_folds(shuffled, 3, seed=4)) == fold_paths(train, folds)


def test_lam_is_chosen_without_reading_test_labels_and_recorded(images, tmp_path):
    train, test = images
    poisoned = test.assign(q=1.0 - test["q"])  # reversed test labels: an oracle would flip its choice
    runs = []
    for table in (test, poisoned):
        model = clipiqa.load_model("tiny")
        history = adapt(model, train, _config(selection="test-oracle", epochs=2), test=table)
        runs.append((history, model))
    (first, model), (second, _) = runs
    assert first.qgr_lam_cv == second.qgr_lam_cv and first.qgr_lam == second.qgr_lam
    record = first.qgr_lam_cv
    assert record["fold_scores"]["0.0"] != record["fold_scores"]["5.0"]  # the grid values differ: a real choice
    assert record["folds"] == 2 and set(record["scores"]) == {"0.0", "5.0"} and record["min_descent"] > 0
    finite = {float(k): v for k, v in record["scores"].items() if v is not None}
    best = max(finite.values())
    assert first.qgr_lam == min(k for k, v in finite.items() if v == best)  # best mean SRCC, ties to the smaller
    assert first.config["qgr"]["lam"] == "auto"
    save_checkpoint(model, tmp_path / "ckpt", trainable="last-blocks", training=first.config,
                    qgr=first.qgr_record())
    card = read_checkpoint(tmp_path / "ckpt").card
    assert card["qgr"]["lam"] == first.qgr_lam and card["qgr"]["auto"]["scores"] == record["scores"]


def test_choosing_never_touches_the_model_it_is_given(images):
    train, _ = images
    model = clipiqa.load_model("tiny")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    choose_lam(model, train, _config())
    after = dict(model.named_parameters())
    assert set(after) == set(before) and all(np.array_equal(after[n].detach(), v) for n, v in before.items())


def test_too_few_contents_fall_back_to_plain_fine_tuning_and_say_so(images):
    train, _ = images
    one = train[train["content_id"] == train["content_id"].iloc[0]]
    history = adapt(clipiqa.load_model("tiny"), one, _config())
    assert history.qgr_lam == 0.0 and "too few labelled contents" in history.note


def test_fixed_lam_runs_record_their_strength(images):
    train, _ = images
    history = adapt(clipiqa.load_model("tiny"), train, _config(qgr=QGRConfig(lam=2.0)))
    assert history.qgr_lam == 2.0 and history.qgr_lam_cv == {} and history.qgr_record() == {"lam": 2.0}


def test_auto_arms_are_registered_listed_and_not_default():
    for name, base in (("ft+qgr-auto", "ft+qgr"), ("meta+ft+qgr-auto", "meta+ft+qgr")):
        assert name in METHODS and name not in DEFAULT_METHODS
        cfg = arm_config(METHODS[name], MethodConfig(), seed=0, qgr="auto")
        assert cfg.qgr.lam == "auto" and cfg.qgr.min_descent > 0 and 0.0 in cfg.qgr.auto_grid
        # the same recipe and budget as the fixed-strength arm: only the strength rule differs
        fixed = arm_config(METHODS[base], MethodConfig(), seed=0, qgr=True)
        assert cfg.to_dict() | {"qgr": None} == fixed.to_dict() | {"qgr": None}
        assert METHODS[name].trains == METHODS[base].trains and METHODS[name].init == METHODS[base].init
    text = (ROOT / "README.md").read_text()
    for name in ("ft+qgr-auto", "meta+ft+qgr-auto"):
        row = arm_table_row(METHODS[name])
        match = re.search(rf"^\| `{re.escape(name)}` \|(.+)\|$", text, re.MULTILINE)
        assert match, f"README arm table lacks a row for {name}"
        assert [c.strip() for c in match.group(1).split("|")][:4] == \
            [row["trains"], row["init"], row["recipe"], row["budget"]]
    assert with_qgr(AdaptConfig(), "auto").qgr.is_auto
