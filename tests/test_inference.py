"""One inference path (docs/design.md, 'Scores: one inference path'): the fp32 quality head, margins for ranking,
bf16 that keeps rankings, preprocessing that travels with the checkpoint, and every way a user gets a score (the
model's own methods, ``score_files``, ``clipiqa score``, the Session, the protocol's evaluation, the training loss,
the attribution target) giving the inference path's numbers.

Every model here is the random-init ``tiny`` preset: the numbers check the machinery, never quality."""
from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import clipiqa
from clipiqa.data.transforms import (TransformSpec, backbone_spec, eval_transform, grmp_spec,
                                     train_transform)
from clipiqa.inference import (NON_FINITE_REASON, Prediction, from_logits, head_logits, p_high_target,
                               predict_batches, predict_features, predict_hidden, predict_images)
from clipiqa.scoring import score_files

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------- the head
def test_from_logits_margin_and_sigmoid_equal_the_two_way_softmax():
    z = torch.tensor([[2.0, -1.0], [0.0, 0.0], [-3.0, 5.0]])
    pred = from_logits(z)
    assert torch.equal(pred.margin, torch.tensor([3.0, 0.0, -8.0]))
    assert torch.allclose(pred.score, z.softmax(-1)[:, 0], atol=1e-7)
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        from_logits(torch.zeros(3, 3))


def test_head_logits_are_fp32_outside_autocast_and_keep_gradients():
    f = torch.randn(5, 8, requires_grad=True)
    t = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    with torch.autocast(**BF16):
        z = head_logits(f.bfloat16(), t.bfloat16(), torch.tensor(100.0))
    assert z.dtype == torch.float32
    expected = 100 * torch.nn.functional.normalize(f.bfloat16().float(), dim=-1) @ \
        torch.nn.functional.normalize(t.bfloat16().float(), dim=-1).t()
    assert torch.allclose(z, expected, atol=1e-5)
    z.sum().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()


def _saturating_model(tiny, monkeypatch):
    """The tiny model with logit scale 100 (real CLIP's) and quality text features e1 (high), e2 (low): an image
    feature (c, s) on the unit circle has margin 100 (c - s)."""
    dim = tiny.quality_text_features().shape[1]
    text = torch.zeros(2, dim)
    text[0, 0] = text[1, 1] = 1.0
    monkeypatch.setattr(tiny, "quality_text_features", lambda: text)
    with torch.no_grad():
        tiny.clip.logit_scale.fill_(math.log(100.0))
    return dim


def _features_with_margins(margins: torch.Tensor, dim: int) -> torch.Tensor:
    r = margins / 100.0
    c = (r + torch.sqrt(2 - r ** 2)) / 2
    f = torch.zeros(len(margins), dim)
    f[:, 0], f[:, 1] = c, c - r
    return 3.0 * f  # unnormalised, like encoder outputs


def test_saturated_logits_keep_their_ranking_through_the_head_under_bf16(tiny, monkeypatch):
    """Quality logits 40 apart: p_high is 1.0 for every image in fp32 (useless for ranking), the fp32 margin keeps
    the order even under bf16 autocast. Before the fix the head ran in bf16 (logits ~70 have a bf16 spacing of
    0.5): margins 0.25 apart tied."""
    dim = _saturating_model(tiny, monkeypatch)
    target = 40.0 + 0.25 * torch.arange(8, dtype=torch.float32)
    feats = _features_with_margins(target, dim)
    with torch.no_grad(), torch.autocast(**BF16):
        q_logits, _ = tiny.heads(feats, scenes=False)
        pred = predict_features(tiny, feats)
    assert q_logits.dtype == torch.float32
    margin = q_logits[:, 0] - q_logits[:, 1]
    assert torch.allclose(margin, target, atol=1e-3)
    assert torch.equal(pred.margin, margin)
    assert (pred.margin.diff() > 0).all() and len(set(pred.margin.tolist())) == 8
    assert set(pred.score.tolist()) == {1.0}  # p_high saturates: why ranks use the margin


def test_model_score_forward_and_predict_agree(tiny, images):
    with torch.no_grad():
        logits = tiny.logits(images)
        pred = tiny.predict(images)
        assert torch.equal(tiny(images), pred.margin)  # forward = the margin (attribution default)
        assert torch.equal(tiny.score(images), pred.score)
    assert torch.allclose(pred.margin, logits[:, 0] - logits[:, 1], atol=1e-6)
    assert torch.allclose(pred.score, logits.softmax(-1)[:, 0], atol=1e-6)


def test_training_logits_are_the_scoring_logits(tiny, images):
    """The loss path (finetune.forward_cached, under bf16 autocast as on a GPU) gets fp32 logits from the same
    head that scores: the margins equal the inference path's."""
    from clipiqa.finetune import forward_cached
    tiny.set_trainable("text")
    tiny.eval()
    start = tiny.n_visual_layers - 1
    with torch.no_grad():
        hidden = tiny.visual_prefix(images, start)
        with torch.autocast(**BF16):
            q_logits, s_logits = forward_cached(tiny, hidden, start)
            pred = predict_hidden(tiny, hidden, start)
    assert q_logits.dtype == s_logits.dtype == torch.float32
    assert torch.equal(from_logits(q_logits).margin, pred.margin)


def test_predict_batches_restores_mode_and_matches_predict_images(tiny, images):
    tiny.train()
    pred = predict_batches(tiny, images.split(3), amp=False)
    assert tiny.training
    tiny.eval()
    with torch.no_grad():
        direct = predict_images(tiny, images)
    assert isinstance(pred, Prediction) and torch.allclose(pred.margin, direct.margin, atol=1e-6)


def test_attribution_default_target_is_the_margin_and_p_high_is_available(tiny, images):
    from clipiqa.explain import attribute
    from clipiqa.explain.diagnostics import score_tensors
    x = images[:1]
    margin = score_tensors(tiny, x)
    p_high = score_tensors(tiny, x, target_fn=p_high_target)
    with torch.no_grad():
        assert margin[0] == pytest.approx(float(tiny.predict(x).margin[0]), abs=1e-5)
    assert p_high[0] == pytest.approx(1 / (1 + math.exp(-margin[0])), abs=1e-6)
    baseline = torch.zeros_like(x)
    attr = attribute(tiny, x, "ig", baseline=baseline, n_steps=16)
    with torch.no_grad():
        f_x, f_0 = tiny(x), tiny(baseline)
    assert float(attr.sum()) == pytest.approx(float(f_x - f_0), rel=0.05, abs=1e-3)  # IG completeness on the margin


# ---------------------------------------------------------------------------------------------- bf16
def test_score_files_amp_true_runs_the_encoder_under_cpu_bf16(photo_dir, monkeypatch):
    """amp=True on a CPU used to be silently ignored (autocast enabled only for CUDA)."""
    model = clipiqa.load_model("tiny", device="cpu")
    seen = []
    encode = model.encode_image

    def spy(x):
        seen.append(torch.is_autocast_enabled("cpu"))
        return encode(x)

    monkeypatch.setattr(model, "encode_image", spy)
    score_files(model, [photo_dir], amp=True)
    assert seen and all(seen)
    seen.clear()
    score_files(model, [photo_dir])  # amp=None: bf16 on CUDA only
    assert seen and not any(seen)


@pytest.mark.slow
def test_bf16_scoring_keeps_the_ranking_of_256_demo_images(tmp_path_factory):
    """bf16 keeps rankings: CPU bf16 autocast vs fp32 on 256 images of the demo set: SRCC of the margins
    >= 0.999 and as many distinct margins. Measured with tiny: SRCC 0.9995, 256/256 distinct (max |diff| 0.02
    for margins of std 0.34); with vitb32-random: SRCC 0.9997, 256/256 (75 s, too slow for the suite)."""
    from clipiqa.data import build_demo_set
    from clipiqa.metrics import srcc
    table = build_demo_set(tmp_path_factory.mktemp("demo224"), size=224).sample(n=256, random_state=0)
    model = clipiqa.load_model("tiny", device="cpu")
    fp32 = score_files(model, list(table["path"]), amp=False)
    bf16 = score_files(model, list(table["path"]), amp=True)
    assert (fp32["status"] == "ok").all() and (bf16["status"] == "ok").all()
    a, b = fp32["logit_margin"].to_numpy(), bf16["logit_margin"].to_numpy()
    assert not np.array_equal(a, b)  # bf16 really ran
    assert srcc(a, b) >= 0.999
    assert len(np.unique(b)) == len(np.unique(a))


# ---------------------------------------------------------------------------------------------- score_files rows
def test_score_files_columns_and_margin(photo_dir):
    model = clipiqa.load_model("tiny", device="cpu")
    table = score_files(model, [photo_dir])
    assert list(table.columns) == ["path", "score", "logit_margin", "status", "error"]
    assert np.allclose(table["score"], 1 / (1 + np.exp(-table["logit_margin"])), atol=1e-6)


def _nan_model(load=None):
    model = (load or clipiqa.load_model)("tiny", device="cpu")
    with torch.no_grad():
        model.clip.visual.proj.fill_(float("nan"))
    return model


def test_non_finite_outputs_are_error_rows(photo_dir):
    table = score_files(_nan_model(), [photo_dir])
    assert (table["status"] == "error").all()
    assert table["error"].str.contains(re.escape(NON_FINITE_REASON)).all()
    assert table["score"].isna().all() and table["logit_margin"].isna().all()


def test_cli_score_with_a_nan_model_exits_2(photo_dir, tmp_path, monkeypatch):
    import clipiqa.factory
    from clipiqa.cli import main
    real = clipiqa.factory.load_model
    monkeypatch.setattr(clipiqa.factory, "load_model", lambda *a, **k: _nan_model(real))
    out = tmp_path / "scores.csv"
    assert main(["score", str(photo_dir), "--model", "tiny", "--device", "cpu", "--out", str(out)]) == 2
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["path", "score", "logit_margin", "status", "error", "model"]
    assert set(table["status"]) == {"error"} and table["error"].str.contains("non-finite score").all()


def test_score_files_passes_max_pixels(photo_dir):
    model = clipiqa.load_model("tiny", device="cpu")
    table = score_files(model, [photo_dir], max_pixels=100)
    assert (table["status"] == "error").all() and table["error"].str.contains("max_pixels").all()


# ---------------------------------------------------------------------------------------------- transform specs
def test_backbone_spec_reproduces_open_clip_preprocessing():
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image
    model = clipiqa.load_model("tiny", device="cpu")
    cfg = PreprocessCfg(**{k: v for k, v in model.source.preprocess_cfg.items()
                           if k in PreprocessCfg.__dataclass_fields__})
    reference = image_transform_v2(cfg, is_train=False)
    rng = np.random.default_rng(0)
    for shape in [(300, 500, 3), (500, 300, 3), (224, 224, 3), (90, 100, 3)]:
        im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        assert torch.equal(model.preprocess(im), reference(im))
        assert torch.equal(eval_transform(backbone_spec(model))(im), reference(im))


def test_grmp_spec_is_the_released_transform():
    from PIL import Image
    from torchvision import transforms as T
    model = clipiqa.load_model("tiny", device="cpu")
    spec = grmp_spec(model)
    assert (spec.size, spec.resize, spec.resize_mode) == (224, 244, "squash")
    reference = T.Compose([T.Resize((244, 244), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                           T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 420, 3), dtype=np.uint8))
    assert torch.equal(eval_transform(spec)(im), reference(im))
    assert train_transform(model, "grmp").transforms[0].size == (244, 244)


def test_transform_spec_validates_and_round_trips():
    spec = TransformSpec(size=224, resize=256, resize_mode="squash", mean=[0.5] * 3, std=[0.5] * 3)
    assert TransformSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="TransformSpec.resize_mode='longest'"):
        TransformSpec(resize_mode="longest")
    with pytest.raises(ValueError, match="TransformSpec.resize=200"):
        TransformSpec(size=224, resize=200)
    with pytest.raises(ValueError, match="std"):
        TransformSpec(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="unknown field"):
        TransformSpec.from_dict({"size": 224, "crop": True})


def test_zero_shot_uses_the_backbone_transform_even_on_an_adapted_model():
    model = clipiqa.load_model("tiny", device="cpu").enable_adapters()
    model.transform_spec = grmp_spec(model)
    assert model.eval_spec == grmp_spec(model)
    with model.adapters_off():
        assert model.eval_spec == backbone_spec(model)
    model.transform_spec = None
    assert model.transform_spec == backbone_spec(model)


@pytest.fixture(scope="module")
def paper_checkpoint(tmp_path_factory):
    """A tiny checkpoint adapted with augment='paper' (two text-context steps) and the photos it scores."""
    from PIL import Image
    from skimage import data

    from clipiqa.finetune import AdaptConfig, adapt
    root = tmp_path_factory.mktemp("paper")
    paths = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        image = getattr(data, name)()
        path = root / f"{name}.png"
        Image.fromarray(image).convert("RGB").resize((200, 160)).save(path)  # not square: resize modes differ
        paths.append(str(path))
    labelled = pd.DataFrame({"path": paths, "q": np.linspace(0.1, 0.9, len(paths))})
    model = clipiqa.load_model("tiny", device="cpu")
    adapt(model, labelled, AdaptConfig(trainable="text", epochs=2, batch_size=8, n_views=1, augment="grmp",
                                       lr=0.1))
    assert model.transform_spec == grmp_spec(model)
    ckpt = root / "ckpt"
    clipiqa.save_checkpoint(model, ckpt, trainable="text")
    return model, ckpt, paths


def test_paper_checkpoint_scores_identically_everywhere(paper_checkpoint, tmp_path):
    """One checkpoint, one set of numbers: score_files, `clipiqa score --prompts`, the Session and the protocol's
    evaluation give the same numbers (1e-6) for a checkpoint trained with augment='paper' - all with the paper
    transform."""
    from clipiqa.cli import main
    from clipiqa.protocol import MethodConfig, predict_table
    from clipiqa.session import Session
    trained, ckpt, paths = paper_checkpoint
    card = json.loads((ckpt / "card.json").read_text())
    assert card["eval_transform"] == grmp_spec(trained).to_dict()

    reference = score_files(trained, paths)
    loaded = clipiqa.load_model("tiny", device="cpu", prompts=ckpt)
    assert loaded.transform_spec == grmp_spec(loaded)
    via_load = score_files(loaded, paths)

    out = tmp_path / "cli.csv"
    assert main(["score", *paths, "--model", "tiny", "--device", "cpu", "--prompts", str(ckpt),
                 "--out", str(out)]) == 0
    via_cli = pd.read_csv(out)

    session = Session(tmp_path / "sess", images=paths, model_name="tiny", device="cpu")
    shutil.copytree(ckpt, session.checkpoints_dir / "paper")
    session.use_checkpoint("paper")
    via_session = session.score(paths)

    margins, scores = predict_table(loaded, pd.DataFrame({"path": paths}), MethodConfig(), with_scores=True)

    for table in (via_load, via_cli, via_session):
        assert list(table["path"]) == paths
        np.testing.assert_allclose(table["logit_margin"], reference["logit_margin"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(table["score"], reference["score"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(margins, reference["logit_margin"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(scores, reference["score"], atol=1e-6, rtol=0)

    # not vacuous: the backbone's own transform gives other numbers for the same weights
    loaded.transform_spec = None
    other = score_files(loaded, paths)
    assert np.abs(other["logit_margin"] - reference["logit_margin"]).max() > 1e-4


def test_old_cards_without_the_field_load_with_the_backbone_preprocessing(paper_checkpoint, tmp_path):
    _, ckpt, _ = paper_checkpoint
    old = tmp_path / "old"
    shutil.copytree(ckpt, old)
    card = json.loads((old / "card.json").read_text())
    del card["eval_transform"], card["integrity"]["card_fields_sha256"]  # cards that old hashed no entries
    (old / "card.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="no hash of its own entries"):
        model = clipiqa.load_model("tiny", device="cpu", prompts=old)
    assert model.transform_spec == backbone_spec(model)


def test_a_broken_card_transform_is_refused_with_its_name(paper_checkpoint, tmp_path):
    from clipiqa.checkpoint import CheckpointMismatchError
    _, ckpt, _ = paper_checkpoint
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    card = json.loads((bad / "card.json").read_text())
    card["eval_transform"]["resize_mode"] = "stretch"
    del card["integrity"]["card_fields_sha256"]  # an old card (a sealed one is refused as edited)
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning), \
            pytest.raises(CheckpointMismatchError, match="eval_transform.*resize_mode='stretch'"):
        clipiqa.load_model("tiny", device="cpu", prompts=bad)


def test_adapt_with_model_augment_keeps_the_backbone_transform(photo_dir):
    from clipiqa.finetune import AdaptConfig, adapt
    paths = sorted(map(str, photo_dir.iterdir()))
    model = clipiqa.load_model("tiny", device="cpu")
    adapt(model, pd.DataFrame({"path": paths, "q": [0.1, 0.4, 0.6, 0.9]}),
          AdaptConfig(trainable="text", epochs=1, n_views=1))
    assert model.transform_spec == backbone_spec(model)
