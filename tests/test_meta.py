"""Meta-prompt pre-training on the tiny random-init model: the machinery, never a quality claim.

Tasks are synthetic distortions of a few packaged photos at 64 px; models have 8 visual prompt tokens and no
dropout so that gradients can be recomputed exactly.
"""
from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import clipiqa
from clipiqa import meta
from clipiqa.finetune import EncodedSet, forward_cached
from clipiqa.checkpoint import read_checkpoint
from clipiqa.cli import main
from clipiqa.data.transforms import eval_transform
from clipiqa.losses import quality_loss
from clipiqa.meta import (MetaConfig, fomaml_update, meta_pretrain, param_hash, reptile_update, split_tasks,
                          synthetic_tasks, task_split, tasks_from_dataset)

from fixtures_datasets import make_kadid10k, make_tid2013
from meta_fixtures import PHOTOS, TYPES  # the `tasks` fixture (conftest.py) is built from these


def tiny_model(dropout: float = 0.0):
    return clipiqa.load_model("tiny", device="cpu", prompts={"visual_tokens": 8, "visual_dropout": dropout})


def fast(**kw) -> MetaConfig:
    base = dict(inner_steps=1, epochs=1, tasks_per_batch=2, batch_size=4, augment="none", holdout_tasks=("jpeg",),
                inner_lr=1e-2, meta_lr=0.5, eval_batch_size=16)
    base.update(kw)
    return MetaConfig(**base)


def clone(params: dict) -> dict:
    return {n: p.detach().clone() for n, p in params.items()}


# ------------------------------------------------------------------------------------------- config and tasks
@pytest.mark.parametrize("field, value, hint", [
    ("algorithm", "maml", "reptile, fomaml, released"), ("inner_steps", 0, "positive integer"),
    ("meta_lr", -1.0, "finite positive"), ("meta_lr", 0.0, "finite positive"), ("meta_lr", float("nan"), "None"),
    ("outer_optimizer", "rmsprop", "sgd, adam"), ("meta_lr_schedule", "cosine", "constant, linear"),
    ("support_fraction", 1.0, "(0, 1)"), ("trainable", "all", "prompts"),
    ("holdout_tasks", 0.0, "fraction"), ("holdout_tasks", (), "task name"), ("augment", "big", "'model'"),
])
def test_config_messages_name_field_value_and_allowed(field, value, hint):
    with pytest.raises(ValueError) as e:
        MetaConfig(**{field: value})
    assert f"MetaConfig.{field}={value!r}" in str(e.value) and hint in str(e.value)


def test_config_defaults_and_round_trip():
    c = MetaConfig()
    assert (c.algorithm, c.inner_steps, c.inner_lr, c.epochs, c.trainable) == ("reptile", 5, 1e-4, 50, "prompts")
    assert not c.qgr.active  # QGR off by default for meta training
    assert MetaConfig.from_dict(MetaConfig(holdout_tasks=["a", "b"]).to_dict()) == MetaConfig(holdout_tasks=("a", "b"))
    # outer optimizer: the algorithm's default unless given (Reptile: 1.0 annealed linearly, Nichol et al. 2018)
    assert (c.meta_lr, c.outer_optimizer, c.meta_lr_schedule) == (None, None, None)
    assert c.outer() == meta.OuterSettings("sgd", 1.0, "linear")
    assert MetaConfig(algorithm="fomaml").outer() == meta.OuterSettings("adam", 1e-3, "constant")
    assert MetaConfig(algorithm="released").outer() == meta.OuterSettings("sgd", 0.01, "constant")
    given = MetaConfig(algorithm="fomaml", meta_lr=0.3, outer_optimizer="sgd", meta_lr_schedule="linear")
    assert given.outer() == meta.OuterSettings("sgd", 0.3, "linear")
    assert MetaConfig.from_dict(given.to_dict()) == given


def test_synthetic_tasks_one_per_type_with_reference_and_content_split(tasks):
    assert [t.name for t in tasks] == list(TYPES)
    for t in tasks:
        table = t.table
        assert len(table) == len(PHOTOS) * 4
        ref = table[table["level"] == 0]
        assert sorted(ref["content_id"]) == sorted(PHOTOS) and (ref["q"] == 1.0).all()
        assert np.allclose(table["q"], 1 - table["level"] / 5)
        support, query = task_split(t, MetaConfig())
        assert set(support["content_id"]).isdisjoint(query["content_id"])
        assert len(support) + len(query) == len(table)


def test_synthetic_tasks_from_a_folder_of_photos(photo_dir, tmp_path):
    (photo_dir / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        out = synthetic_tasks(photo_dir, types=["defocus"], levels=(2,), size=32, cache_dir=tmp_path / "c")
    assert len(out) == 1 and set(out[0].table["content_id"]) == {"astronaut", "chelsea", "coffee", "rocket"}
    with pytest.warns(RuntimeWarning):
        again = synthetic_tasks(photo_dir, types=["defocus"], levels=(2,), size=32, cache_dir=tmp_path / "c")
    assert list(again[0].table["path"]) == list(out[0].table["path"])


def test_tasks_from_dataset_group_by_type_including_the_last():
    rows = [{"path": f"I{r:02d}_{t:02d}_{lv}.png", "q": 0.1 * lv, "content_id": f"I{r:02d}",
             "distortion": f"{t:02d}", "level": lv} for r in (1, 2, 3) for t in (1, 24, 25) for lv in (1, 2)]
    df = pd.DataFrame(rows)
    df.attrs["dataset"] = "kadid10k"
    out = tasks_from_dataset(df)
    assert [t.name for t in out] == ["kadid10k:01", "kadid10k:24", "kadid10k:25"]
    assert all(len(t.table) == 6 for t in out)
    assert [t.name for t in tasks_from_dataset(df, types=["25"])] == ["kadid10k:25"]


def test_split_tasks_holds_out_source_tasks_only(tasks):
    train, held = split_tasks(tasks, 0.2, seed=0)
    assert len(held) == 1 and len(train) == 4
    train, held = split_tasks(tasks, 0.01, seed=3)
    assert len(held) == 1  # at least one
    with pytest.raises(ValueError, match="not among the source tasks"):
        split_tasks(tasks, ("livec",))
    with pytest.raises(ValueError, match="at least one task"):
        split_tasks(tasks, TYPES)


# ------------------------------------------------------------------------------------------- outer updates
def test_outer_update_formulas_on_a_toy_problem():
    """Reptile and first-order MAML on quadratic tasks L_t(x) = |x - c_t|^2 / 2 with one SGD inner step."""
    theta = {"x": torch.tensor([1.0, -2.0])}
    centres = [torch.tensor([0.0, 0.0]), torch.tensor([4.0, 2.0])]
    alpha, beta = 0.5, 0.1
    phis = [{"x": theta["x"] - alpha * (theta["x"] - c)} for c in centres]
    got = reptile_update(theta, phis, beta)["x"]
    assert torch.allclose(got, theta["x"] + beta * torch.stack([p["x"] - theta["x"] for p in phis]).mean(0))
    # first-order MAML: the query gradient at phi (here the same quadratic) is phi - c
    grads = [{"x": p["x"] - c} for p, c in zip(phis, centres)]
    got = fomaml_update(theta, grads, beta)["x"]
    assert torch.allclose(got, theta["x"] - beta * torch.stack([g["x"] for g in grads]).mean(0))
    # the meta init moves towards the task optima's mean
    assert (reptile_update(theta, phis, beta)["x"] - torch.tensor([2.0, 1.0])).norm() < \
        (theta["x"] - torch.tensor([2.0, 1.0])).norm()


def _instrumented_run(tasks, **kw):
    model = tiny_model()
    starts, ends = [], []
    history = meta_pretrain(model, tasks, fast(**kw),
                            on_task_start=lambda name, params: starts.append((name, clone(params))),
                            on_task_end=lambda name, phi, grad: ends.append(
                                (name, clone(phi), None if grad is None else clone(grad))))
    return model, history, starts, ends


def test_every_task_starts_from_the_meta_parameters_and_reptile_step_is_the_formula(tasks):
    model, history, starts, ends = _instrumented_run(tasks)
    # Reptile's default schedule: 0.5 annealed linearly over the run's 2 meta steps: 0.5, then 0.25
    beta1, beta2 = meta.meta_lr_at(1, 2, 0.5, "linear"), meta.meta_lr_at(2, 2, 0.5, "linear")
    assert (beta1, beta2) == (0.5, 0.25) and [s["meta_lr"] for s in history.steps] == [beta1, beta2]
    train_starts = [s for s in history.task_starts if s["phase"] == "train"]
    assert len(train_starts) == 4 and len(ends) == 4  # 4 training tasks in meta batches of 2
    # instrumented record: every task of meta step m starts from theta after step m - 1
    theta_hash = {0: history.initial_hash, **{s["meta_step"]: s["theta_hash"] for s in history.steps}}
    for s in history.task_starts:
        expected = theta_hash[s["meta_step"] - 1] if s["phase"] == "train" else theta_hash[s["meta_step"]]
        assert s["hash"] == expected, s
    # the callback sees the same parameters, and they really are the meta parameters
    train_params = [p for (name, p) in starts if name != "jpeg"]
    for (_, params), s in zip([x for x in starts if x[0] != "jpeg"], train_starts):
        assert param_hash(params) == s["hash"]
    theta0, theta1 = train_params[0], train_params[2]
    assert param_hash(train_params[1]) == param_hash(theta0)
    # the inner loop moved each task away from theta, and the outer step is theta += beta * mean(phi - theta)
    phis = [phi for _, phi, _ in ends]
    assert all(not torch.equal(phis[0][n], theta0[n]) for n in theta0)
    expected = reptile_update(theta0, phis[:2], beta1)
    for n in theta0:
        torch.testing.assert_close(theta1[n], expected[n], rtol=0, atol=1e-7)
    theta2 = starts[-1][1]  # held-out evaluation after the last step starts from the final theta
    expected = reptile_update(theta1, phis[2:], beta2)
    for n in theta0:
        torch.testing.assert_close(theta2[n], expected[n], rtol=0, atol=1e-7)
    assert history.trainable and all(not n.startswith("clip.") for n in history.trainable)


def test_fomaml_uses_the_query_gradient_at_phi(tasks):
    model, history, starts, ends = _instrumented_run(tasks, algorithm="fomaml", epochs=1, meta_lr=0.1,
                                                     outer_optimizer="sgd", meta_lr_schedule="constant")
    train = [p for name, p in starts if name != "jpeg"]
    theta0, theta1 = train[0], train[2]
    (name_a, phi_a, g_a), (name_b, phi_b, g_b) = ends[:2]
    expected = fomaml_update(theta0, [g_a, g_b], 0.1)
    for n in theta0:
        torch.testing.assert_close(theta1[n], expected[n], rtol=0, atol=1e-7)
    # recompute the quality-loss gradient on the task's query at phi (batch_size >= query size: whole query)
    task = next(t for t in tasks if t.name == name_a)
    query = task_split(task, fast())[1]
    assert len(query) <= 4
    check = tiny_model()
    names = check.set_trainable("prompts")
    with torch.no_grad():
        for n, p in check.named_parameters():
            if n in phi_a:
                p.copy_(phi_a[n])
    check.train()
    images = [Image.open(p).convert("RGB") for p in query["path"]]
    enc = EncodedSet(check, images, eval_transform(check), 1, 0, 16)
    x, _ = enc.batch(torch.arange(len(query)), torch.zeros(len(query), dtype=torch.long))
    q_logits, _ = forward_cached(check, x, 0)
    loss = quality_loss(q_logits.float(), torch.tensor(query["q"].to_numpy(), dtype=torch.float32))
    params = [p for n, p in check.named_parameters() if n in names]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for n, g in zip(names, grads):
        torch.testing.assert_close(g_a[n], g if g is not None else torch.zeros_like(g_a[n]), rtol=1e-4, atol=1e-7)
    assert any(not torch.allclose(g_a[n], phi_a[n] - theta0[n]) for n in theta0)  # not the Reptile direction
    assert all(math.isfinite(s["query_loss"]) for s in history.steps)


# ------------------------------------------------------------------------------------------- selection
def test_selection_reads_only_held_out_source_tasks(tasks, meta_image_reads):
    assert not {"target", "test", "val", "target_data"} & set(inspect.signature(meta_pretrain).parameters)
    requested = meta_image_reads
    history = meta_pretrain(tiny_model(), tasks, fast(holdout_tasks=0.4, inner_steps=1))
    names = {t.name for t in tasks}
    assert set(history.holdout_tasks) <= names and len(history.holdout_tasks) == 2
    assert set(history.holdout_tasks).isdisjoint(history.train_tasks)
    assert set(history.holdout_tasks) | set(history.train_tasks) == names
    paths_of = {t.name: set(t.table["path"]) for t in tasks}
    held_paths = set().union(*(paths_of[n] for n in history.holdout_tasks))
    train_paths = set().union(*(paths_of[n] for n in history.train_tasks))
    eval_reads = {p for ph, p in requested if ph == "eval"}
    assert eval_reads and eval_reads <= held_paths
    assert {p for ph, p in requested if ph == "train"} <= train_paths
    for row in history.evals:
        per_task = {k.split(":", 1)[1] for k in row if k.startswith("srcc_adapted:")}
        assert per_task == set(history.holdout_tasks)
    trained_tasks = {t for s in history.steps for t in s["tasks"].split(";")}
    assert trained_tasks == set(history.train_tasks)


# ------------------------------------------------------------------------------------------- resume
def _comparable(history) -> tuple[list, list]:
    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    return strip(history.steps), strip(history.evals)


# Derived floats in a history row (losses, norms, rel_move) are reductions whose summation order can differ between
# CPUs (AVX2 vs AVX-512 kernels) and with a tensor's memory alignment, so a resumed run agrees with an uninterrupted
# one only to rounding (7e-18 apart was seen on an AMD EPYC). Hashes, counts and names agree exactly, and the
# parameters themselves are compared bit for bit from the checkpoints.
DERIVED_FLOAT_RTOL = 1e-9


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=DERIVED_FLOAT_RTOL, abs_tol=1e-15)
    return a == b


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert _same_value(x[k], y[k]), (k, x[k], y[k])


def test_resume_comparison_tolerates_rounding_only_in_derived_floats():
    row = {"meta_step": 2, "theta_hash": "ab12", "rel_move": 0.0368089701848753, "loss_last": float("nan")}
    _same_rows([row], [{**row, "rel_move": 0.03680897018487529}])  # the AMD EPYC case: one ulp apart
    for changed in ({"rel_move": 0.0368090}, {"theta_hash": "ab13"}, {"meta_step": 3}, {"loss_last": 0.5}):
        with pytest.raises(AssertionError):
            _same_rows([row], [{**row, **changed}])


RESUMED_LOOPS = {
    # Reptile, outer SGD annealed linearly (the schedule spans the whole run, not the resumed part)
    "reptile": {},
    # FOMAML with its default Adam outer optimizer: the moments must survive the checkpoint
    "fomaml-adam": {"algorithm": "fomaml", "meta_lr": None},
    # the released loop: its never-reset inner model and its one inner Adam optimizer must survive too
    "released": {"algorithm": "released", "meta_lr": None},
}


def resume_config(loop: str = "reptile", **kw) -> MetaConfig:
    """3 training tasks: one meta step per epoch; random crops and dropout exercise the per-visit seeds."""
    return fast(epochs=2, tasks_per_batch=3, inner_steps=2, augment="model", **{**RESUMED_LOOPS[loop], **kw})


@pytest.fixture(scope="module")
def few_tasks(tasks):
    return tasks[:4]


@pytest.fixture(scope="module", params=list(RESUMED_LOOPS))
def uninterrupted(few_tasks, tmp_path_factory, request):
    out = tmp_path_factory.mktemp("full")
    history = meta_pretrain(tiny_model(0.1), few_tasks, resume_config(request.param), out_dir=out)
    return out, history, request.param, _rng_states()


def _rng_states() -> tuple:
    """The global generators a run leaves behind (torch, numpy, random), as bytes to compare bit for bit."""
    import random
    return (torch.get_rng_state().numpy().tobytes(), repr(np.random.get_state()), repr(random.getstate()))


def _as_single_record(out) -> None:
    """Rewrite the periodic state's history as it was written when one record held both loops' fields (the
    fine-tuning ones at their defaults, before the meta ones)."""
    path = out / "state" / json.loads((out / "state" / "latest.json").read_text())["folder"] / "state.json"
    state = json.loads(path.read_text())
    history = state["history"]
    common = ("steps", "evals", "config", "trainable", "stopped", "note", "seconds")
    fine_tuning = {"selected_epoch": None, "diverged": None, "qgr_lam": None, "qgr_lam_cv": {}}
    state["history"] = {**{k: history[k] for k in common}, **fine_tuning,
                        **{k: v for k, v in history.items() if k not in common}}
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("where", ["after epoch 1", "inside a meta step", "after epoch 1, state of the old record"])
def test_interrupted_run_resumes_where_it_stopped(few_tasks, tmp_path, uninterrupted, where):
    full_dir, full, loop, full_rng = uninterrupted
    if where.startswith("after epoch 1"):
        seen = []
        stop = lambda: any(r["kind"] == "eval" and r["epoch"] == 1 for r in seen)  # noqa: E731
        on_step = seen.append
    else:
        calls = {"n": 0}

        # polls: 3 tasks x 2 inner steps, outer | task (2 inner steps), task <- stop: inside meta step 2;
        # released: 3 tasks x 2 x (support, query), outer | task (4 polls), task <- stop: inside phase 2
        at = 16 if loop == "released" else 10

        def stop():
            calls["n"] += 1
            return calls["n"] == at
        on_step = None
    first = meta_pretrain(tiny_model(0.1), few_tasks, resume_config(loop), out_dir=tmp_path, stop=stop,
                          on_step=on_step)
    assert first.stopped and len(first.steps) == 1
    if where.endswith("old record"):
        _as_single_record(tmp_path)
    second = meta_pretrain(tiny_model(0.1), few_tasks, resume_config(loop), out_dir=tmp_path)
    assert not second.stopped and second.resumed_from == len(first.steps) and type(second) is meta.MetaHistory
    assert _rng_states() == full_rng
    for a, b in zip(_comparable(second), _comparable(full)):
        _same_rows(a, b)
    assert second.task_starts == full.task_starts
    for name in ("last", "best"):
        got, want = read_checkpoint(tmp_path / name).tensors, read_checkpoint(full_dir / name).tensors
        assert all(torch.equal(got[n], want[n]) for n in want), name
    assert (tmp_path / "history.csv").is_file()


def test_resume_refuses_other_settings(few_tasks, uninterrupted):
    out, _, loop, _ = uninterrupted
    with pytest.raises(ValueError, match="inner_lr"):
        meta_pretrain(tiny_model(0.1), few_tasks, resume_config(loop, inner_lr=1e-3), out_dir=out)
    with pytest.raises(ValueError, match="outer_optimizer"):
        meta_pretrain(tiny_model(0.1), few_tasks, resume_config(loop, outer_optimizer="sgd" if loop == "fomaml-adam"
                                                                else "adam"), out_dir=out)


@pytest.mark.parametrize("kw", [dict(n_views=2, augment="model"), dict(trainable="last-blocks"),
                                dict(trainable="text", qgr={"lam": 5.0})])
def test_other_trainable_sets_and_view_cache_run_deterministically(few_tasks, kw):
    runs = []
    for _ in range(2):
        model = tiny_model(0.1)
        history = meta_pretrain(model, few_tasks, fast(**kw))
        runs.append((history.steps[-1]["theta_hash"], param_hash(
            {n: p for n, p in model.named_parameters() if n in history.trainable})))
        assert all(math.isfinite(s["loss_last"]) for s in history.steps)
    assert runs[0] == runs[1]
    if kw.get("trainable") == "last-blocks":
        assert any(n.startswith("tuned.") for n in history.trainable)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_pretrain_end_to_end_writes_best_last_history(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["pretrain", "--tasks", "demo", "--model", "tiny", "--device", "cpu", "--epochs", "1",
               "--inner-steps", "1", "--batch-size", "4", "--size", "64", "--types", "gaussian_blur", "jpeg",
               "darken", "--levels", "5", "--tasks-per-batch", "2", "--holdout", "jpeg",
               "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "random-init" in err and "meaningless" in err
    for name in ("best", "last"):
        assert (out / name / "adapter.safetensors").is_file() and (out / name / "card.json").is_file()
    card = read_checkpoint(out / "best").card
    assert card["trainable"] == "prompts" and card["data"]["holdout_tasks"] == ["jpeg"]
    assert "warning" in card  # random-init backbone
    frame = pd.read_csv(out / "history.csv")
    assert set(frame["kind"]) == {"step", "eval"} and frame["meta_step"].max() == 1
    model = clipiqa.load_model("tiny", device="cpu", prompts=str(out / "best"))  # usable as a meta init
    assert model.prompt_config.visual_tokens == 100
    assert main(["pretrain", "--tasks", "nowhere:/x", "--model", "tiny", "--out", str(out)]) == 1


def test_cli_pretrain_pools_kadid10k_and_tid2013_folders(tmp_path, capsys):
    kadid = make_kadid10k(tmp_path / "kadid", n_refs=3, n_types=3, n_levels=2)
    tid = make_tid2013(tmp_path / "tid", n_refs=3, n_types=2, n_levels=2)
    out = tmp_path / "out"
    rc = main(["pretrain", "--tasks", f"kadid10k:{kadid}", f"tid2013:{tid}", "--model", "tiny", "--device", "cpu",
               "--epochs", "1", "--inner-steps", "1", "--batch-size", "4", "--tasks-per-batch", "4",
               "--augment", "none", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    data = read_checkpoint(out / "best").card["data"]
    names = data["train_tasks"] + data["holdout_tasks"]
    assert sorted(names) == ["kadid10k:01", "kadid10k:02", "kadid10k:03", "tid2013:01", "tid2013:02"]
    assert len(data["holdout_tasks"]) == 1
    assert main(["pretrain", "--tasks", f"kadid10k:{kadid}", "--types", "07", "--model", "tiny",
                 "--out", str(out / "x")]) == 1
    assert "matched no task" in capsys.readouterr().err
