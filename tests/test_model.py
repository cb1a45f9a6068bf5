"""The prompted model: faithful to open_clip when adapters are off, well-behaved scores, only prompts train."""
import open_clip
import pytest
import torch

import clipiqa
from clipiqa.model import IQAModel
from clipiqa.prompts import PromptConfig
from clipiqa.weights import ModelSource


def _random_vitb32():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = open_clip.create_model("ViT-B-32", pretrained=None)
    source = ModelSource(preset="test-vitb32", arch="ViT-B-32", weights="random-init", random_init=True,
                         model_cfg={}, preprocess_cfg=dict(open_clip.get_model_preprocess_cfg(clip)))
    return IQAModel(clip, open_clip.get_tokenizer("ViT-B-32"), source, PromptConfig())


@pytest.mark.parametrize("kind", ["tiny", "vitb32"])
def test_adapters_off_equals_open_clip(kind, images):
    model = clipiqa.load_model("tiny") if kind == "tiny" else _random_vitb32()
    x = images[:2]
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat.", "Bad photo."])
    with torch.no_grad(), model.adapters_off():
        torch.testing.assert_close(model.encode_image(x), model.clip.encode_image(x), rtol=0, atol=1e-6)
        # the text tower runs only the prefix up to the EOT token (causal mask): equal up to float round-off
        torch.testing.assert_close(model.encode_text(tokens), model.clip.encode_text(tokens), rtol=1e-5, atol=1e-5)
        # the antonym (zero-shot) score is CLIP's own two-way softmax
        f = model.clip.encode_image(x, normalize=True)
        t = model.clip.encode_text(model.antonym_tokens, normalize=True)
        expected = (model.clip.logit_scale.exp() * f @ t.t()).softmax(-1)[:, 0]
        torch.testing.assert_close(model.score(x), expected, rtol=0, atol=1e-5)


def test_scores_in_range_deterministic_and_batch_independent(tiny, images):
    with torch.no_grad():
        s1 = tiny.score(images)
        s2 = tiny.score(images)
        singles = torch.cat([tiny.score(images[i:i + 1]) for i in range(len(images))])
    assert s1.shape == (4,)
    assert ((s1 >= 0) & (s1 <= 1)).all()
    assert torch.equal(s1, s2)
    torch.testing.assert_close(singles, s1, rtol=0, atol=1e-5)
    assert len(set(s1.tolist())) > 1  # different images, different scores


def test_prompts_change_the_score_and_switch_restores_zero_shot(tiny, images):
    tiny.set_trainable("prompts")  # declares the visual prompts
    tiny.eval()
    with torch.no_grad():
        prompted = tiny.score(images)
        with tiny.adapters_off():
            zero_shot = tiny.score(images)
        tiny.visual_prompt.tokens.add_(0.5)
        moved = tiny.score(images)
        with tiny.adapters_off():
            zero_shot_again = tiny.score(images)
    assert not torch.allclose(prompted, zero_shot)
    assert not torch.allclose(prompted, moved)
    assert torch.equal(zero_shot, zero_shot_again)


def test_visual_prompt_tokens_enter_every_block(tiny, images):
    tiny.set_trainable("prompts")
    n = tiny.prompt_config.visual_tokens
    assert n == 100
    grid = (224 // 16) ** 2
    hidden = tiny.visual_prefix(images[:1], 1)
    assert hidden.shape[1] == 1 + n + grid
    assert tiny.visual_prompt.depth == tiny.n_visual_layers
    # the set inserted before block 1 replaces the slots left by block 0
    assert tiny.visual_prefix(images[:1], 2).shape[1] == 1 + n + grid


def test_prompt_config_validation_names_field_and_allowed():
    with pytest.raises(ValueError, match=r"PromptConfig.n_ctx=0 .*1 to 32"):
        PromptConfig(n_ctx=0)
    with pytest.raises(ValueError, match=r"PromptConfig.visual_tokens=-1"):
        PromptConfig(visual_tokens=-1)
    with pytest.raises(ValueError, match=r"PromptConfig.classnames"):
        PromptConfig(classnames=("only one",))
    assert PromptConfig.from_dict(PromptConfig(n_ctx=8).to_dict()) == PromptConfig(n_ctx=8)


def test_no_visual_prompt_config_keeps_clip_image_features(images):
    model = clipiqa.load_model("tiny", prompts=PromptConfig(visual_tokens=0))
    assert model.visual_prompt is None
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images[:2]), model.clip.encode_image(images[:2]),
                                   rtol=0, atol=1e-6)


def test_only_prompt_tensors_train_and_backbone_is_bit_identical(tiny, images):
    names = tiny.set_trainable("prompts")
    assert names and all(n.startswith(("text_prompt.", "visual_prompt.")) for n in names)
    assert not any(p.requires_grad for p in tiny.clip.parameters())
    before = {k: v.clone() for k, v in tiny.clip.state_dict().items()}
    prompts_before = {n: p.detach().clone() for n, p in tiny.adapter_parameters()}
    tiny.train()
    opt = torch.optim.SGD([p for p in tiny.parameters() if p.requires_grad], lr=1.0)
    loss = -tiny.score(images).log().mean()
    loss.backward()
    opt.step()
    for k, v in tiny.clip.state_dict().items():
        assert torch.equal(v, before[k]), k
    changed = [n for n, p in tiny.adapter_parameters() if not torch.equal(p, prompts_before[n])]
    assert "text_prompt.ctx" in changed and "visual_prompt.tokens" in changed


def test_paper_set_tunes_copies_and_leaves_clip_untouched(tiny, images):
    with torch.no_grad():
        before = tiny.score(images)
    names = tiny.set_trainable("last-blocks", k=4)
    assert tiny.n_tuned_blocks == 1  # the 2-block tiny model tunes its last block
    assert "text_prompt.ctx" in names and not any(n.startswith("visual_prompt.") for n in names)
    assert tiny.first_trainable_visual_block() == 1
    with torch.no_grad():
        torch.testing.assert_close(tiny.score(images), before, rtol=0, atol=1e-6)  # copies start identical
        for p in tiny.tuned.parameters():
            p.add_(0.01)
        assert not torch.allclose(tiny.score(images), before)
        with tiny.adapters_off():
            zero_shot = tiny.score(images)
            torch.testing.assert_close(tiny.encode_image(images), tiny.clip.encode_image(images), rtol=0, atol=1e-6)
    assert zero_shot.shape == before.shape


@pytest.mark.parametrize("trainable", ["prompts", "last-blocks"])
def test_prefix_path_equals_full_forward(tiny, images, trainable):
    tiny.set_trainable(trainable)
    tiny.eval()
    with torch.no_grad():
        full = tiny.encode_image(images)
        for start in range(tiny.n_visual_layers + 1):
            resumed = tiny.encode_image_from(tiny.visual_prefix(images, start), start)
            torch.testing.assert_close(resumed, full, rtol=0, atol=1e-6)


def test_text_features_are_cached_until_a_tensor_changes(tiny):
    with torch.no_grad():
        a = tiny.quality_text_features()
        assert tiny.quality_text_features() is a  # cached, not recomputed
        tiny.text_prompt.ctx.add_(0.1)
        b = tiny.quality_text_features()
    assert b is not a and not torch.allclose(a, b)
    tiny.set_trainable("prompts")
    assert tiny.quality_text_features().requires_grad  # training needs the graph


def test_scene_branch_has_nine_scenes_and_botanical_label(tiny, images):
    assert clipiqa.SCENES[6] == "plant" and "botanical" in clipiqa.SCENE_LABELS["plant"]
    with torch.no_grad():
        logits = tiny.scene_logits(images)
    assert logits.shape == (4, 9)


def test_device_resolution_errors_are_actionable():
    from clipiqa.factory import resolve_device
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_a_fresh_model_scores_zero_shot_until_adapted(images, tmp_path):
    fresh = clipiqa.load_model("tiny")
    assert not fresh.adapters_enabled  # untrained prompts would score nothing useful
    with torch.no_grad():
        zero_shot = fresh.score(images)
        with fresh.adapters_off():
            torch.testing.assert_close(fresh.score(images), zero_shot, rtol=0, atol=0)
    fresh.set_trainable("prompts")
    assert fresh.adapters_enabled
    clipiqa.save_checkpoint(fresh, tmp_path / "ckpt")
    assert clipiqa.load_model("tiny", prompts=tmp_path / "ckpt").adapters_enabled


# ---------------------------------------------------------------------------------------------- declared adapters
def test_paper_set_on_a_fresh_model_gives_exactly_the_frozen_clip_image_features(images):
    model = clipiqa.load_model("tiny")
    names = model.set_trainable("last-blocks")
    assert model.adapters_enabled and model.visual_prompt is None and model.n_tuned_blocks == 1
    assert not any(n.startswith("visual_prompt.") for n in names)
    assert model.adapter_spec == {"n_ctx": 4, "visual_tokens": 0, "visual_depth": None, "tuned_blocks": 1}
    model.eval()
    with torch.no_grad():
        ours, clip = model.encode_image(images), model.clip.encode_image(images)
    assert torch.nn.functional.cosine_similarity(ours, clip).min() >= 1 - 1e-6
    torch.testing.assert_close(ours, clip, rtol=0, atol=1e-6)


def test_prompts_set_declares_visual_prompts_and_builds_them():
    model = clipiqa.load_model("tiny")
    assert model.visual_prompt is None and model.prompt_config.visual_tokens == 0
    names = model.set_trainable("prompts")
    assert model.visual_prompt.n_tokens == 100 and model.visual_prompt.depth == model.n_visual_layers
    assert "visual_prompt.tokens" in names and "visual_prompt.proj.weight" in names
    assert model.adapter_spec == {"n_ctx": 4, "visual_tokens": 100, "visual_depth": None, "tuned_blocks": 0}
    # declared sizes are kept; paper on top keeps them, frozen
    small = clipiqa.load_model("tiny", prompts=PromptConfig(visual_tokens=8, visual_depth=1))
    assert small.visual_prompt.n_tokens == 8 and small.visual_prompt.depth == 1
    small.set_trainable("prompts")
    assert small.visual_prompt.n_tokens == 8
    names = small.set_trainable("last-blocks")
    assert small.visual_prompt.n_tokens == 8 and not any(n.startswith("visual_prompt.") for n in names)


def test_adapter_declaration_is_validated():
    with pytest.raises(ValueError, match=r"PromptConfig.visual_depth=0 is not allowed"):
        PromptConfig(visual_depth=0)
    with pytest.raises(ValueError, match=r"PromptConfig.visual_tokens=True is not allowed"):
        PromptConfig(visual_tokens=True)


SCENE_TOKEN_IDS = {  # open_clip's tokenizer (ViT-B-16 and the tiny preset's ViT-B-32); checked by decoding
    "animal": [49406, 320, 1125, 539, 320, 4668, 49407],
    "cityscape": [49406, 320, 1125, 539, 320, 40808, 49407],
    "human": [49406, 320, 1125, 539, 320, 2751, 49407],
    "indoor": [49406, 320, 1125, 539, 320, 9546, 49407],
    "landscape": [49406, 320, 1125, 539, 320, 5727, 49407],
    "night": [49406, 320, 1125, 539, 320, 930, 49407],
    "plant": [49406, 320, 1125, 539, 320, 3912, 49407],
    "still_life": [49406, 320, 1125, 539, 320, 1170, 318, 970, 49407],  # still _ life: the raw name
    "others": [49406, 320, 1125, 539, 320, 3326, 49407],
}


def test_scene_prompts_are_the_released_ones_token_for_token(tiny):
    from clipiqa.prompts import scene_prompts
    texts = scene_prompts(PromptConfig())
    assert texts[7] == "a photo of a still_life" and all(not t.endswith(".") for t in texts)
    vitb16 = open_clip.get_tokenizer("ViT-B-16")(texts)
    for tokens in (vitb16, tiny.scene_tokens):
        got = {s: [int(i) for i in row if i != 0] for s, row in zip(clipiqa.SCENES, tokens)}
        assert got == SCENE_TOKEN_IDS


def test_visual_prompt_projection_and_norm_are_initialised_as_released():
    import math
    from clipiqa.prompts import VisualPrompt
    torch.manual_seed(0)
    vp = VisualPrompt(n_tokens=4, depth=2, width=256, patch_size=16)
    w = vp.proj.weight.detach()
    # kaiming-normal, fan-out: N(0, 2 / fan_out); PyTorch's default would be uniform within 1 / sqrt(fan_in)
    assert abs(w.std().item() - math.sqrt(2 / 256)) < 0.03 * math.sqrt(2 / 256)
    assert w.abs().max().item() > 1 / math.sqrt(256)
    # the bias keeps nn.Linear's default as the released code leaves it
    assert vp.proj.bias.abs().max().item() <= 1 / math.sqrt(256) and vp.proj.bias.abs().sum() > 0
    assert vp.norm.eps == 1e-6
