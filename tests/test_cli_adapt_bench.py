"""``clipiqa adapt`` and ``clipiqa bench`` in-process with the tiny random-init model (machinery only)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipiqa import load_model
from clipiqa.cli import main
from clipiqa.data import apply_distortion, demo_references
from clipiqa.protocol import DEFAULT_METHODS, NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS



@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory):
    """A folder of 12 images and a path,score CSV (1-5 scale, relative paths)."""
    folder = tmp_path_factory.mktemp("labelled")
    rows = []
    for name, ref in demo_references(size=64, names=["astronaut", "chelsea", "coffee", "rocket"]).items():
        for level in (0, 2, 4):
            img = ref if level == 0 else apply_distortion(ref, "gaussian_blur", level, rng=0)
            Image.fromarray(img).save(folder / f"{name}_{level}.png")
            rows.append({"path": f"{name}_{level}.png", "score": 5 - level})
    csv = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


ADAPT_FAST = ["--model", "tiny", "--device", "cpu", "--epochs", "2", "--augment", "none", "--batch-size", "8"]


def test_adapt_writes_checkpoint_card_and_history(labels_csv, tmp_path, capsys):
    out = tmp_path / "ckpt"
    rc = main(["adapt", "--labels", str(labels_csv), "--out", str(out), "--trainable", "prompts", *ADAPT_FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "random-init" in captured.err and "wrote" in captured.out
    assert (out / "adapter.safetensors").is_file() and (out / "card.json").is_file()
    card = json.loads((out / "card.json").read_text())
    assert card["trainable"] == "prompts" and card["training"]["epochs"] == 2
    assert card["training"]["qgr"]["lam"] == 5.0 and card["training"]["qgr"]["enabled"] is True
    assert card["data"]["n_images"] == 12 and len(card["data"]["labels_sha256"]) == 64
    assert card["data"]["images_hash"] and card["data"]["higher_better"] is True
    assert np.isfinite(card["metrics"]["train_srcc"]) and "val_srcc" not in card["metrics"]
    assert "warning" in card  # random-init backbone
    history = pd.read_csv(out / "history.csv")
    assert len(history[history["kind"] == "step"]) == 4  # 12 images, batch 8, 2 epochs
    assert {"loss", "loss_semantic", "cosine", "epoch"} <= set(history.columns)
    # the checkpoint loads back onto the model
    model = load_model("tiny", device="cpu", prompts=out)
    assert model.prompt_config.visual_tokens == 100


def test_adapt_val_selection_no_qgr_and_lower_better(labels_csv, tmp_path, capsys):
    csv = tmp_path / "dmos.csv"
    table = pd.read_csv(labels_csv)
    table["score"] = 6 - table["score"]  # now lower = better
    table["path"] = [str(labels_csv.parent / p) for p in table["path"]]
    table.to_csv(csv, index=False)
    out = tmp_path / "ckpt"
    rc = main(["adapt", "--labels", str(csv), "--out", str(out), "--trainable", "text", "--no-qgr",
               "--selection", "val", "--lower-better", "--seed", "3", *ADAPT_FAST])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["qgr"]["enabled"] is False and card["training"]["selection"] == "val"
    assert card["data"]["higher_better"] is False and card["training"]["seed"] == 3
    assert "val_srcc" in card["metrics"] and card["metrics"]["selected_epoch"] in (1, 2)
    history = pd.read_csv(out / "history.csv")
    assert (history["kind"] == "eval").sum() == 2 and "srcc_val" in history


@pytest.mark.parametrize("args, message", [
    (["--labels", "{missing}"], "not found"),
    (["--labels", "{csv}", "--score-range", "1", "3"], "outside score_range"),
    (["--labels", "{csv}", "--score-range", "5", "1"], "HI > LO"),
    (["--labels", "{csv}", "--epochs", "0"], "epochs"),
    (["--labels", "{csv}", "--qgr-lam", "-1"], "lam"),
    (["--labels", "{csv}", "--init", "{missing}"], "missing"),
])
def test_adapt_usage_errors_exit_1(labels_csv, tmp_path, capsys, args, message):
    args = [a.format(csv=labels_csv, missing=tmp_path / "nope") for a in args]
    rc = main(["adapt", *args, "--out", str(tmp_path / "o"), "--model", "tiny", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_adapt_argument_errors_exit_1(labels_csv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["adapt", "--labels", str(labels_csv), "--model", "tiny"])  # no --out
    assert e.value.code == 1
    with pytest.raises(SystemExit) as e:
        main(["adapt", "--labels", str(labels_csv), "--out", str(tmp_path), "--qgr-lam", "2", "--no-qgr"])
    assert e.value.code == 1
    with pytest.raises(SystemExit) as e:
        main(["adapt", "--labels", str(labels_csv), "--out", str(tmp_path), "--trainable", "everything"])
    assert e.value.code == 1


@pytest.mark.parametrize("args, message", [
    (["--dataset", "demo", "--shots", "0"], "--shots"),
    (["--dataset", "demo", "--shots", "abc"], "--shots"),
    (["--dataset", "demo", "--shots", "10", "--methods", "zero-shot,nope"], "unknown method"),
    (["--dataset", "koniq10k", "--shots", "10"], "NAME:ROOT"),
    (["--dataset", "koniq10k:{missing}", "--shots", "10"], "nope"),
    (["--dataset", "demo", "--shots", "10", "--splits", "0"], "--splits"),
    (["--dataset", "demo", "--shots", "10", "--demo-types", "not_a_type"], "unknown distortion"),
])
def test_bench_usage_errors_exit_1(tmp_path, capsys, args, message):
    args = [a.format(missing=tmp_path / "nope") for a in args]
    rc = main(["bench", *args, "--model", "tiny", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and message in err, err


def test_bench_lists_methods(capsys):
    assert main(["bench", "--dataset", "demo", "--shots", "5", "--list-methods"]) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in DEFAULT_METHODS)


@pytest.mark.slow
def test_bench_demo_tiny_runs_every_default_arm_naming_its_recipe(tmp_path, capsys, monkeypatch):
    """The smoke command of the brief: the 2x2 ablation and the baselines all run (the meta arms via the quick auto
    meta pre-training), each row naming its recipe."""
    monkeypatch.setenv("CLIPIQA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    rc = main(["bench", "--dataset", "demo", "--model", "tiny", "--shots", "20", "--splits", "2", "--out", str(out),
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = pd.read_csv(out / "summary.csv")
    expected = ["zero-shot", "ridge-probe", "classical-ridge", "coop", "coop+vpt", "ft", "ft+qgr", "meta+ft",
                "meta+ft+qgr"]
    assert list(summary["method"]) == expected == list(DEFAULT_METHODS)
    assert (summary["n_ok"] == 2).all(), summary[["method", "reason"]].to_string()
    per = pd.read_csv(out / "per_split.csv")
    assert len(per) == 18 and per.groupby("split")["split_hash"].nunique().eq(1).all()
    recipes = per.groupby("method")["recipe"].first()
    assert recipes["coop"].startswith("coop [") and recipes["meta+ft+qgr"].startswith("grmp [")
    assert recipes["zero-shot"] == "none" and recipes["ridge-probe"].startswith("closed form")
    assert (out / "summary.png").is_file() and (out / "summary.json").is_file()
    for text in ("meta+ft+qgr", "classical-ridge", "grmp [", NOTE_RANDOM_INIT, NOTE_SYNTHETIC_LABELS, "chance"):
        assert text in captured.out
    assert "CPU-friendly budget" in captured.err
    assert list((out / "meta-auto").iterdir())  # the auto meta checkpoints are kept beside the results


def test_adapt_released_recipe_selects_on_the_test_labels_and_says_optimistic(labels_csv, tmp_path, capsys):
    out = tmp_path / "released"
    base = ["adapt", "--labels", str(labels_csv), "--model", "tiny", "--device", "cpu", "--recipe", "grmp-released",
            "--epochs", "2", "--augment", "none", "--trainable", "text"]
    assert main([*base, "--out", str(out)]) == 1
    assert "--test-labels" in capsys.readouterr().err and not out.exists()
    rc = main([*base, "--out", str(out), "--test-labels", str(labels_csv)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "optimistic: selected on the test split" in captured.out
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["selection"] == "test-oracle" and card["training"]["lr_schedule"] == "plateau"
    assert card["training"]["select_initial"] and card["training"]["selection_metric"] == "srcc+plcc"
    assert "optimistic" in card["metrics"]["optimistic"] and "test_srcc" in card["metrics"]
    history = pd.read_csv(out / "history.csv")
    # the release's cadence: epoch 0 (a candidate), then every 5 epochs, and here the last of the 2-epoch budget
    assert list(history.loc[history["kind"] == "eval", "epoch"]) == [0, 2]
    assert card["training"]["eval_every"] == 5 and card["training"]["min_lr"] == 5e-7
    assert main(["adapt", "--labels", str(labels_csv), "--model", "tiny", "--out", str(tmp_path / "x"),
                 "--recipe", "nope"]) == 1
    assert "--recipe 'nope'" in capsys.readouterr().err


def test_adapt_qgr_lam_auto_records_the_chosen_strength(labels_csv, tmp_path, capsys):
    out = tmp_path / "ckpt"
    rc = main(["adapt", "--labels", str(labels_csv), "--out", str(out), "--trainable", "text", "--qgr-lam", "auto",
               *ADAPT_FAST])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["qgr"]["lam"] == "auto" and card["qgr"]["lam"] in (0, 1, 2, 5)
    with pytest.raises(SystemExit):
        main(["adapt", "--labels", str(labels_csv), "--out", str(tmp_path / "x"), "--qgr-lam", "strong"])
