"""Any open_clip CLIP ViT by name: ARCH:TAG, hf-hub:ORG/REPO, a local open_clip folder, presets.

Every supported family (OpenAI, LAION, DataComp, MetaCLIP, DFN) loads from a fake Hugging Face cache laid as the
hub lays a download and from a folder written by ``export_backbone``, with its own architecture flags (QuickGELU,
input size) and its tag's preprocessing (mean/std, resize mode), and then takes prompts, adaptation, explain and
checkpoints. The weights are random and the towers shrunk in depth and width (seconds, not minutes): what is
checked is the naming, the resolution and the wrapping, never quality. Unsupported towers are refused at load with
the list of what is supported, before anything is built or downloaded.
"""
from __future__ import annotations

import time

import open_clip
import pytest
import torch

import clipiqa
from clipiqa.weights import WeightsUnavailableError, export_backbone, weights_are_random, weights_line
from clipiqa.zoo import UnsupportedModelError, resolve_model, supported_archs, unsupported_reasons
from rehearsal import lay_hub_snapshot, random_clip, use_cache

# name, what distinguishes the family here
FAMILIES = {
    "ViT-B-16:openai": {"quick_gelu": True},
    "ViT-B-16:laion2b_s34b_b88k": {"quick_gelu": False},
    "ViT-L-14:laion2b_s32b_b82k": {"mean": (0.5, 0.5, 0.5)},  # lost with a bare file before (open_clip #1068)
    "ViT-B-32-256:datacomp_s34b_b86k": {"size": 256},
    "ViT-B-16-quickgelu:metaclip_fullcc": {"quick_gelu": True},
    "ViT-H-14:dfn5b": {"resize_mode": "squash"},
}


def shrunk(arch: str, quick_gelu: bool, seed: int = 0):
    """A random open_clip model with ``arch``'s structure (patch, input size, activations, pooling) and 2 thin
    blocks per tower."""
    cfg = open_clip.get_model_config(arch)
    vision = {**cfg["vision_cfg"], "layers": 2, "width": 64, "head_width": 32}
    vision.pop("mlp_ratio", None)
    text = {**cfg["text_cfg"], "layers": 2, "width": 64, "heads": 2}
    return random_clip(arch, quick_gelu, seed=seed, embed_dim=64, vision_cfg=vision, text_cfg=text)


def lay_family(tmp_path, name: str):
    preset = resolve_model(name)
    clip, cfg, preprocess = shrunk(preset.arch, preset.quick_gelu)
    tag_cfg = open_clip.get_pretrained_cfg(preset.arch, preset.tag)
    preprocess.update({k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg})
    cache = tmp_path / "hub"
    lay_hub_snapshot(cache, preset.hf_hub, clip, cfg, preprocess)
    return preset, cache


# ---------------------------------------------------------------------------------------------- naming (no build)
def test_names_resolve_without_building_anything(monkeypatch):
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("resolve_model built a model"))
    assert resolve_model("vitb16-openai").kind == "preset" and resolve_model("VITB16-OPENAI").name == "vitb16-openai"
    large = resolve_model("ViT-L-14:openai")
    assert (large.arch, large.tag, large.hf_hub, large.quick_gelu, large.kind) == \
        ("ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai", True, "tag")
    laion = resolve_model("vit-b-16:laion2b_s34b_b88k")  # architecture names are matched case-insensitively
    assert laion.arch == "ViT-B-16" and not laion.quick_gelu and laion.hf_hub.startswith("laion/")
    hub = resolve_model("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert hub.kind == "hf-hub" and hub.hf_hub == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert resolve_model("vitl14-openai").hf_hub == large.hf_hub
    with pytest.raises(ValueError, match="its tags: .*openai"):
        resolve_model("ViT-L-14:nonsense")
    with pytest.raises(ValueError, match="ARCH:TAG.*hf-hub:ORG/REPO.*local open_clip folder"):
        resolve_model("no-such-model")
    with pytest.raises(ValueError, match="hf-hub:ORG/REPO"):
        resolve_model("hf-hub:just-a-name")


@pytest.mark.parametrize("name, reason", [
    ("ViT-B-16-SigLIP:webli", "timm model"),
    ("RN50:openai", "ResNet.*rn50-openai"),
    ("coca_ViT-B-32:laion2b_s13b_b90k", "CoCa"),
    ("ViT-L-14-CLIPA:datacomp1b", "not pooled by the CLS token"),
    ("ViT-H-14-worldwide:metaclip2_worldwide", "tokenizer"),
])
def test_unsupported_towers_are_refused_at_load_with_the_list(name, reason, monkeypatch):
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("an unsupported model was built"))
    t0 = time.perf_counter()
    with pytest.raises(UnsupportedModelError, match=reason) as err:
        clipiqa.load_model(name)
    assert time.perf_counter() - t0 < 2.0
    message = str(err.value)
    for supported in ("ViT-B-16", "ViT-L-14", "openai", "laion2b", "datacomp", "metaclip", "vitb16-openai"):
        assert supported in message


def test_unsupported_reasons_on_hand_made_configs():
    vit = {"embed_dim": 64, "vision_cfg": {"layers": 2, "width": 64, "patch_size": 16},
           "text_cfg": {"layers": 2, "width": 64}}
    assert unsupported_reasons(vit) == []
    assert unsupported_reasons({**vit, "vision_cfg": {"timm_model_name": "vit_so400m"}})
    assert unsupported_reasons({**vit, "vision_cfg": {"layers": [3, 4, 6, 3]}})
    assert unsupported_reasons({**vit, "vision_cfg": {**vit["vision_cfg"], "pool_type": "avg"}})
    assert unsupported_reasons({**vit, "text_cfg": {"hf_model_name": "roberta-base"}})
    assert unsupported_reasons({**vit, "multimodal_cfg": {}})
    assert unsupported_reasons({**vit, "text_cfg": {"pool_type": "last"}})
    assert set(supported_archs()) >= {"ViT-B-16", "ViT-B-32", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-g-14"}
    assert not any("SigLIP" in a or a.startswith("RN") or "CLIPA" in a for a in supported_archs())


# ---------------------------------------------------------------------------------------------- every family
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_loads_from_the_hub_cache_and_from_an_exported_folder(name, tmp_path, monkeypatch, no_network):
    expect = FAMILIES[name]
    preset, cache = lay_family(tmp_path, name)
    use_cache(monkeypatch, cache)
    model = clipiqa.load_model(name, device="cpu")
    src = model.source
    assert src.preset == name and src.arch == preset.arch and src.random_init
    assert f"models--{preset.hf_hub.replace('/', '--')}/snapshots/" in src.weights
    assert weights_are_random(name)
    gelu = type(model.clip.visual.transformer.resblocks[0].mlp.gelu).__name__
    assert (gelu == "QuickGELU") == preset.quick_gelu
    tag = open_clip.get_pretrained_cfg(preset.arch, preset.tag)
    spec = model.transform_spec
    assert spec.mean == pytest.approx(tuple(tag["mean"])) and spec.resize_mode == tag.get("resize_mode", "shortest")
    assert spec.size == open_clip.get_model_config(preset.arch)["vision_cfg"]["image_size"]
    if "mean" in expect:
        assert spec.mean == pytest.approx(expect["mean"])
    if "size" in expect:
        assert spec.size == expect["size"]
    if "resize_mode" in expect:
        assert spec.resize_mode == expect["resize_mode"]
    line = weights_line(model)
    assert src.weights in line and src.fingerprint in line and "random init" in line

    x = torch.rand(2, 3, spec.size, spec.size)
    with torch.no_grad():
        zero_shot = model.predict(x).margin
    folder = export_backbone(model.clip, src, tmp_path / "exported")
    by_folder = clipiqa.load_model(str(folder), device="cpu")
    by_hub_name = clipiqa.load_model(f"hf-hub:{preset.hf_hub}", device="cpu")
    for other in (by_folder, by_hub_name):
        assert other.source.fingerprint == src.fingerprint and other.random_init
        assert other.transform_spec == spec
        with torch.no_grad():
            torch.testing.assert_close(other.predict(x).margin, zero_shot, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["ViT-B-16:openai", "ViT-B-32-256:datacomp_s34b_b86k"])
def test_family_takes_prompts_adaptation_explain_and_checkpoints(name, tmp_path, monkeypatch, no_network):
    from clipiqa.explain import attribute
    from clipiqa.losses import quality_loss
    _, cache = lay_family(tmp_path, name)
    use_cache(monkeypatch, cache)
    model = clipiqa.load_model(name, device="cpu")
    size = model.transform_spec.size
    x = torch.rand(4, 3, size, size)
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = model.set_trainable("last-blocks")
    assert any(n.startswith("tuned.") for n in trainable)
    model.add_visual_prompt(8)  # prompts too: the visual prompt tokens fit any grid
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = quality_loss(model.logits(x), torch.tensor([0.1, 0.4, 0.6, 0.9]))
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(params_before[n], p) for n, p in model.named_parameters() if n in params_before)
    maps = attribute(model, x[:1], "ig", n_steps=2)
    assert maps.shape == (1, size, size) and torch.isfinite(maps).all()
    clipiqa.save_checkpoint(model, tmp_path / "ckpt", trainable="last-blocks")
    with torch.no_grad():
        expected = model.eval().predict(x).margin
    again = clipiqa.load_model(prompts=str(tmp_path / "ckpt"), device="cpu")  # the card names the model
    assert again.source.preset == name
    with torch.no_grad():
        torch.testing.assert_close(again.predict(x).margin, expected, rtol=0, atol=1e-5)


def test_env_folder_by_hub_repository_name(tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    preset = resolve_model("ViT-B-32:openai")
    clip, cfg, preprocess = shrunk(preset.arch, preset.quick_gelu)
    from clipiqa.weights import ModelSource
    src = ModelSource(preset=preset.name, arch=preset.arch, weights="random-init", random_init=True, model_cfg=cfg,
                      preprocess_cfg=preprocess)
    export_backbone(clip, src, tmp_path / "weights" / "vit_base_patch32_clip_224.openai")  # `hf download --local-dir`
    monkeypatch.setenv("CLIPIQA_WEIGHTS", str(tmp_path / "weights"))
    model = clipiqa.load_model("ViT-B-32:openai", device="cpu")
    assert model.source.weights == str((tmp_path / "weights" / "vit_base_patch32_clip_224.openai").resolve())
    assert model.random_init


@pytest.mark.parametrize("name", ["ViT-L-14:openai", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                                  "vitl14-openai"])
def test_offline_without_weights_fails_fast_naming_the_ways(name, tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CLIPIQA_WEIGHTS", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        clipiqa.load_model(name)
    assert time.perf_counter() - t0 < 2.0
    for hint in ("weights=", "CLIPIQA_WEIGHTS", "hf download", "HF_HOME", resolve_model(name).hf_hub):
        assert hint in str(err.value)


def test_a_folder_without_config_is_explained(tmp_path):
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="no open_clip_config.json"):
        clipiqa.load_model(str(tmp_path / "bare"))


def test_models_command_lists_presets_and_how_to_name_any_model(capsys):
    from clipiqa.cli import main
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for text in ("vitb16-openai", "vitl14-openai", "rn50-openai", "zero-shot only", "ARCH:TAG", "hf-hub:ORG/REPO",
                 "local open_clip folder", "--all"):
        assert text in out
    assert main(["models", "--all"]) == 0
    out = capsys.readouterr().out
    assert "ViT-L-14:openai" in out and "ViT-B-16:laion2b_s34b_b88k" in out and "SigLIP" not in out
