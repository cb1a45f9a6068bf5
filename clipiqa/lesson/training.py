"""Contrastive training of the lesson CLIP from its seeded init with open_clip's own ``ClipLoss``,
deterministic from the seed (same recipe, same bytes on one machine type)."""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from PIL import Image

from ..prompts import PromptConfig, scene_prompts
from .batches import photo_contents, procedural_contents, sample_batch
from .recipe import LessonRecipe

TOKEN_EMBEDDING = "token_embedding.weight"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SceneCaptions:
    """One step's scene captions: the scene branch's prompts (tokenized), each image's scene index, the weight."""

    tokens: torch.Tensor
    labels: torch.Tensor
    weight: float
    smoothing: float = 0.0


@contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Fixed thread count, deterministic algorithms and a forked global RNG; all restored on exit."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def create_clip(model_cfg: dict[str, Any], arch: str, seed: int) -> torch.nn.Module:
    """The seeded initial model (open_clip's own modules and init) in float32 on the CPU."""
    kwargs = {k: v for k, v in model_cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg")}
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # open_clip warns "initialized randomly": we train it ourselves
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return open_clip.create_model(arch, pretrained=None, **kwargs)
    finally:
        logger.setLevel(level)


def to_batch(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Square uint8 images -> normalised ``[B, 3, size, size]``: bicubic resize (Pillow), /255, mean/std.

    For square inputs this is exactly open_clip's eval transform (Resize + CenterCrop + ToTensor + Normalize,
    bit-identical; a test checks it) at a tenth of its cost, which matters when every step draws 64 images."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    out = np.empty((len(images), 3, size, size), np.float32)
    for i, img in enumerate(images):
        if img.shape[0] != img.shape[1]:
            raise ValueError(f"to_batch takes square images, got {img.shape[:2]}")
        im = Image.fromarray(img)
        if img.shape[0] != size:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        out[i] = ((np.asarray(im, np.float32) / np.float32(255.0) - m) / s).transpose(2, 0, 1)
    return torch.from_numpy(out)


def _lr_at(step: int, recipe: LessonRecipe) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _train_step(clip: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable, x: torch.Tensor,
                tokens: torch.Tensor, lr: float, scenes: SceneCaptions | None = None) -> float:
    """One contrastive step with open_clip's ClipLoss, plus the scene captions' loss when ``scenes`` is given;
    the logit scale is kept at most 100 (as CLIP)."""
    for group in opt.param_groups:
        group["lr"] = lr
    image_features = clip.encode_image(x, normalize=True)
    text_features = clip.encode_text(tokens, normalize=True)
    scale = clip.logit_scale.exp()
    loss = loss_fn(image_features, text_features, scale)
    if scenes is not None:
        scene_features = clip.encode_text(scenes.tokens, normalize=True)
        logits = scale * image_features @ scene_features.T
        loss = loss + scenes.weight * torch.nn.functional.cross_entropy(logits, scenes.labels,
                                                                     label_smoothing=scenes.smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        clip.logit_scale.clamp_(0, math.log(100))
    return float(loss.detach())


def train_lesson(model_cfg: dict[str, Any], recipe: LessonRecipe, arch: str = "ViT-B-32",
                 progress: Progress | None = None,
                 monitor: Callable[[int, torch.nn.Module, float], None] | None = None,
                 ) -> tuple[torch.nn.Module, list[float]]:
    """Train the lesson CLIP from its seeded init; returns the model (weights rounded to ``store_dtype``, so
    it equals what is stored) and the loss per step. Same recipe, same bytes (on one machine type).

    ``progress(done, total)`` after every step; ``monitor(step, clip, loss)`` too (for curves and probes: it
    must leave the model as it found it, e.g. run under ``torch.no_grad()`` and restore ``train()``)."""
    with deterministic_torch(recipe.threads):
        clip = create_clip(model_cfg, arch, recipe.seed)
        init_tokens = clip.state_dict()[TOKEN_EMBEDDING].detach().clone()
        clip.train()
        pre = open_clip.get_model_preprocess_cfg(clip)
        size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
        tokenizer = open_clip.get_tokenizer(arch, context_length=clip.context_length)
        photos = photo_contents(recipe.train_photos)
        procs = procedural_contents(recipe.train_kinds, recipe.procedural_instances, recipe.render_size,
                                    recipe.seed)
        # Adam without weight decay: token rows that no caption uses get zero gradients and stay exactly the
        # seeded init, so storage can leave them out.
        opt = torch.optim.Adam(clip.parameters(), lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)
        loss_fn = ClipLoss()
        # The scene captions are the scene branch's own prompts (what QGR's teacher reads), in its order.
        scene_config = PromptConfig()
        scene_tokens = tokenizer(scene_prompts(scene_config))

        def batch(step: int) -> tuple[torch.Tensor, torch.Tensor, SceneCaptions | None]:
            images, captions, _, scenes = sample_batch(photos, procs, recipe, step)
            scene_captions = None
            if recipe.scene_weight and step >= recipe.scene_from:
                labels = torch.tensor([scene_config.scenes.index(s) for s in scenes])
                scene_captions = SceneCaptions(scene_tokens, labels, recipe.scene_weight, recipe.scene_smoothing)
            return to_batch(images, size, pre["mean"], pre["std"]), tokenizer(captions), scene_captions

        losses = []
        # The next batch is drawn in a second thread while torch trains on this one (NumPy, SciPy and Pillow
        # release the GIL); every batch is a pure function of its step, so this changes no byte.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(batch, 0)
            for step in range(recipe.steps):
                x, tokens, scene_captions = pending.result()
                if step + 1 < recipe.steps:
                    pending = pool.submit(batch, step + 1)
                losses.append(_train_step(clip, opt, loss_fn, x, tokens, _lr_at(step, recipe), scene_captions))
                if monitor is not None:
                    monitor(step + 1, clip, losses[-1])
                if progress is not None:
                    progress(step + 1, recipe.steps)
        clip.eval()
        if recipe.logit_scale:
            with torch.no_grad():
                clip.logit_scale.fill_(math.log(recipe.logit_scale))
        round_to_store_dtype(clip, init_tokens, recipe.store_dtype)
    return clip, losses


def round_to_store_dtype(clip: torch.nn.Module, init_tokens: torch.Tensor, dtype: str) -> None:
    """Round the weights to ``dtype`` in place, as storage will, except the token-embedding rows that training
    left untouched: they must stay bit-equal to the seeded init (``init_tokens``), or every one of the 49408 rows
    would count as changed and be stored (measured: 7.4 MB instead of < 1 MB)."""
    to = getattr(torch, dtype)
    with torch.no_grad():
        for name, p in clip.named_parameters():
            if name == TOKEN_EMBEDDING:
                changed = (p != init_tokens).any(dim=1)
                p[changed] = p[changed].to(to).float()
            else:
                p.copy_(p.to(to).float())
