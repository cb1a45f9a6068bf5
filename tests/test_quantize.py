"""The int8 scorer: `clipiqa export --int8` writes a quantized graph with the fp32 scorer's input
and outputs, whose margins rank the demo images as the fp32 margins do (SRCC >= 0.995 on the lesson toy), with a
sealed JSON that says it is int8; `clipiqa score --onnx` and score_onnx.py run it unchanged."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import clipiqa
from clipiqa.cli import main
from clipiqa.export import export_onnx
from clipiqa.metrics import srcc
from clipiqa.onnx_runner import OnnxScorer, read_metadata
from clipiqa.quantize import QuantizationError, quantize_scorer

SRCC_BAR = 0.995  # int8 against fp32 margins of the same images


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lesson_fp32(tmp_path_factory):
    model = clipiqa.load_model("lesson", device="cpu")
    return export_onnx(model, tmp_path_factory.mktemp("fp32") / "lesson.onnx")


def check_batch(scorer: OnnxScorer, paths: list[str]) -> np.ndarray:
    from clipiqa.imageio import load_image
    from clipiqa.onnx_runner import preprocess
    return np.stack([preprocess(load_image(p), scorer.spec) for p in paths])


def test_int8_lesson_ranks_the_demo_images_as_fp32_does(tmp_path, lesson_fp32, demo_table):
    paths = list(demo_table["path"])
    fp32 = OnnxScorer(lesson_fp32)
    int8_path = quantize_scorer(lesson_fp32, tmp_path / "int8" / "lesson.onnx", check_batch(fp32, paths[:40]))
    int8 = OnnxScorer(int8_path)
    rows32, rows8 = fp32.score_paths(paths, batch_size=16), int8.score_paths(paths, batch_size=16)
    assert all(r["status"] == "ok" for r in rows32 + rows8)
    m32 = np.array([r["logit_margin"] for r in rows32])
    m8 = np.array([r["logit_margin"] for r in rows8])
    value = srcc(m8, m32)
    print(f"\nlesson int8 vs fp32 on {len(paths)} demo images: SRCC {value:.5f}, max |diff| "
          f"{np.abs(m8 - m32).max():.3g}, fp32 margin std {m32.std():.3g}")
    assert value >= SRCC_BAR
    # the bar has teeth on these images: the same margins in another order are far below it
    assert srcc(np.random.default_rng(0).permutation(m32), m32) < 0.5
    assert np.abs(m8 - m32).max() > 1e-4, "int8 margins equal fp32: nothing was quantized"
    assert int8_path.stat().st_size < 0.5 * lesson_fp32.stat().st_size  # int8 weights, a quarter of fp32's bytes
    # an image's int8 margin does not depend on its batch mates (activation ranges are taken per run)
    alone = [r["logit_margin"] for r in int8.score_paths(paths[:20], batch_size=1)]
    np.testing.assert_array_equal([r["logit_margin"] for r in int8.score_paths(paths[:20], batch_size=7)], alone)
    np.testing.assert_array_equal(m8[:20], alone)

    meta, meta32 = read_metadata(int8_path), read_metadata(lesson_fp32)
    assert meta["precision"] == "int8" and meta["onnx_sha256"] == sha256(int8_path)
    assert meta["quantization"]["fp32_onnx_sha256"] == meta32["onnx_sha256"] == sha256(lesson_fp32)
    assert meta["quantization"]["check"]["srcc_vs_fp32"] >= 0.99
    assert meta["preprocess"] == meta32["preprocess"] and meta["label"] == meta32["label"]
    assert "int8" in int8.describe()


def test_a_quantization_that_fails_the_check_writes_nothing(tmp_path, lesson_fp32, demo_table):
    fp32 = OnnxScorer(lesson_fp32)
    target = tmp_path / "refused.onnx"
    with pytest.raises(QuantizationError, match="SRCC .* against fp32.*without --int8"):
        quantize_scorer(lesson_fp32, target, check_batch(fp32, list(demo_table["path"][:20])), min_srcc=1.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_export_int8_runs_under_clipiqa_score_and_score_onnx(tmp_path, demo_table, capsys):
    paths = list(demo_table["path"][:6])
    out = tmp_path / "deploy" / "scorer.onnx"
    out.parent.mkdir()
    assert main(["export", "--model", "lesson", "--int8", "--out", str(out)]) == 0
    assert "int8: SRCC" in capsys.readouterr().err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["precision"] == "int8" and meta["onnx_sha256"] == sha256(out)
    expected = np.array([r["logit_margin"] for r in OnnxScorer(out).score_paths(paths, batch_size=16)])

    assert main(["score", *paths, "--onnx", str(out), "--out", str(tmp_path / "cli.csv")]) == 0
    cli = pd.read_csv(tmp_path / "cli.csv")
    assert (cli["status"] == "ok").all()
    np.testing.assert_allclose(cli["logit_margin"].to_numpy(), expected, atol=1e-6)

    done = subprocess.run([sys.executable, str(out.with_name("score_onnx.py")), str(out), *paths, "--out",
                           str(tmp_path / "standalone.csv")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "int8" in done.stderr
    alone = pd.read_csv(tmp_path / "standalone.csv")
    assert (alone["status"] == "ok").all()
    np.testing.assert_allclose(alone["logit_margin"].to_numpy(), expected, atol=1e-6)
