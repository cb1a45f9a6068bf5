"""CLIP-IQA's zero-shot configuration of a ResNet CLIP (the ``rn50-openai`` preset), so analysts can put clipiqa's
numbers beside the published CLIP-IQA ones.

As CLIP-IQA evaluates it: OpenAI's ResNet-50, the antonym prompts "Good photo." / "Bad photo.", each image at its
**own resolution** (no resize, no crop: only CLIP's mean/std), and the attention pool's **positional embedding
dropped** (it was learned for a 7x7 grid; without it the pool takes any grid).

:class:`ClipIqaRN50` is an :class:`clipiqa.model.IQAModel` whose image side is that ResNet; the text side, the
quality head and every score go through the same code (``clipiqa.inference.predict_images`` ->
``predict_features``: head in fp32 outside autocast). Everything learnable is refused with
:class:`FrozenOnlyError`: prompts, visual prompts, tuned blocks, checkpoints, adaptation.

Batch scoring: images keep their sizes, so a batch holds images of one size only. ``predict_pil`` groups a batch
by size; ``clipiqa score`` scores such a model one image at a time (``--batch-size`` is set to 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import transforms as T

from .data.transforms import ConvertRGB
from .inference import no_autocast
from .model import IQAModel

REFUSAL = ("model {name!r} is CLIP-IQA's zero-shot configuration (ResNet-50, image at its own resolution): it is "
           "frozen only (it scores zero-shot), so {what} is not available. Adaptation, prompts, checkpoints and "
           "Grad-CAM on patch tokens need a ViT backbone such as vitb16-openai (`clipiqa models` lists them)")


class FrozenOnlyError(ValueError):
    """Something learnable was asked of a frozen-only model (``Preset.frozen_only``: CLIP-IQA's RN50)."""


def attention_pool_without_position(pool: nn.Module, x: Tensor) -> Tensor:
    """open_clip's ``AttentionPool2d`` on a feature map ``[B, C, H, W]`` of any size, with its positional
    embedding left out (CLIP-IQA): the mean token attends over the mean token and every position, through the
    pool's own projections. Returns ``[B, output_dim]``."""
    b, c, h, w = x.shape
    tokens = x.reshape(b, c, h * w).permute(2, 0, 1)  # (HW) B C
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)  # (HW + 1) B C
    out, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=c, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
    return out[0]


def native_transform(mean, std):
    """PIL image -> normalised tensor at the image's own size (no resize, no crop)."""
    return T.Compose([ConvertRGB(), T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])


class ClipIqaRN50(IQAModel):
    """CLIP-IQA's zero-shot ResNet scorer; see the module docstring. ``score``/``predict``/``forward`` work as for
    every ``IQAModel``; learnable parts are refused."""

    frozen_only = True
    native_resolution = True  # each image is scored at its own size

    def _refuse(self, what: str) -> FrozenOnlyError:
        return FrozenOnlyError(REFUSAL.format(name=self.source.preset, what=what))

    # ------------------------------------------------------------------ the image side: the ResNet
    def encode_image(self, images: Tensor) -> Tensor:
        """Unnormalised image features of the ResNet at the input's own size, positional embedding dropped. The
        stem (the pixel stage) runs in fp32 whatever the caller's autocast; the later stages follow it."""
        visual = self.clip.visual
        with no_autocast(images.device.type):  # the pixel stage stays fp32 (clipiqa.inference.PIXEL_STAGE_BLOCKS)
            x = visual.stem(images.to(visual.conv1.weight.dtype))
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        return attention_pool_without_position(visual.attnpool, x)

    def encode_image_from(self, hidden: Tensor, start: int) -> Tensor:
        if start:
            raise self._refuse("the prefix cache of fine-tuning")
        return self.encode_image(hidden)

    def visual_prefix(self, images: Tensor, stop: int) -> Tensor:
        raise self._refuse("the ViT token path (prefix cache, Grad-CAM on patch tokens)")

    @property
    def n_visual_layers(self) -> int:
        raise self._refuse("the ViT block structure")

    # ------------------------------------------------------------------ learnable parts: refused
    def enable_adapters(self, enabled: bool = True) -> "ClipIqaRN50":
        if enabled:
            raise self._refuse("adaptation (learned prompts)")
        self.adapters_enabled = False
        return self

    def set_trainable(self, which: str, k: int = 4) -> list[str]:
        if which != "none":
            raise self._refuse(f"the trainable set {which!r}")
        return []

    def add_visual_prompt(self, n_tokens: int = 0, depth: int | None = None) -> None:
        if n_tokens:
            raise self._refuse("visual prompts")

    def add_tuned_blocks(self, k: int) -> None:
        raise self._refuse("tuned blocks")

    def first_trainable_visual_block(self) -> int:
        raise self._refuse("fine-tuning")

    # ------------------------------------------------------------------ preprocessing: own resolution
    @property
    def preprocess(self):
        """PIL image -> tensor at the image's own size, normalised with the backbone's mean/std."""
        spec = self.eval_spec
        return native_transform(spec.mean, spec.std)


__all__ = ["ClipIqaRN50", "FrozenOnlyError", "attention_pool_without_position", "native_transform"]
