"""Meta pre-training that moves, clean held-out tasks, and the released loop.

The pure functions (outer-step schedule, relative movement, outer update, shared-image exclusion, released phases)
are checked on hand-made cases; the loops on the tiny random-init model with synthetic tasks (machinery only:
numbers from random weights say nothing about quality).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import clipiqa
from clipiqa import meta, protocol
from clipiqa.checkpoint import read_checkpoint
from clipiqa.cli import main
from clipiqa.meta import MetaConfig, Task, meta_pretrain
from clipiqa.meta import outer as meta_outer
from clipiqa.prompts import PromptConfig

from meta_fixtures import PHOTOS  # the `tasks` fixture (conftest.py) is built from these


def tiny_model():
    return clipiqa.load_model("tiny", device="cpu", prompts={"visual_tokens": 8, "visual_dropout": 0.0})


def trainable(model) -> dict[str, torch.Tensor]:
    model.set_trainable("prompts")
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def fast(**kw) -> MetaConfig:
    base = dict(inner_steps=1, epochs=1, tasks_per_batch=2, batch_size=4, augment="none", holdout_tasks=("jpeg",),
                inner_lr=1e-2, eval_batch_size=16)
    base.update(kw)
    return MetaConfig(**base)


# ------------------------------------------------------------------------------------------- pure functions
def test_meta_lr_schedule_constant_and_linear():
    assert [meta.meta_lr_at(i, 4, 0.3, "constant") for i in (1, 4, 9)] == [0.3, 0.3, 0.3]
    # Nichol et al. 2018: step i (1-based) of T gets base * (1 - (i - 1) / T); never negative past the end
    assert [meta.meta_lr_at(i, 4, 1.0, "linear") for i in (1, 2, 3, 4, 5, 6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    with pytest.raises(ValueError, match="cosine"):
        meta.meta_lr_at(1, 4, 1.0, "cosine")
    with pytest.raises(ValueError, match="at least 1"):
        meta.meta_lr_at(0, 4, 1.0, "linear")


def test_relative_movement_is_one_norm_over_all_tensors():
    theta0 = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0], [4.0]])}   # |theta0| = 5
    assert meta.relative_movement(theta0, theta0) == 0.0
    moved = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0], [5.0]])}   # |delta| = 1, all in b
    assert meta.relative_movement(moved, theta0) == pytest.approx(0.2)  # not a per-tensor mean (0.125)
    both = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([[1.0], [4.0]])}    # |delta| = sqrt(2)
    assert meta.relative_movement(both, theta0) == pytest.approx(math.sqrt(2) / 5)
    zeros = {"a": torch.zeros(2)}
    assert meta.relative_movement(zeros, zeros) == 0.0
    assert meta.relative_movement({"a": torch.tensor([0.0, 1e-3])}, zeros) == math.inf


def test_outer_update_sgd_is_theta_plus_lr_times_direction_and_changes_nothing_in_place():
    theta = {"x": torch.tensor([1.0, -2.0])}
    direction = {"x": torch.tensor([0.5, 0.25])}
    new, state = meta.outer_update(theta, direction, 2.0, "sgd")
    assert torch.equal(new["x"], torch.tensor([2.0, -1.5])) and state == {}
    assert torch.equal(theta["x"], torch.tensor([1.0, -2.0])) and torch.equal(direction["x"], torch.tensor([0.5, 0.25]))
    with pytest.raises(ValueError, match="rmsprop"):
        meta.outer_update(theta, direction, 1.0, "rmsprop")


def test_outer_update_adam_first_step_moves_each_coordinate_by_lr_and_matches_torch_adam():
    theta = {"x": torch.tensor([1.0, -2.0, 0.5]), "y": torch.tensor([[0.1]])}
    # Adam's first step is lr * sign(gradient) per coordinate, the gradient being -direction; 0 stays put
    direction = {"x": torch.tensor([2.0, -0.5, 0.0]), "y": torch.tensor([[1e-6]])}
    new, state = meta.outer_update(theta, direction, 0.01, "adam", None, step=1)
    torch.testing.assert_close(new["x"], torch.tensor([1.01, -2.01, 0.5]), rtol=0, atol=1e-6)
    torch.testing.assert_close(new["y"], torch.tensor([[0.11]]), rtol=0, atol=1e-4)  # eps 1e-8 vs |g| 1e-6
    # three steps with changing directions equal torch.optim.Adam on the gradients -direction
    rng = torch.Generator().manual_seed(0)
    directions = [{n: torch.randn(t.shape, generator=rng) for n, t in theta.items()} for _ in range(3)]
    params = {n: torch.nn.Parameter(t.clone()) for n, t in theta.items()}
    reference = torch.optim.Adam(params.values(), lr=0.01)
    ours, state = dict(theta), None
    for step, d in enumerate(directions, start=1):
        ours, state = meta.outer_update(ours, d, 0.01, "adam", state, step)
        for n, p in params.items():
            p.grad = -d[n]
        reference.step()
    for n, p in params.items():
        torch.testing.assert_close(ours[n], p.detach(), rtol=1e-6, atol=1e-7)
    assert set(state) == {"exp_avg", "exp_avg_sq"} and set(state["exp_avg"]) == {"x", "y"}
    with pytest.raises(ValueError, match="count from 1"):
        meta.outer_update(theta, direction, 0.01, "adam", None, step=0)


def _hand_task(name: str, rows: list[tuple[str, str, float]]) -> Task:
    return Task(name, pd.DataFrame([{"path": p, "content_id": c, "q": q} for p, c, q in rows]))


def test_exclude_shared_images_drops_exactly_the_images_training_tasks_hold(tmp_path):
    ref = {c: str(tmp_path / f"{c}.png") for c in "abc"}
    train = [_hand_task("blur", [(ref["a"], "a", 1.0), (ref["b"], "b", 1.0), (str(tmp_path / "a_blur.png"), "a", 0.2)]),
             _hand_task("noise", [(ref["c"], "c", 1.0), (str(tmp_path / "c_noise.png"), "c", 0.4),
                                  (str(tmp_path / "b_noise.png"), "b", 0.4)])]
    held = _hand_task("jpeg", [(ref["a"], "a", 1.0), (str(tmp_path / "sub" / ".." / "b.png"), "b", 1.0),
                               (str(tmp_path / "a_jpeg.png"), "a", 0.2), (str(tmp_path / "b_jpeg.png"), "b", 0.6)])
    view, dropped = meta.exclude_shared_images(held, train)
    assert dropped == 2  # the reference a, and b written as sub/../b.png (same file)
    assert list(view.table["path"]) == [str(tmp_path / "a_jpeg.png"), str(tmp_path / "b_jpeg.png")]
    assert view.name == "jpeg"
    same, none = meta.exclude_shared_images(train[1], [held])
    assert same is train[1] and none == 0
    only_refs = _hand_task("dark", [(ref["a"], "a", 1.0), (ref["b"], "b", 1.0), (str(tmp_path / "x.png"), "a", 0.0)])
    with pytest.raises(ValueError, match="'dark'.*also in training tasks.*Hold out another task"):
        meta.exclude_shared_images(only_refs, train)


def test_released_phases_group_tasks_by_dataset_in_first_seen_order():
    names = ["kadid10k:01", "tid2013:01", "kadid10k:02", "tid2013:02", "kadid10k:03", "blur"]
    phases = meta.released_phases(names, seed=0, epoch=1)
    assert [sorted(p) for p in phases] == [["kadid10k:01", "kadid10k:02", "kadid10k:03"],
                                          ["tid2013:01", "tid2013:02"], ["blur"]]
    assert phases == meta.released_phases(names, seed=0, epoch=1)  # seeded
    assert any(meta.released_phases(names, seed=0, epoch=e)[0] != phases[0] for e in range(2, 8))  # reshuffled
    assert meta.released_phases(["blur", "noise"], 0, 1) in ([["blur", "noise"]], [["noise", "blur"]])


# ------------------------------------------------------------------------------------------- a meta step that moves
def test_default_meta_run_moves_theta_more_than_one_percent_in_20_meta_steps(tasks, tmp_path):
    """Defaults of the algorithm (Reptile: inner Adam 1e-4 x 5 steps, outer SGD 1.0 annealed linearly): 20 meta
    steps (4 training tasks, one per meta step, 5 epochs). The released beta = 0.01 with the per-task reset moves
    theta by ~5e-5 of its norm per step, far below 1 % after 20 steps."""
    model = tiny_model()
    theta0 = trainable(model)
    config = MetaConfig(epochs=5, tasks_per_batch=1, batch_size=4, augment="none", holdout_tasks=("jpeg",),
                        eval_every=5, n_views=1, eval_batch_size=16)
    assert config.inner_lr == 1e-4 and config.inner_steps == 5 and config.outer().lr == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a run that moves does not warn
        history = meta_pretrain(model, tasks, config, out_dir=tmp_path)
    assert len(history.steps) == 20
    last = read_checkpoint(tmp_path / "last").tensors
    measured = meta.relative_movement({n: last[n] for n in theta0}, theta0)
    assert measured > 0.01, f"meta pre-training moved theta by only {measured:.2e} of its norm"
    # it is in the history (every step, the end), in history.csv and in the cards
    moves = [s["rel_move"] for s in history.steps]
    assert moves[-1] == pytest.approx(measured, rel=1e-6) and history.rel_move == pytest.approx(measured, rel=1e-6)
    assert all(0 < m for m in moves) and [s["meta_lr"] for s in history.steps][:2] == [1.0, 0.95]
    frame = pd.read_csv(tmp_path / "history.csv")
    steps = frame[frame["kind"] == "step"]
    np.testing.assert_allclose(steps["rel_move"].to_numpy(float), moves, rtol=1e-9)
    evals = frame[frame["kind"] == "eval"]
    assert evals["rel_move"].iloc[0] == 0.0 and evals["rel_move"].iloc[-1] == pytest.approx(measured, rel=1e-6)
    assert read_checkpoint(tmp_path / "last").card["metrics"]["rel_move"] == pytest.approx(measured, rel=1e-6)
    assert read_checkpoint(tmp_path / "best").card["training"]["outer"] == {"optimizer": "sgd", "lr": 1.0,
                                                                           "schedule": "linear"}
    assert "moved" not in history.note


def test_a_run_that_barely_moves_warns_and_says_so(tasks):
    with pytest.warns(RuntimeWarning, match=r"moved the meta parameters by only .* < 1 %"):
        history = meta_pretrain(tiny_model(), tasks, fast(meta_lr=1e-6))
    assert 0 < history.rel_move < 1e-4
    assert "moved the meta parameters by only" in history.note and "--meta-lr" in history.note


def test_a_broken_outer_step_is_caught(tasks, monkeypatch):
    """Break the learner on purpose: an outer step that returns theta unchanged gives rel_move 0 and the
    warning (the movement test above fails the same way with it: measured 0)."""
    monkeypatch.setattr(meta_outer, "outer_update", lambda theta, direction, lr, *a, **k: (dict(theta), {}))
    with pytest.warns(RuntimeWarning, match="only 0 %"):
        history = meta_pretrain(tiny_model(), tasks, fast(meta_lr=1.0))
    assert history.rel_move == 0.0 and all(s["rel_move"] == 0.0 for s in history.steps)


@pytest.mark.filterwarnings("ignore:meta pre-training moved:RuntimeWarning")
def test_fomaml_default_is_an_adam_outer_step_of_1e3_per_coordinate(tasks):
    model = tiny_model()
    theta0 = trainable(model)
    starts = []
    meta_pretrain(model, tasks, fast(algorithm="fomaml", tasks_per_batch=4, selection_metric="init"),
                  on_task_start=lambda name, params: starts.append((name, {n: p.detach().clone()
                                                                           for n, p in params.items()})))
    theta1 = starts[-1][1]  # the held-out evaluation after the one meta step starts from theta1
    delta = torch.cat([(theta1[n] - theta0[n]).flatten() for n in theta0]).abs()
    moved = delta[delta > 0]
    # Adam's first step: every coordinate with a non-zero gradient moves by the learning rate, 1e-3
    assert len(moved) > 0.5 * len(delta)
    torch.testing.assert_close(moved.max().item(), 1e-3, rtol=1e-3, atol=0)


# ------------------------------------------------------------------------------------------- clean held-out tasks
def test_held_out_scoring_reads_no_image_of_a_training_task(tasks, meta_image_reads):
    """Synthetic tasks all hold the clean references; a held-out task is scored without them."""
    reads = meta_image_reads
    history = meta_pretrain(tiny_model(), tasks, fast(holdout_tasks=("jpeg", "darken"), batch_size=16))
    train_paths = {p for t in tasks if t.name in history.train_tasks for p in t.table["path"]}
    eval_reads = {p for ph, p in reads if ph == "eval"}
    assert eval_reads, "the held-out tasks were scored"
    assert not eval_reads & train_paths, sorted(eval_reads & train_paths)
    assert history.holdout_excluded == {"jpeg": len(PHOTOS), "darken": len(PHOTOS)}  # the clean references
    held = {t.name: t for t in tasks if t.name in history.holdout_tasks}
    distorted = {p for t in held.values() for p in t.table.loc[t.table["level"] > 0, "path"]}
    assert eval_reads <= distorted


def test_a_held_out_task_left_with_one_label_value_warns(tasks):
    one_level = [Task(t.name, t.table[t.table["level"].isin([0, 5])].reset_index(drop=True)) for t in tasks]
    with pytest.warns(RuntimeWarning, match="'jpeg' has a single label value"):
        meta_pretrain(tiny_model(), one_level, fast(eval_every=5))


# ------------------------------------------------------------------------------------------- the released loop
@pytest.mark.filterwarnings("ignore:meta pre-training moved:RuntimeWarning")
def test_released_loop_never_resets_takes_query_steps_and_steps_once_per_dataset_phase(tasks, tmp_path):
    pooled = [Task(f"{src}:{t.name}", t.table, t.description) for src, part in (("a", tasks[:3]), ("b", tasks[3:]))
              for t in part]
    starts, ends, inner = [], [], []

    def snapshot(params):
        return {k: v.detach().clone() for k, v in params.items()}
    model = tiny_model()
    theta0 = trainable(model)
    config = fast(algorithm="released", holdout_tasks=("a:jpeg",), inner_steps=2, epochs=1)
    assert config.outer() == meta.OuterSettings("sgd", 0.01, "constant")
    history = meta_pretrain(model, pooled, config, out_dir=tmp_path,
                            on_step=lambda r: inner.append(r) if r["kind"] == "inner" else None,
                            on_task_start=lambda n, p: starts.append((n, snapshot(p))),
                            on_task_end=lambda n, phi, g: ends.append((n, snapshot(phi))))
    # phases: a (a:gaussian_blur, a:white_noise), b (b:darken, b:pixelate): one meta step each
    assert [sorted(s["tasks"].split(";")) for s in history.steps] == [["a:gaussian_blur", "a:white_noise"],
                                                                      ["b:darken", "b:pixelate"]]
    train_starts = [(n, p) for n, p in starts if n != "a:jpeg"]
    assert len(train_starts) == 4 and len(ends) == 4
    # never reset: every task continues from the previous task's end, across the phase boundary too
    for (_, start), (_, previous_end) in zip(train_starts[1:], ends[:-1]):
        for n in start:
            assert torch.equal(start[n], previous_end[n])
    assert any(not torch.equal(train_starts[2][1][n], theta0[n]) for n in theta0)
    # a support step then a query step, inner_steps times per task
    assert len(inner) == 4 * 2 and all(math.isfinite(r["query_loss"]) for r in inner)
    # the outer step once per phase: theta1 = theta0 + 0.01 (phi_a - theta0), theta2 = theta1 + 0.01 (phi_b - theta1)
    theta1 = meta.outer_update(theta0, {n: ends[1][1][n] - theta0[n] for n in theta0}, 0.01)[0]
    theta2 = meta.outer_update(theta1, {n: ends[3][1][n] - theta1[n] for n in theta0}, 0.01)[0]
    last = read_checkpoint(tmp_path / "last").tensors
    for n in theta0:
        torch.testing.assert_close(last[n], theta2[n], rtol=0, atol=1e-7)
    # labelled as the released loop, for comparison only
    assert meta.RELEASED_NOTE in history.note
    card = read_checkpoint(tmp_path / "best").card
    assert "released" in card["training"]["kind"] and meta.RELEASED_NOTE in card["note"]


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.filterwarnings("ignore:meta pre-training moved:RuntimeWarning")
def test_cli_outer_optimizer_flags_and_released_loop(tmp_path, capsys):
    common = ["pretrain", "--tasks", "demo", "--model", "tiny", "--device", "cpu", "--epochs", "1",
              "--inner-steps", "1", "--batch-size", "4", "--size", "64", "--types", "gaussian_blur", "jpeg",
              "darken", "--levels", "1", "5", "--tasks-per-batch", "2", "--holdout", "jpeg", "--augment", "none",
              "--cache-dir", str(tmp_path / "cache")]
    assert main(common + ["--out", str(tmp_path / "adam"), "--outer-optimizer", "adam", "--meta-lr", "0.002"]) == 0
    err = capsys.readouterr().err
    assert "moved" in err and "outer adam" in err
    card = read_checkpoint(tmp_path / "adam" / "best").card
    assert card["training"]["outer"] == {"optimizer": "adam", "lr": 0.002, "schedule": "linear"}
    assert main(common + ["--out", str(tmp_path / "released"), "--algorithm", "released"]) == 0
    err = capsys.readouterr().err
    assert "released meta loop (comparison only)" in err
    assert "released" in read_checkpoint(tmp_path / "released" / "best").card["training"]["kind"]
    with pytest.raises(SystemExit):
        main(common + ["--out", str(tmp_path / "x"), "--meta-lr-schedule", "cosine"])
    assert main(common + ["--out", str(tmp_path / "x"), "--meta-lr", "-1"]) == 1
    assert "MetaConfig.meta_lr=-1.0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- meta_init="auto"
def test_auto_meta_init_moves_away_from_the_random_init(tmp_path, monkeypatch):
    """The protocol's quick meta pre-training (``meta_init="auto"``) ends more than 1 % away from where it started,
    and hands over those parameters (its former budget moved them 0.0086 %, and its selection handed back the
    start parameters themselves)."""
    monkeypatch.setenv("CLIPIQA_CACHE", str(tmp_path / "cache"))
    config = protocol.MethodConfig()
    config.cache.workdir = tmp_path / "work"

    def factory(prompts=None):
        return clipiqa.load_model("tiny", device="cpu", prompts=prompts)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the barely-moved warning would fail here
        init = protocol.auto_meta_pretrain(factory, ("astronaut", "chelsea", "coffee"), {"gaussian_blur"}, config, 0)
    card = read_checkpoint(init).card
    assert card["metrics"]["rel_move"] > 0.01
    frame = pd.read_csv(init.parent / "history.csv")
    assert frame.loc[frame["kind"] == "step", "rel_move"].iloc[-1] == pytest.approx(card["metrics"]["rel_move"])
    fresh = dict(factory(prompts=PromptConfig()).adapter_parameters())
    got = read_checkpoint(init).tensors
    assert any(not torch.equal(got[n], fresh[n].detach()) for n in got)


# ------------------------------------------------------------------------------------------------------ selection
def test_tied_held_out_srcc_selects_the_latest_epoch_and_says_it_barely_moved(tasks, tmp_path):
    """An outer step of 1e-9 leaves every held-out ranking as it was: the held-out SRCC ties at every evaluation.
    Ties go to the latest epoch (a strict '>' kept epoch 0, the untouched start, in best/ without a word), and a
    selection that moved less than 1 % says so in the history, the best/ card and the CLI's words."""
    with pytest.warns(RuntimeWarning, match="moved the meta parameters by only"):
        history = meta_pretrain(tiny_model(), tasks, fast(meta_lr=1e-9, epochs=2), out_dir=tmp_path)
    scores = [row["srcc"] for row in history.evals]
    assert [row["epoch"] for row in history.evals] == [0, 1, 2] and len(set(scores)) == 1  # a tie throughout
    assert history.best_epoch == 2
    best, last = read_checkpoint(tmp_path / "best"), read_checkpoint(tmp_path / "last")
    assert all(torch.equal(best.tensors[n], last.tensors[n]) for n in last.tensors)
    assert "best/ (epoch 2) moved only" in history.note and "practically the start init" in history.note
    assert "best/ (epoch 2) moved only" in best.card["note"]
    assert "practically the start init" in best.card["metrics"]["selection_note"]


def test_a_selected_untouched_start_is_always_said():
    """The words for the two cases, the same in the history note, the card, ``clipiqa pretrain`` and notebook 06:
    best/ equal to the start, and best/ within 1 % of it; nothing for a selection that moved."""
    assert "best/ is the initial state, untouched (selected at epoch 0" in meta.selection_note(0, 0.0)
    assert "moved only 0.5 %" in meta.selection_note(3, 0.005)
    assert meta.selection_note(3, 0.02) == "" and meta.selection_note(None, None) == ""
    from types import SimpleNamespace
    from clipiqa.notebook import meta_selection_text
    evals = [{"kind": "eval", "epoch": 0, "meta_step": 0, "srcc": 0.4, "rel_move": 0.0},
             {"kind": "eval", "epoch": 1, "meta_step": 2, "srcc": 0.3, "rel_move": 0.2}]
    history = SimpleNamespace(evals=evals, best_epoch=0, best_score=0.4, best_meta_step=0, rel_move=0.2)
    assert "best/ is the initial state, untouched" in meta_selection_text(history)
    moved = SimpleNamespace(evals=evals, best_epoch=1, best_score=0.3, best_meta_step=2, rel_move=0.2)
    assert "untouched" not in meta_selection_text(moved) and "moved only" not in meta_selection_text(moved)


def test_cli_pretrain_says_when_best_barely_moved(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning):
        rc = main(["pretrain", "--tasks", "demo", "--model", "tiny", "--device", "cpu", "--epochs", "1",
                   "--inner-steps", "1", "--batch-size", "4", "--size", "64", "--types", "gaussian_blur", "jpeg",
                   "darken", "--levels", "1", "3", "5", "--tasks-per-batch", "2", "--holdout", "jpeg",
                   "--meta-lr", "1e-9",
                   "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "best/ (epoch 1) moved only" in err, err
