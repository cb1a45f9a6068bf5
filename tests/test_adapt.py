"""Few-shot adaptation on the tiny random-init model: the machinery, never a quality claim."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import clipiqa
from clipiqa import finetune, meta
from clipiqa.finetune import AdaptationDivergedError, AdaptConfig, EncodedSet, adapt, forward_cached
from clipiqa.finetune import step as finetune_step
from clipiqa.history import AdaptHistory, DivergedError, History, MetaHistory
from clipiqa.data import apply_distortion, demo_references
from clipiqa.data.transforms import eval_transform
from clipiqa.losses import quality_loss, semantic_loss
from clipiqa.qgr import QGRConfig, project_gradients, qgr_step


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    rows = []
    for name, ref in list(demo_references(size=96).items())[:6]:
        for level in (0, 2, 4):
            img = ref if level == 0 else apply_distortion(ref, "gaussian_blur", level, rng=0)
            path = folder / f"{name}_{level}.png"
            Image.fromarray(img).save(path)
            rows.append({"path": str(path), "q": 1 - level / 5, "content_id": name})
    return pd.DataFrame(rows)


def _fast(**kw):
    base = dict(epochs=3, batch_size=8, augment="none", lr=1e-2, momentum=0.9, eval_batch_size=32)
    base.update(kw)
    return AdaptConfig(**base)


@pytest.mark.parametrize("trainable", ["last-blocks", "prompts"])
def test_loss_falls_and_only_the_trainable_set_changes(labelled, trainable):
    model = clipiqa.load_model("tiny")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []
    history = adapt(model, labelled, _fast(trainable=trainable, epochs=12, batch_size=18), on_step=calls.append)
    losses = history.steps_frame()["loss"].to_numpy()
    assert losses[-3:].mean() < losses[:3].mean()
    assert len(calls) == len(history.steps) == 12  # full batch: one step per epoch, reported every step
    trainable_names = set(history.trainable)
    for name, p in model.named_parameters():
        if name in before:
            changed = not torch.equal(p, before[name])
            assert changed == (name in trainable_names), name
    assert all(not n.startswith("clip.") for n in trainable_names)


def test_cached_and_uncached_gradients_agree(labelled):
    model = clipiqa.load_model("tiny")
    model.set_trainable("last-blocks")
    model.train()
    images = [Image.open(p).convert("RGB") for p in labelled["path"][:6]]
    q = torch.tensor(labelled["q"][:6].to_numpy(), dtype=torch.float32)
    start = model.first_trainable_visual_block()
    assert start > 0
    grads = []
    for s in (start, 0):
        enc = EncodedSet(model, images, eval_transform(model), 1, s, 32)
        x, teacher = enc.batch(torch.arange(6), torch.zeros(6, dtype=torch.long))
        q_logits, s_logits = forward_cached(model, x, enc.start)
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        qgr_step(params, quality_loss(q_logits, q), semantic_loss(s_logits, teacher), QGRConfig())
        grads.append(torch.cat([p.grad.reshape(-1) for p in params]))
    rel = (grads[0] - grads[1]).norm() / grads[1].norm()
    assert rel < 1e-5


def test_real_step_applies_qgr_formula(labelled):
    model = clipiqa.load_model("tiny")
    model.set_trainable("prompts")
    images = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in labelled["path"][:4]])
    q = torch.tensor(labelled["q"][:4].to_numpy(), dtype=torch.float32)
    with torch.no_grad(), model.adapters_off():
        teacher = model.scene_logits(images)
    params = [p for p in model.parameters() if p.requires_grad]

    def losses():
        q_logits, s_logits = model.heads(model.encode_image(images))
        return quality_loss(q_logits, q), semantic_loss(s_logits, teacher)

    model.eval()  # no dropout: both passes see the same function
    lq, ls = losses()
    g_q = torch.autograd.grad(lq, params, allow_unused=True)
    lq, ls = losses()
    g_s = torch.autograd.grad(ls, params, allow_unused=True)
    config = QGRConfig(lam=5.0)
    expected, _ = project_gradients(g_q, g_s, config)
    for p in params:
        p.grad = None
    stats = qgr_step(params, *losses(), config)
    assert g_s[0] is None  # the text context does not reach the scene branch: it keeps g_q
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-8)
    assert 0 <= stats.frac_projected <= 1 and not math.isnan(stats.cosine)


def test_stop_is_honoured_within_one_step(labelled):
    model = clipiqa.load_model("tiny")
    seen = []
    history = adapt(model, labelled, _fast(epochs=10), on_step=seen.append, stop=lambda: len(seen) >= 3)
    assert history.stopped and len(history.steps) == 3


def test_non_finite_loss_restores_the_start_of_the_last_finite_epoch(labelled, monkeypatch):
    model = clipiqa.load_model("tiny")
    real, seen, saved = finetune_step.quality_loss, [], {}
    monkeypatch.setattr(finetune_step, "quality_loss",  # NaN from the 5th step on (18 images, batch 8: 3 steps/epoch)
                        lambda z, q: real(z, q) * (float("nan") if len(seen) >= 4 else 1.0))

    def record(row):
        seen.append(row)
        saved[row["step"]] = {n: p.detach().clone() for n, p in model.adapter_parameters()}

    with pytest.raises(AdaptationDivergedError, match="non-finite loss at step 5") as err:
        adapt(model, labelled, _fast(epochs=5), on_step=record)
    history = err.value.history
    assert len(history.steps) == 4
    assert history.diverged["restored_after_step"] == 3 and history.diverged["restored_epoch"] == 2
    for n, p in model.adapter_parameters():
        assert torch.equal(p, saved[3][n]), n
    assert "restored" in history.note


def test_a_backbone_that_cannot_score_is_reported_unusable(labelled):
    model = clipiqa.load_model("tiny")

    def poison(record):
        if record["step"] == 2:  # CLIP itself broken: no adapter state can fix it
            model.clip.logit_scale.data.fill_(float("nan"))

    with pytest.raises(AdaptationDivergedError, match="non-finite loss at step 3.*does not score finitely") as err:
        adapt(model, labelled, _fast(epochs=5), on_step=poison)
    assert len(err.value.history.steps) == 2 and err.value.history.diverged["restored_after_step"] is None


def test_same_seed_gives_identical_numbers(labelled):
    runs = []
    for _ in range(2):
        model = clipiqa.load_model("tiny")
        h = adapt(model, labelled, _fast(trainable="prompts", augment="model", n_views=2))
        runs.append((h.steps_frame()["loss"].to_numpy(), model.text_prompt.ctx.detach().clone()))
    assert np.array_equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_selection_modes(labelled):
    model = clipiqa.load_model("tiny")
    h = adapt(model, labelled, _fast(selection="val", epochs=3))
    assert h.selected_epoch in (1, 2, 3) and "srcc_val" in h.evals_frame()
    test = labelled.iloc[:6]
    h = adapt(clipiqa.load_model("tiny"), labelled, _fast(selection="test-oracle", epochs=2), test=test)
    assert "optimistic" in h.note and "srcc_test" in h.evals_frame()
    with pytest.raises(ValueError, match="test-oracle"):
        adapt(clipiqa.load_model("tiny"), labelled, _fast(selection="test-oracle"))


def test_config_and_input_validation(labelled):
    with pytest.raises(ValueError, match=r"AdaptConfig.trainable='all'"):
        AdaptConfig(trainable="all")
    with pytest.raises(ValueError, match=r"AdaptConfig.selection"):
        AdaptConfig(selection="best")
    with pytest.raises(ValueError, match="columns 'path' and 'q'"):
        adapt(clipiqa.load_model("tiny"), labelled.drop(columns="q"))
    bad = labelled.copy()
    bad.loc[0, "q"] = 1.5
    with pytest.raises(ValueError, match=r"q must lie in \[0, 1\]"):
        adapt(clipiqa.load_model("tiny"), bad)


# --------------------------------------------------------------------------------------------- QGR edge cases
def _count_grad_calls(monkeypatch) -> list:
    real, calls = torch.autograd.grad, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    return calls


@pytest.mark.parametrize("qgr, stats, expected", [(QGRConfig(lam=0.0), False, 1), (QGRConfig(enabled=False), False, 1),
                                                  (QGRConfig(lam=0.0), True, 2), (QGRConfig(), False, 2)])
def test_qgr_off_runs_the_second_backward_only_for_statistics(labelled, monkeypatch, qgr, stats, expected):
    model = clipiqa.load_model("tiny")
    calls = _count_grad_calls(monkeypatch)
    history = adapt(model, labelled, _fast(epochs=1, batch_size=18, qgr=qgr, qgr_stats=stats))
    assert len(history.steps) == 1 and len(calls) == expected
    assert math.isnan(history.steps[0]["cosine"]) == (expected == 1)


def test_nan_semantic_gradient_is_a_divergence(labelled, monkeypatch):
    real = finetune_step.semantic_loss

    def nan_gradient(s_logits, teacher):  # finite value, NaN gradient (NaN through torch.where)
        loss = real(s_logits, teacher)
        return torch.where(torch.tensor(True), loss, loss * float("nan"))

    monkeypatch.setattr(finetune_step, "semantic_loss", nan_gradient)
    model = clipiqa.load_model("tiny")
    with pytest.raises(AdaptationDivergedError, match="semantic gradient"):
        adapt(model, labelled, _fast(epochs=1, batch_size=18))


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("stats", [False, True])
def test_plain_fine_tuning_never_aborts_on_the_unused_semantic_loss(labelled, monkeypatch, bad, stats):
    real = finetune_step.semantic_loss
    monkeypatch.setattr(finetune_step, "semantic_loss", lambda s_logits, teacher: real(s_logits, teacher) * float(bad))
    model = clipiqa.load_model("tiny")
    before = {n: p.detach().clone() for n, p in model.adapter_parameters()}
    history = adapt(model, labelled, _fast(epochs=2, qgr=QGRConfig(lam=0.0), qgr_stats=stats))
    assert len(history.steps) == 6 and history.diverged is None and history.qgr_lam == 0.0
    assert all(math.isfinite(r["loss"]) for r in history.steps)
    assert any(not torch.equal(p, before[n]) for n, p in model.adapter_parameters())
    with pytest.raises(AdaptationDivergedError, match="non-finite loss"):  # QGR uses it: still a divergence
        adapt(clipiqa.load_model("tiny"), labelled, _fast(epochs=1, qgr=QGRConfig(lam=5.0)))


def test_plain_fine_tuning_with_statistics_survives_a_non_finite_semantic_gradient(labelled, monkeypatch):
    real = finetune_step.semantic_loss

    def nan_gradient(s_logits, teacher):  # finite value, NaN gradient
        loss = real(s_logits, teacher)
        return torch.where(torch.tensor(True), loss, loss * float("nan"))

    monkeypatch.setattr(finetune_step, "semantic_loss", nan_gradient)
    history = adapt(clipiqa.load_model("tiny"), labelled, _fast(epochs=1, qgr=QGRConfig(lam=0.0), qgr_stats=True))
    assert len(history.steps) == 3 and history.diverged is None
    assert all(math.isnan(r["cosine"]) for r in history.steps)


def test_steps_log_how_often_the_descent_guard_acted(labelled):
    plain = adapt(clipiqa.load_model("tiny"), labelled, _fast(epochs=1, qgr=QGRConfig(lam=5.0)))
    assert all(r["frac_guarded"] == 0.0 for r in plain.steps) and plain.qgr_lam == 5.0
    # kappa = 1 allows no correction along g_s at all: the guard caps every projection it sees
    full = adapt(clipiqa.load_model("tiny"), labelled, _fast(epochs=1, qgr=QGRConfig(lam=5.0, min_descent=1.0)))
    assert any(r["frac_projected"] > 0 for r in full.steps)
    assert all(r["frac_guarded"] == r["frac_projected"] for r in full.steps)


# --------------------------------------------------------------------------------------------- divergence
def _finite_scores(model, labelled) -> bool:
    x = torch.stack([model.preprocess(Image.open(p).convert("RGB")) for p in labelled["path"]])
    with torch.no_grad():
        return bool(torch.isfinite(model.encode_image(x)).all() and torch.isfinite(model.logits(x)).all())


@pytest.mark.parametrize("lr", [1e3, 1e8])
def test_divergence_restores_the_last_good_parameters_in_place(labelled, lr):
    model = clipiqa.load_model("tiny")
    model.set_trainable("last-blocks")
    saved = {0: {n: p.detach().clone() for n, p in model.adapter_parameters()}}  # after step s

    def snapshot(record):
        saved[record["step"]] = {n: p.detach().clone() for n, p in model.adapter_parameters()}

    with pytest.raises(AdaptationDivergedError, match="restored") as err:
        adapt(model, labelled, _fast(epochs=5, lr=lr), on_step=snapshot)
    diverged = err.value.history.diverged
    assert diverged["restored_after_step"] in saved and diverged["step"] > diverged["restored_after_step"]
    expected = saved[diverged["restored_after_step"]]
    for n, p in model.adapter_parameters():
        assert torch.equal(p, expected[n]), n
    assert _finite_scores(model, labelled)
    assert f"after step {diverged['restored_after_step']}" in str(err.value)


def test_non_finite_parameters_after_a_step_are_a_divergence(labelled, monkeypatch):
    model = clipiqa.load_model("tiny")
    initial = {n: p.detach().clone() for n, p in model.adapter_parameters()}
    real_step = torch.optim.SGD.step

    def poisoned_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned_step)
    with pytest.raises(AdaptationDivergedError, match="non-finite parameters after step 1"):
        adapt(model, labelled, _fast(epochs=2, trainable="prompts"))
    built = {n for n, _ in model.adapter_parameters()}
    for n, p in model.adapter_parameters():
        if n in initial:
            assert torch.equal(p, initial[n]), n
    assert built >= set(initial) and _finite_scores(model, labelled)


# --------------------------------------------------------------------------------------------- the run records
def test_adapt_and_meta_records_share_one_base_and_one_divergence_error():
    assert issubclass(AdaptHistory, History) and issubclass(MetaHistory, History)
    assert finetune.AdaptHistory is AdaptHistory and meta.MetaHistory is MetaHistory
    assert finetune.AdaptationDivergedError is meta.MetaDivergedError is DivergedError
    assert issubclass(DivergedError, RuntimeError)
    err = DivergedError("boom", History(note="n"))
    assert str(err) == "boom" and err.history.note == "n"
    # each loop's record holds its own fields only
    assert not hasattr(AdaptHistory(), "best_epoch") and not hasattr(MetaHistory(), "selected_epoch")


def test_adapt_returns_its_own_record(labelled):
    history = adapt(clipiqa.load_model("tiny"), labelled, _fast(epochs=1, trainable="prompts"))
    assert type(history) is AdaptHistory and history.selected_epoch == 1 and history.qgr_lam == 5.0
    assert history.qgr_record() == {"lam": 5.0}


def test_history_frame_is_in_time_order_and_round_trips():
    adapt_run = AdaptHistory(steps=[{"kind": "step", "step": 1}, {"kind": "step", "step": 2}],
                             evals=[{"kind": "eval", "epoch": 1, "step": 1}], selected_epoch=1)
    assert adapt_run.to_frame()["kind"].tolist() == ["step", "eval", "step"]  # by step when there is no meta_step
    meta_run = MetaHistory(steps=[{"kind": "step", "meta_step": 1}], evals=[{"kind": "eval", "meta_step": 0}],
                           best_epoch=0, train_tasks=["a"])
    assert meta_run.to_frame()["meta_step"].tolist() == [0, 1]
    for h in (adapt_run, meta_run, AdaptHistory(), MetaHistory()):
        assert History.from_dict(h.to_dict()) == h
        assert type(h).from_dict(json.loads(json.dumps(h.to_dict()))) == h
    assert History.from_dict({"note": "old file", "unknown_field": 1}).note == "old file"


# both loops' fields in one record, the other loop's at their defaults: how runs were written before the split
OLD_COMMON = {"steps": [{"kind": "step", "meta_step": 1}], "evals": [], "config": {"epochs": 1},
              "trainable": ["prompt.ctx"], "stopped": False, "note": "", "seconds": 1.5}
OLD_ADAPT_FIELDS = {"selected_epoch": None, "diverged": None, "qgr_lam": None, "qgr_lam_cv": {}}
OLD_META_FIELDS = {"task_starts": [], "train_tasks": [], "holdout_tasks": [], "initial_hash": "", "outer": {},
                   "holdout_excluded": {}, "rel_move": None, "best_score": None, "best_epoch": None,
                   "best_meta_step": None, "resumed_from": None}


def test_files_of_the_single_record_read_back_as_the_loops_own_records():
    old_meta = {**OLD_COMMON, **OLD_ADAPT_FIELDS, **OLD_META_FIELDS, "train_tasks": ["blur"],
                "holdout_tasks": ["jpeg"], "rel_move": 0.03, "best_epoch": 1, "initial_hash": "ab"}
    h = History.from_dict(old_meta)
    assert type(h) is MetaHistory and (h.rel_move, h.best_epoch, h.holdout_tasks) == (0.03, 1, ["jpeg"])
    assert MetaHistory.from_dict(old_meta) == h and h.seconds == 1.5
    old_adapt = {**OLD_COMMON, **OLD_ADAPT_FIELDS, **OLD_META_FIELDS, "selected_epoch": 3, "qgr_lam": 5.0,
                 "note": "stopped early"}
    h = History.from_dict(old_adapt)
    assert type(h) is AdaptHistory and (h.selected_epoch, h.qgr_lam, h.note) == (3, 5.0, "stopped early")
    assert h.qgr_record() == {"lam": 5.0}
    # a session checkpoint's history.json holds the common fields and the selected epoch
    session = {"steps": [], "evals": [], "stopped": True, "note": "", "seconds": 2.0, "selected_epoch": None}
    h = History.from_dict(session)
    assert type(h) is AdaptHistory and h.stopped and h.selected_epoch is None
