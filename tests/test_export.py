"""Deployment: one ONNX graph (image in; logit margin and score out), the preprocessing JSON and the card's
fingerprint beside it; onnxruntime reproduces torch's margins (1e-4) on 32 demo images for a zero-shot and an
adapted checkpoint, and the exported scorer runs where neither clipiqa nor torch is imported."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import clipiqa
from clipiqa.cli import main
from clipiqa.data.transforms import grmp_spec
from clipiqa.export import export_onnx
from clipiqa.inference import predict_pil
from clipiqa.onnx_runner import OnnxScorer, preprocess, read_metadata

ATOL = 1e-4


@pytest.fixture(scope="module")
def demo32(demo_table):
    paths = list(demo_table["path"].head(32))
    return paths, [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def adapted_checkpoint(tmp_path_factory):
    """A tiny model adapted away from zero-shot (paper set + visual prompts, perturbed tensors), trained with the
    paper's evaluation transform: the checkpoint card records it, and the export must carry it."""
    model = clipiqa.load_model("tiny", device="cpu")
    model.set_trainable("last-blocks")
    model.add_visual_prompt(4, 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in model.adapter_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.transform_spec = grmp_spec(model)
    path = tmp_path_factory.mktemp("ckpt") / "adapted"
    clipiqa.save_checkpoint(model, path, trainable="last-blocks")
    return path


def torch_margins(model, images) -> np.ndarray:
    return predict_pil(model, images, amp=False).margin.numpy()


def test_preprocessing_is_bit_identical_to_torchvision(demo32, adapted_checkpoint):
    _, images = demo32
    odd = [Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
           for h, w in ((300, 200), (224, 500), (225, 224), (224, 224), (97, 131))]
    for model in (clipiqa.load_model("tiny"), clipiqa.load_model(prompts=str(adapted_checkpoint))):
        spec = model.eval_spec.to_dict()
        for im in images[:4] + odd:
            expected = model.preprocess(im).numpy()
            np.testing.assert_array_equal(preprocess(im, spec), expected)


def test_zero_shot_export_matches_torch_on_32_demo_images(tmp_path, demo32):
    _, images = demo32
    model = clipiqa.load_model("tiny", device="cpu")
    path = export_onnx(model, tmp_path / "zero-shot.onnx")
    meta = read_metadata(path)
    assert meta["adapters"] == "off" and meta["checkpoint"] is None and meta["adapter_fingerprint"] is None
    assert meta["backbone"]["fingerprint"] == model.source.fingerprint and meta["label"] == model.source.label
    assert meta["preprocess"] == model.eval_spec.to_dict()
    scorer = OnnxScorer(path)
    batch = np.stack([preprocess(im, scorer.spec) for im in images])
    margins, scores = scorer.predict(batch)
    expected = torch_margins(model, images)
    assert np.abs(margins - expected).max() <= ATOL
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-margins)), atol=1e-6)


def test_cli_export_of_an_adapted_checkpoint_matches_torch_and_records_the_card(tmp_path, demo32,
                                                                                 adapted_checkpoint, capsys):
    paths, images = demo32
    out = tmp_path / "scorer.onnx"
    assert main(["export", "--prompts", str(adapted_checkpoint), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "random init" in err and "fingerprint" in err
    card = clipiqa.read_checkpoint(adapted_checkpoint).card
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["preprocess"] == card["eval_transform"] and meta["preprocess"]["name"] == "grmp"
    assert meta["checkpoint"]["sha256"] == card["integrity"]["sha256"]
    assert meta["backbone"]["fingerprint"] == card["backbone"]["fingerprint"] and meta["adapters"] == "on"
    assert "meaningless" in meta["warning"]
    model = clipiqa.load_model(prompts=str(adapted_checkpoint), device="cpu")
    expected = torch_margins(model, images)
    with model.adapters_off():
        assert np.abs(torch_margins(model, images) - expected).max() > 1e-3, "adaptation changed nothing"
    rows = OnnxScorer(out).score_paths(paths, batch_size=8)
    margins = np.array([r["logit_margin"] for r in rows])
    assert all(r["status"] == "ok" for r in rows) and np.abs(margins - expected).max() <= ATOL

    # clipiqa score --onnx: the same rows, labelled
    assert main(["score", *paths[:6], "--onnx", str(out), "--out", str(tmp_path / "onnx.csv")]) == 0
    table = pd.read_csv(tmp_path / "onnx.csv")
    assert np.abs(table["logit_margin"].to_numpy() - expected[:6]).max() <= ATOL
    assert table["model"].str.contains("random init").all()
    assert main(["score", paths[0], "--onnx", str(out), "--model", "tiny"]) == 1
    assert main(["export", "--prompts", str(adapted_checkpoint), "--out", str(out)]) == 1  # exists: --force


def test_exported_scorer_runs_without_clipiqa_or_torch(tmp_path, demo32):
    paths, images = demo32
    model = clipiqa.load_model("tiny", device="cpu")
    (tmp_path / "deploy").mkdir()
    out = export_onnx(model, tmp_path / "deploy" / "scorer.onnx")
    runner = out.with_name("score_onnx.py")
    assert runner.is_file()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, p in enumerate(paths[:8]):
        Image.open(p).save(folder / f"{i:02d}.png")
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['score_onnx.py', {str(out)!r}, {str(folder)!r}, '--out', {str(tmp_path / 'rows.csv')!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(runner)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'clipiqa', 'torchvision', 'open_clip'))\n"
        "assert not bad, bad\n"
        "assert 'onnxruntime' in sys.modules and 'numpy' in sys.modules and 'PIL' in sys.modules\n"
        "print('modules ok')\n")
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "modules ok" in done.stdout and "random init" in done.stderr
    rows = pd.read_csv(tmp_path / "rows.csv")
    expected = torch_margins(model, [Image.open(folder / f"{i:02d}.png").convert("RGB") for i in range(8)])
    assert (rows["status"] == "ok").all() and np.abs(rows["logit_margin"].to_numpy() - expected).max() <= ATOL


def test_frozen_only_models_are_not_exported(tmp_path):
    from rehearsal import rn50_folder
    model = clipiqa.load_model("rn50-openai", weights=rn50_folder(tmp_path))
    with pytest.raises(ValueError, match="own resolution"):
        export_onnx(model, tmp_path / "rn.onnx")


@pytest.mark.gpu
@pytest.mark.slow
def test_rehearsal_b16_exported_from_cuda_matches_torch(tmp_path, monkeypatch, demo32):
    """The paper's architecture (random weights from the fake hub cache) traced on CUDA; onnxruntime (CPU) against
    torch on CUDA in fp32 (TF32 off) on 32 demo images."""
    from rehearsal import rehearsal_cache, use_cache
    use_cache(monkeypatch, rehearsal_cache("vitb16-openai"))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = clipiqa.load_model("vitb16-openai", device="cuda")
    path = export_onnx(model, tmp_path / "b16.onnx")
    _, images = demo32
    scorer = OnnxScorer(path)
    margins, _ = scorer.predict(np.stack([preprocess(im, scorer.spec) for im in images]))
    expected = torch_margins(model, images)
    print(f"\nViT-B/16 exported from CUDA: max |margin diff| {np.abs(margins - expected).max():.2e}")
    assert np.abs(margins - expected).max() <= 1e-3 and read_metadata(path)["label"]
