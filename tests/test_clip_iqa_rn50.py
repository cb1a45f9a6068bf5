"""rn50-openai: CLIP-IQA's zero-shot configuration (ResNet-50, image at its own resolution, attention-pool positional
embedding dropped, "Good photo."/"Bad photo."), through the one inference path; adaptation is refused.

A random ResNet CLIP shrunk in depth and width stands in for OpenAI's weights: the numbers are meaningless, the
configuration and the path are what is checked."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import clipiqa
from clipiqa.inference import predict_pil
from clipiqa.clip_iqa_rn50 import ClipIqaRN50, FrozenOnlyError, attention_pool_without_position
from rehearsal import lay_hub_snapshot, rn50_folder, use_cache


@pytest.fixture
def rn50(tmp_path):
    return clipiqa.load_model("rn50-openai", weights=rn50_folder(tmp_path), device="cpu")


def images_of_sizes(*sizes):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def test_rn50_is_the_clip_iqa_configuration(rn50):
    assert isinstance(rn50, ClipIqaRN50) and rn50.frozen_only and not rn50.adapters_enabled
    assert rn50.prompt_config.antonyms == ("Good photo.", "Bad photo.")
    assert "attnpool" in dict(rn50.clip.visual.named_children())
    im = images_of_sizes((123, 301))[0]
    assert tuple(rn50.preprocess(im).shape) == (3, 123, 301)  # no resize, no crop
    mean = torch.tensor(rn50.eval_spec.mean)[:, None, None]
    std = torch.tensor(rn50.eval_spec.std)[:, None, None]
    raw = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(rn50.preprocess(im), (raw - mean) / std)


def test_pool_without_position_is_open_clips_pool_with_a_zero_embedding():
    from open_clip.modified_resnet import AttentionPool2d
    torch.manual_seed(0)
    pool = AttentionPool2d(7, 64, 4, 32).eval()
    x = torch.randn(3, 64, 7, 7)
    with torch.no_grad():
        ours = attention_pool_without_position(pool, x)
        pool.positional_embedding.zero_()
        torch.testing.assert_close(ours, pool(x), rtol=0, atol=1e-5)
        other = attention_pool_without_position(pool, torch.randn(3, 64, 5, 11))  # any grid: no 7x7 embedding
    assert other.shape == (3, 32)


def test_scores_at_native_resolution_through_the_one_path(rn50):
    images = images_of_sizes((96, 128), (160, 96), (96, 128), (64, 64))
    together = predict_pil(rn50, images, batch_size=8)  # grouped by size inside
    alone = [predict_pil(rn50, [im], batch_size=1) for im in images]
    torch.testing.assert_close(together.margin, torch.cat([p.margin for p in alone]), rtol=0, atol=1e-5)
    with torch.no_grad():
        x = rn50.preprocess(images[1])[None]
        direct = rn50.predict(x)  # IQAModel.predict -> predict_images -> predict_features
    torch.testing.assert_close(direct.margin, alone[1].margin, rtol=0, atol=1e-5)
    assert together.margin.dtype == torch.float32 and torch.isfinite(together.margin).all()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert rn50.logits(x).dtype == torch.float32  # head in fp32 whatever the encoder's precision


def test_adaptation_prompts_and_checkpoints_are_refused(rn50, tmp_path, demo_table):
    for attempt in (lambda: rn50.set_trainable("last-blocks"), lambda: rn50.set_trainable("prompts"),
                    lambda: rn50.enable_adapters(), lambda: rn50.add_visual_prompt(10),
                    lambda: rn50.add_tuned_blocks(2)):
        with pytest.raises(FrozenOnlyError, match="frozen only.*vitb16-openai"):
            attempt()
    with pytest.raises(FrozenOnlyError):
        clipiqa.adapt(rn50, demo_table.head(8), clipiqa.AdaptConfig(epochs=1))
    tiny = clipiqa.load_model("tiny")
    clipiqa.save_checkpoint(tiny, tmp_path / "ckpt")
    with pytest.raises(FrozenOnlyError, match="takes no checkpoint"):
        clipiqa.load_model("rn50-openai", weights=rn50_folder(tmp_path / "again"), prompts=str(tmp_path / "ckpt"))


def test_cli_scores_images_of_any_size_one_at_a_time(tmp_path, capsys):
    from clipiqa.cli import main
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, im in enumerate(images_of_sizes((96, 128), (160, 96), (200, 200))):
        im.save(folder / f"{i}.png")
    out = tmp_path / "scores.csv"
    assert main(["score", str(folder), "--model", "rn50-openai", "--weights", str(rn50_folder(tmp_path)),
                 "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "own resolution" in err and "random init" in err
    table = pd.read_csv(out)
    assert (table["status"] == "ok").all() and len(table) == 3


def test_rn50_resolves_from_the_hub_cache(tmp_path, monkeypatch):
    from rehearsal import random_clip
    clip, cfg, preprocess = random_clip("RN50", True, embed_dim=64,
                                        vision_cfg={"image_size": 224, "layers": [1, 1, 1, 1], "width": 16},
                                        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64,
                                                  "heads": 2, "layers": 1})
    lay_hub_snapshot(tmp_path / "hub", "timm/resnet50_clip.openai", clip, cfg, preprocess)
    use_cache(monkeypatch, tmp_path / "hub")
    model = clipiqa.load_model("rn50-openai", device="cpu")
    assert isinstance(model, ClipIqaRN50) and model.random_init
    assert "models--timm--resnet50_clip.openai" in model.source.weights
