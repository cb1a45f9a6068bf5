"""Recipes and the schedule/selection pieces they set: learning-rate schedules, the plateau rule, PLCC+SRCC
selection including the initial state, per-subset min-max labels, prompt dropout, and a selection that says when
it never ran. Pure pieces are checked against hand computations; ``adapt`` runs on the tiny random-init model."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from clipiqa.data import build_demo_set
from clipiqa.data.readers.table import minmax_groups, per_subset_minmax
from clipiqa.finetune import (AdaptConfig, Plateau, adapt, epoch_lr, evaluates_after, plateau_trace,
                              selection_score, training_labels)
from clipiqa.inference import Prediction
from clipiqa.factory import load_model
from clipiqa.recipes import RECIPES, RELEASED_DIFFERENCES, recipe_config


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    df = build_demo_set(cache_dir=tmp_path_factory.mktemp("demo"), types=["gaussian_blur"], levels=(1, 3, 5),
                        size=64)
    return df[df["content_id"].isin(sorted(df["content_id"].unique())[:4])].reset_index(drop=True)


def test_epoch_lr_by_hand():
    coop = AdaptConfig(lr=2e-3, epochs=5, lr_schedule="cosine", warmup_epochs=1, warmup_lr=1e-5)
    expected = [1e-5] + [2e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [epoch_lr(coop, e) for e in range(1, 6)] == pytest.approx(expected)
    assert epoch_lr(coop, 5) > 0  # the last epoch still trains
    assert [epoch_lr(AdaptConfig(lr=0.1, epochs=3), e) for e in (1, 2, 3)] == [0.1, 0.1, 0.1]
    short = AdaptConfig(lr=2e-3, epochs=1, lr_schedule="cosine", warmup_epochs=1)  # a smoke budget of CoOp's recipe
    assert epoch_lr(short, 1) == 2e-3


def test_plateau_reduces_after_more_than_patience_evaluations_without_a_new_best():
    plateau = Plateau(factor=0.3, patience=2)
    scales = [plateau.update(v) for v in (0.1, 0.2, 0.2, 0.15, 0.1, 0.3, float("nan"), 0.1, 0.1, 0.1)]
    #           best  best  wait1 wait2 wait3->x0.3 best wait1 wait2 wait3->x0.09 wait1
    assert scales == pytest.approx([1, 1, 1, 1, 0.3, 0.3, 0.3, 0.3, 0.09, 0.09])


def _released_trace(scores):
    """The released rule on evaluations at epochs 0, 5, 10, ...: lr 1e-3, x0.3 after more than 5 non-improving
    evaluations, never at epochs <= 10, stop below 5e-7."""
    return plateau_trace(zip(range(0, 5 * len(scores), 5), scores), lr=1e-3, factor=0.3, patience=5, after=10,
                         min_lr=5e-7)


def test_released_plateau_cuts_after_the_sixth_flat_evaluation_and_stops_below_5e_7():
    rows = _released_trace([0.5] + [0.4] * 60)  # a best at epoch 0, then nothing better
    cuts = [r["epoch"] for prev, r in zip(rows, rows[1:]) if r["lr"] < prev["lr"]]
    assert cuts == [30, 60, 90, 120, 150, 180, 210]  # every 6th flat evaluation (5 more than 5)
    assert [r["lr"] for r in rows if r["epoch"] in cuts] == pytest.approx([1e-3 * 0.3 ** k for k in range(1, 8)])
    assert rows[-1]["epoch"] == 210 and rows[-1]["stop"] and not any(r["stop"] for r in rows[:-1])
    assert 1e-3 * 0.3 ** 6 > 5e-7 > 1e-3 * 0.3 ** 7  # the 7th cut is the first below 5e-7
    improving = _released_trace([0.1 * k for k in range(40)])
    assert {r["lr"] for r in improving} == {1e-3} and not any(r["stop"] for r in improving)


def test_released_plateau_never_cuts_in_the_first_10_epochs():
    # every evaluation flat after the first, one per epoch: the count passes 5 at epoch 6, but no cut before 11
    rows = plateau_trace([(e, 0.5 if e == 0 else 0.4) for e in range(20)], lr=1.0, factor=0.5, patience=5, after=10)
    lr = {r["epoch"]: r["lr"] for r in rows}
    assert all(lr[e] == 1.0 for e in range(11)) and lr[11] == 0.5
    assert lr[17] == 0.25  # the count restarts after a cut: 6 more flat evaluations
    # a new best resets the count: no cut while scores keep improving every 6th evaluation
    slow = [(e, e // 6) for e in range(0, 60)]
    assert {r["lr"] for r in plateau_trace(slow, lr=1.0, factor=0.5, patience=5)} == {1.0}


def test_released_cadence_evaluates_epoch_0_then_every_5_and_the_last():
    config = recipe_config("grmp-released", epochs=23)
    assert [e for e in range(1, 24) if evaluates_after(config, e)] == [5, 10, 15, 20, 23]
    full = recipe_config("grmp-released")
    assert sum(evaluates_after(full, e) for e in range(1, 2001)) == 400 and full.select_initial


def test_minmax_groups_and_training_labels_never_invent_0_5():
    q = np.array([0.2, 0.4, 0.6, 0.1, 0.1, 1.0])
    groups = np.array(["a", "a", "a", "b", "b", "reference"])
    assert minmax_groups(q, groups) == pytest.approx([0, 0.5, 1, 0.1, 0.1, 1.0])  # single-valued sets keep q
    assert minmax_groups(q) == pytest.approx((q - 0.1) / 0.9)
    train = pd.DataFrame({"q": q, "distortion": groups})
    assert training_labels(train, AdaptConfig()) == pytest.approx(q)  # default: the labels as they are
    assert training_labels(train, AdaptConfig(label_norm="subset-minmax")) == pytest.approx([0, .5, 1, .1, .1, 1])
    # the released protocol: the whole training draw at once, whatever the distortion groups
    assert training_labels(train, recipe_config("grmp-released")) == pytest.approx((q - 0.1) / 0.9)
    refs = pd.DataFrame({"q": [1.0, 1.0, 1.0], "distortion": ["reference"] * 3})  # clean references only
    for norm in ("minmax", "subset-minmax"):
        assert training_labels(refs, AdaptConfig(label_norm=norm)) == pytest.approx([1.0, 1.0, 1.0])
    # the table-level per-subset option (DMOS-like: lower is better) keeps a single-valued subset's q as well
    dmos = pd.DataFrame({"mos": [0.0, 0.0, 1.0, 3.0], "q": [1.0, 1.0, 0.8, 0.4],
                         "distortion": ["reference", "reference", "blur", "blur"]})
    assert per_subset_minmax(dmos)["q"].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])


def test_selection_score_adds_plcc_of_p_high():
    target = np.array([0.1, 0.5, 0.2, 0.9])
    margin = torch.tensor([-3.0, 1.0, -1.0, 8.0])
    pred = Prediction(margin, torch.sigmoid(margin))
    assert selection_score(pred, target, "srcc") == pytest.approx(1.0)
    expected = 1.0 + np.corrcoef(torch.sigmoid(margin).numpy(), target)[0, 1]
    assert selection_score(pred, target, "srcc+plcc") == pytest.approx(expected)


def test_recipe_settings_are_validated_with_the_field_named():
    with pytest.raises(ValueError, match="AdaptConfig.lr_schedule='plateau'.*selection"):
        AdaptConfig(lr_schedule="plateau")
    with pytest.raises(ValueError, match="AdaptConfig.select_initial"):
        AdaptConfig(select_initial=True)
    with pytest.raises(ValueError, match="AdaptConfig.label_norm='zscore'"):
        AdaptConfig(label_norm="zscore")
    with pytest.raises(ValueError, match="AdaptConfig.min_lr"):
        AdaptConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="AdaptConfig.eval_every"):
        AdaptConfig(eval_every=0)
    released = recipe_config("grmp-released")
    assert released.epochs == 2000 and released.selection == "test-oracle" and RECIPES["grmp-released"].optimistic


def test_adapt_follows_the_cosine_schedule_step_by_step(table):
    model = load_model("tiny", device="cpu")
    config = AdaptConfig(trainable="text", epochs=4, batch_size=8, augment="none", lr=0.05, lr_schedule="cosine",
                         warmup_epochs=1, warmup_lr=1e-4)
    history = adapt(model, table, config)
    steps = history.steps_frame()
    for epoch, rows in steps.groupby("epoch"):
        assert rows["lr"].to_numpy() == pytest.approx(epoch_lr(config, int(epoch)))


def test_plateau_and_initial_selection_with_the_test_oracle(table):
    """The released protocol: PLCC+SRCC on the test split, the initial state (epoch 0) among the candidates, the
    rate cut on a plateau. On the random tiny model training only collapses the margin (the loss falls to ln 2),
    so the initial state scores best here: selection must keep it, restoring its exact tensors."""
    model = load_model("tiny", device="cpu")
    model.set_trainable("text")
    initial = {n: p.detach().clone() for n, p in model.adapter_parameters()}
    config = AdaptConfig(trainable="text", epochs=6, batch_size=64, augment="none", lr=5.0, selection="test-oracle",
                         selection_metric="srcc+plcc", select_initial=True, lr_schedule="plateau",
                         plateau_factor=0.5, plateau_patience=1)
    history = adapt(model, table, config, test=table)
    evals = history.evals_frame()
    assert list(evals["epoch"]) == list(range(0, 7))
    assert history.selected_epoch == int(evals.loc[evals["select_test"].idxmax(), "epoch"])
    assert history.selected_epoch == 0 and evals["select_test"].iloc[0] > evals["select_test"].iloc[1:].max()
    for name, tensor in model.adapter_parameters():
        assert torch.equal(tensor.detach(), initial[name]), name
    replay = Plateau(0.5, 1)
    scale = [replay.update(v) for v in evals["select_test"]]  # scale after evaluation e (e = 0..6)
    steps = history.steps_frame()
    for epoch, rows in steps.groupby("epoch"):
        assert rows["lr"].to_numpy() == pytest.approx(5.0 * scale[int(epoch) - 1])
    assert steps["lr"].min() < 5.0
    assert "optimistic" in history.note or "test split" in history.note


def test_adapt_evaluates_on_the_cadence_and_stops_when_the_lr_falls_below_min_lr(table):
    """The released cadence and stop inside ``adapt``: evaluations at epoch 0 and every 2nd epoch only, the
    oracle picks among those, the rate follows the plateau rule replayed on the logged scores, and training ends
    at the evaluation whose cut takes the rate below ``min_lr``, saying so."""
    model = load_model("tiny", device="cpu")
    config = AdaptConfig(trainable="text", epochs=40, batch_size=64, augment="none", lr=5.0, selection="test-oracle",
                         selection_metric="srcc+plcc", select_initial=True, lr_schedule="plateau",
                         plateau_factor=0.5, plateau_patience=1, eval_every=2, min_lr=1.5)
    history = adapt(model, table, config, test=table)
    evals, steps = history.evals_frame(), history.steps_frame()
    trace = plateau_trace(zip(evals["epoch"], evals["select_test"]), lr=5.0, factor=0.5, patience=1, min_lr=1.5)
    assert list(evals["epoch"]) == list(range(0, 2 * len(evals), 2))
    assert trace[-1]["stop"] and len(trace) == len(evals)  # 5.0 -> 2.5 -> 1.25 < 1.5: the second cut stops
    last = int(trace[-1]["epoch"])
    assert int(steps["epoch"].max()) == last < config.epochs
    assert f"training ended after epoch {last} of 40" in history.note and "optimistic" in history.note
    for epoch, rows in steps.groupby("epoch"):
        rate = [r["lr"] for r in trace if r["epoch"] < epoch][-1]
        assert rows["lr"].to_numpy() == pytest.approx(rate)
    assert history.selected_epoch in set(evals["epoch"])


def test_a_val_selection_that_never_ran_says_so(table):
    model = load_model("tiny", device="cpu")
    two = table[table["content_id"].isin(sorted(table["content_id"].unique())[:2])]
    small = two.groupby("content_id").head(2)  # 2 contents x 2 images: the validation part holds 2 images
    history = adapt(model, small.reset_index(drop=True),
                    AdaptConfig(trainable="text", epochs=2, batch_size=8, augment="none", selection="val"))
    assert "val selection never ran" in history.note
    assert history.selected_epoch == 2


def test_prompt_dropout_keeps_frozen_visual_prompts_stochastic_and_disables_the_cache(table, tmp_path):
    model = load_model("tiny", device="cpu")
    model.add_visual_prompt(4)
    model.set_trainable("last-blocks")
    model.train()
    assert not model.visual_prompt.training  # frozen prompts: eval mode, cache exact
    model.prompt_dropout = True
    model.train()
    assert model.visual_prompt.training
    seen = []
    history = adapt(model, table, AdaptConfig(trainable="last-blocks", epochs=1, batch_size=64, augment="none",
                                              prompt_dropout=True),
                    on_step=lambda r: seen.append(model.visual_prompt.training))
    assert history.steps and all(seen)


def test_readme_states_the_released_recipe_and_every_remaining_difference():
    from pathlib import Path
    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"`grmp-released`: {RECIPES['grmp-released'].source}" in text
    for difference in RELEASED_DIFFERENCES:
        assert " ".join(difference.split()) in text, difference
