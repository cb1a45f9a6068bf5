"""The open_clip internals clipiqa wraps. If open_clip moves one of these, this test names it."""
import re
from pathlib import Path

import open_clip
import torch

SEAMS_VISUAL = ("_embeds", "transformer", "ln_post", "proj", "class_embedding", "conv1", "attn_pool", "pool_type")
SEAMS_CLIP = ("token_embedding", "positional_embedding", "transformer", "attn_mask", "ln_final",
              "text_projection", "text_pool_type", "text_eos_id", "logit_scale")


def test_open_clip_version_is_the_pinned_one():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    pinned = re.search(r'"open_clip_torch==([^"]+)"', pyproject).group(1)
    assert open_clip.__version__ == pinned


def test_seams_exist_and_behave():
    clip = open_clip.create_model("ViT-B-32", pretrained=None, embed_dim=64,
                                  vision_cfg={"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
                                  text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                                            "layers": 2})
    for name in SEAMS_VISUAL:
        assert hasattr(clip.visual, name), f"open_clip VisionTransformer lost .{name}"
    for name in SEAMS_CLIP:
        assert hasattr(clip, name), f"open_clip CLIP lost .{name}"
    assert callable(open_clip.transformer.text_global_pool)
    assert callable(open_clip.transform.image_transform_v2) and open_clip.transform.PreprocessCfg
    assert isinstance(clip.visual.transformer.resblocks, torch.nn.ModuleList)
    assert isinstance(clip.transformer.resblocks, torch.nn.ModuleList)
    x = torch.randn(2, 3, 64, 64)
    tokens = clip.visual._embeds(x)
    assert tokens.shape == (2, 1 + 16, 64), "visual._embeds no longer returns [B, 1 + grid, width] after ln_pre"
    with torch.no_grad():
        h = tokens
        for block in clip.visual.transformer.resblocks:
            h = block(h)
        manual = clip.visual.ln_post(h[:, 0]) @ clip.visual.proj
        torch.testing.assert_close(manual, clip.visual(x), rtol=0, atol=1e-6)
