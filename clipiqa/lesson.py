"""The ``lesson`` model: a small open_clip CLIP trained here, by our own code, on synthetic distortions.

It is a **toy**: it shows that the toolkit's machinery learns (zero-shot antonym prompts that rank distortion
levels, adaptation that helps), never how real CLIP behaves. Read top to bottom:

1. ``LessonRecipe``: the training recipe, stored in ``clipiqa/presets/lesson.json`` (with the held-out lists).
2. Contents: crops of the embedded demo photos and procedural images (``clipiqa.data.procedural``), made and
   distorted at the model's own input size (64 px, patch 8), so the tower sees blur and noise pixel for pixel.
3. Captions about quality first: the zero-shot strings themselves ("Good photo." / "Bad photo.", "high quality."
   / "low quality."), graded by severity, and "a very blurry photo." / "a slightly noisy photo." / "a clean photo."
4. ``train_lesson``: contrastive training with open_clip's own ``ClipLoss`` on batches generated on the fly.
   Each batch holds groups of variants of one crop (clean, slightly noisy, very blurry, ...), so captions that
   differ only in their quality words are each other's hard negatives. Deterministic from the seed.
5. Storage: only what training changed (every tensor but the untouched rows of the 49408-row token embedding,
   which stay the seeded init), in float16, with the SHA-256 of the whole assembled state. Committed as
   ``clipiqa/presets/lesson.safetensors``; when it is missing or stale (the recipe changed), built on first use
   into ``$CLIPIQA_CACHE/lesson-<config hash>/`` (default ``~/.cache/clipiqa``) under a file lock.
6. ``zero_shot_table``: the frozen model's antonym-prompt margin on distorted held-out contents (what the tests
   and notebooks measure).

``python -m clipiqa.lesson build [--out FILE]`` trains and writes the weights (to refresh the committed file).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .configs import from_dict, invalid
from .data.demo import PHOTOS, _load_photo, stable_seed
from .data.distortions import DISTORTIONS, apply_distortion
from .data.procedural import KINDS, PHRASES, procedural_image

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "clipiqa-lesson-1"
WEIGHTS_NAME = "lesson.safetensors"
TOKEN_EMBEDDING = "token_embedding.weight"
Progress = Callable[[int, int], None]

# What captions call each photo, and its scene in the model's scene branch (SCENES of clipiqa.prompts).
PHOTO_PHRASES: dict[str, str] = {
    "astronaut": "an astronaut", "chelsea": "a cat", "coffee": "a cup of coffee", "rocket": "a rocket",
    "motorcycle": "a motorcycle", "hubble_deep_field": "galaxies in space",
    "immunohistochemistry": "a stained tissue sample", "retina": "a retina scan", "china": "a temple",
    "flower": "a flower", "grace_hopper": "a woman in uniform",
}
PHOTO_SCENES: dict[str, str] = {
    "astronaut": "human", "chelsea": "animal", "coffee": "still life", "rocket": "others",
    "motorcycle": "indoor", "hubble_deep_field": "night", "immunohistochemistry": "others", "retina": "others",
    "china": "cityscape", "flower": "plant", "grace_hopper": "human",
}

# Quality words. Adverbs by level (1..5); words by distortion type (the first is the family word).
SEVERITY = ("", "slightly", "somewhat", "", "very", "extremely")
CLEAN_WORDS = ("sharp clean", "clean", "sharp", "high quality", "good", "pristine")
TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "gaussian_blur": ("blurry",), "lens_blur": ("blurry", "out of focus"), "motion_blur": ("blurry", "shaky"),
    "white_noise": ("noisy",), "colour_noise": ("noisy", "color noisy"), "impulse_noise": ("noisy", "speckled"),
    "multiplicative_noise": ("noisy", "grainy"), "jpeg": ("compressed", "blocky"),
    "jpeg2000": ("compressed", "smeared"),
}
# Probability that a picture of a level (0 = clean .. 5) is captioned "Good photo." rather than "Bad photo."
# (and "high quality." rather than "low quality."): linear in the level, so the antonym margin grades with severity.
P_GOOD = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)
# The zero-shot antonym prompts and the quality class words, exactly as clipiqa.prompts.PromptConfig defaults
# them (a test checks): training on these very strings is what lets the frozen model's antonym margin rank quality.
ANTONYMS = ("Good photo.", "Bad photo.")
CLASS_CAPTIONS = ("high quality.", "low quality.")
CAPTION_MODES = ("full", "no_quality", "shuffled")


# ------------------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class LessonRecipe:
    """How the lesson model is trained (validated at construction; stored in the preset JSON).

    pretrain_types: distortion types seen in training; heldout_types: kept for held-out experiments.
    train_photos / heldout_photos, train_kinds / heldout_kinds: contents seen / kept out (procedural kinds).
    captions: "full" (the recipe); "no_quality" and "shuffled" are deliberately broken variants (captions
    without quality words / shuffled across the batch) that the tests use to show learning can fail.
    """

    pretrain_types: tuple[str, ...]
    heldout_types: tuple[str, ...]
    train_photos: tuple[str, ...]
    heldout_photos: tuple[str, ...]
    train_kinds: tuple[str, ...]
    heldout_kinds: tuple[str, ...]
    seed: int = 0
    steps: int = 400
    groups: int = 16
    variants: int = 4
    lr: float = 2e-3
    warmup: int = 40
    clean_fraction: float = 0.25
    antonym_fraction: float = 0.3
    content_fraction: float = 0.0
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    photo_fraction: float = 0.5
    procedural_instances: int = 12
    render_size: int = 256
    captions: str = "full"
    threads: int = 1
    store_dtype: str = "float16"

    def __post_init__(self) -> None:
        for name in ("pretrain_types", "heldout_types", "train_photos", "heldout_photos", "train_kinds",
                     "heldout_kinds", "level_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check_names("pretrain_types", DISTORTIONS, need=True)
        self._check_names("heldout_types", DISTORTIONS)
        self._check_names("train_photos", PHOTOS, need=True)
        self._check_names("heldout_photos", PHOTOS)
        self._check_names("train_kinds", KINDS, need=True)
        self._check_names("heldout_kinds", KINDS)
        for a, b in (("pretrain_types", "heldout_types"), ("train_photos", "heldout_photos"),
                     ("train_kinds", "heldout_kinds")):
            both = set(getattr(self, a)) & set(getattr(self, b))
            if both:
                invalid("LessonRecipe", b, getattr(self, b), f"remove {sorted(both)}: they are also in {a}")
        missing_words = [t for t in self.pretrain_types if t not in TYPE_WORDS]
        if missing_words:
            invalid("LessonRecipe", "pretrain_types", self.pretrain_types,
                    f"captions have no quality words for {missing_words}; add them to TYPE_WORDS or use "
                    f"types from {sorted(TYPE_WORDS)}")
        for name in ("steps", "groups", "variants", "procedural_instances", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                invalid("LessonRecipe", name, value, "use a positive integer")
        if not isinstance(self.warmup, int) or not 0 <= self.warmup <= self.steps:
            invalid("LessonRecipe", "warmup", self.warmup, f"use an integer from 0 to steps ({self.steps})")
        if not self.lr > 0:
            invalid("LessonRecipe", "lr", self.lr, "use a positive learning rate (e.g. 2e-3)")
        for name in ("clean_fraction", "photo_fraction", "antonym_fraction", "content_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                invalid("LessonRecipe", name, getattr(self, name), "use a fraction in [0, 1]")
        if len(self.level_weights) != 5 or min(self.level_weights) < 0 or sum(self.level_weights) <= 0:
            invalid("LessonRecipe", "level_weights", self.level_weights,
                    "give 5 non-negative weights (levels 1..5), not all zero")
        if not isinstance(self.render_size, int) or self.render_size < 32:
            invalid("LessonRecipe", "render_size", self.render_size, "use an integer of at least 32 pixels")
        if self.captions not in CAPTION_MODES:
            invalid("LessonRecipe", "captions", self.captions, f"use one of {CAPTION_MODES}")
        if self.store_dtype not in ("float16", "float32"):
            invalid("LessonRecipe", "store_dtype", self.store_dtype, "use 'float16' or 'float32'")

    def _check_names(self, name: str, valid: Any, need: bool = False) -> None:
        value = getattr(self, name)
        unknown = [v for v in value if v not in valid]
        if unknown or (need and not value):
            invalid("LessonRecipe", name, value, f"use a non-empty subset of: {', '.join(valid)}" if need
                    else f"unknown {unknown}; valid: {', '.join(valid)}")

    @property
    def batch_size(self) -> int:
        return self.groups * self.variants

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data) -> "LessonRecipe":
        return from_dict(cls, data)


def config_hash(model_cfg: dict[str, Any], recipe: LessonRecipe) -> str:
    """Everything that determines the weights: model config, recipe, distortion parameters, caption tables."""
    blob = {
        "format": FORMAT, "model_cfg": model_cfg, "recipe": recipe.to_dict(),
        "distortions": {t: repr(DISTORTIONS[t].levels) for t in recipe.pretrain_types},
        "captions": [SEVERITY, CLEAN_WORDS, {t: TYPE_WORDS[t] for t in recipe.pretrain_types}, P_GOOD,
                     ANTONYMS, CLASS_CAPTIONS, PHOTO_PHRASES, PHOTO_SCENES, PHRASES],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ contents
@dataclass(frozen=True)
class Content:
    """One content: a name, what captions call it, its scene, and its image(s) (uint8 H x W x 3)."""

    name: str
    phrase: str
    scene: str
    image: np.ndarray


def photo_contents(names: Sequence[str]) -> list[Content]:
    """The demo photos at full resolution (those that load here)."""
    out = []
    for name in names:
        img = _load_photo(name)
        if img is not None:
            out.append(Content(name, PHOTO_PHRASES[name], PHOTO_SCENES[name], img))
    return out


def procedural_contents(kinds: Sequence[str], instances: int, size: int, seed: int) -> list[Content]:
    """``instances`` images of every procedural kind, each from its own stable seed."""
    return [Content(f"{kind}#{i}", PHRASES[kind], "others",
                    procedural_image(kind, stable_seed(seed, "procedural", kind, i), size))
            for kind in kinds for i in range(instances)]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of side between ``size`` and the short side, resized to ``size`` (never upsampled
    unless the image is smaller than ``size``), randomly mirrored."""
    h, w = img.shape[:2]
    short = min(h, w)
    side = int(rng.integers(min(size, short), short + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[top:top + side, left:left + side]
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ captions
def quality_caption(rng: np.random.Generator, phrase: str, scene: str, distortion: str | None, level: int,
                    antonym_fraction: float = 0.3, content_fraction: float = 0.0) -> str:
    """One caption whose words are about quality. ``level`` 0 = clean (``distortion`` None), 1..5 = severity.

    With probability ``antonym_fraction`` it is one of the zero-shot strings themselves: ``ANTONYMS`` ("Good
    photo." / "Bad photo.", 60 %) or ``CLASS_CAPTIONS`` ("high quality." / "low quality."), the good one with
    probability ``P_GOOD[level]``. Otherwise it names the distortion family and its severity ("a very blurry
    photo.", "a clean photo."), naming the content too ("... photo of a rocket.") with probability
    ``content_fraction``. Quality words dominate on purpose: measured, content-first captions (the first recipe)
    left the antonym margin at chance after 400 steps, since content alone nearly solves a batch's matching."""
    if rng.random() < antonym_fraction:
        good = rng.random() < P_GOOD[level]
        pair = ANTONYMS if rng.random() < 0.6 else CLASS_CAPTIONS
        return pair[0] if good else pair[1]
    tail = f" of {phrase}." if rng.random() < content_fraction else "."
    if level == 0:
        return f"a {CLEAN_WORDS[rng.integers(len(CLEAN_WORDS))]} photo{tail}"
    words = TYPE_WORDS[distortion]
    word = words[rng.integers(len(words))]
    return " ".join(w for w in ("a", SEVERITY[level], word, "photo") if w) + tail


def content_caption(rng: np.random.Generator, phrase: str, scene: str) -> str:
    """A caption without quality words (the broken ``no_quality`` variant)."""
    return f"a photo of {phrase}." if rng.random() < 0.8 else f"a photo of a {scene}."


# ------------------------------------------------------------------------------------------------- batches
def sample_batch(contents_photo: Sequence[Content], contents_proc: Sequence[Content], recipe: LessonRecipe,
                 step: int) -> tuple[list[np.ndarray], list[str], list[int]]:
    """Images (uint8, ``render_size``), captions and levels of one training step: a pure function of
    (recipe, step). ``recipe.groups`` crops, each in ``recipe.variants`` versions (clean or distorted)."""
    rng = np.random.default_rng(stable_seed(recipe.seed, "lesson-step", step))
    images, captions, levels = [], [], []
    size = recipe.render_size
    for _ in range(recipe.groups):
        pool = contents_photo if (rng.random() < recipe.photo_fraction or not contents_proc) else contents_proc
        content = pool[int(rng.integers(len(pool)))]
        crop = random_crop(content.image, size, rng)
        for _ in range(recipe.variants):
            if rng.random() < recipe.clean_fraction:
                distortion, level, img = None, 0, crop
            else:
                distortion = recipe.pretrain_types[int(rng.integers(len(recipe.pretrain_types)))]
                level = int(rng.choice(5, p=np.asarray(recipe.level_weights) / sum(recipe.level_weights))) + 1
                img = apply_distortion(crop, distortion, level, rng=int(rng.integers(2 ** 63 - 1)))
            if recipe.captions == "no_quality":
                captions.append(content_caption(rng, content.phrase, content.scene))
            else:
                captions.append(quality_caption(rng, content.phrase, content.scene, distortion, level,
                                                recipe.antonym_fraction, recipe.content_fraction))
            images.append(img)
            levels.append(level)
    if recipe.captions == "shuffled":
        order = rng.permutation(len(captions))
        captions = [captions[i] for i in order]
    return images, captions, levels


# ---------------------------------------------------------------------------------------------- training
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
    import open_clip
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
                tokens: torch.Tensor, lr: float) -> float:
    """One contrastive step with open_clip's ClipLoss; the logit scale is kept at most 100 (as CLIP)."""
    for group in opt.param_groups:
        group["lr"] = lr
    image_features = clip.encode_image(x, normalize=True)
    text_features = clip.encode_text(tokens, normalize=True)
    loss = loss_fn(image_features, text_features, clip.logit_scale.exp())
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
    import open_clip
    from open_clip.loss import ClipLoss

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

        def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            images, captions, _ = sample_batch(photos, procs, recipe, step)
            return to_batch(images, size, pre["mean"], pre["std"]), tokenizer(captions)

        losses = []
        # The next batch is drawn in a second thread while torch trains on this one (NumPy, SciPy and Pillow
        # release the GIL); every batch is a pure function of its step, so this changes no byte.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(batch, 0)
            for step in range(recipe.steps):
                x, tokens = pending.result()
                if step + 1 < recipe.steps:
                    pending = pool.submit(batch, step + 1)
                losses.append(_train_step(clip, opt, loss_fn, x, tokens, _lr_at(step, recipe)))
                if monitor is not None:
                    monitor(step + 1, clip, losses[-1])
                if progress is not None:
                    progress(step + 1, recipe.steps)
        clip.eval()
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


# ------------------------------------------------------------------------------------------------- storage
def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, shape and float32 bytes (the whole state, unlike the quick
    ``weights.fingerprint``)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().float().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def delta_tensors(trained: torch.nn.Module, init: torch.nn.Module, dtype: str) -> dict[str, torch.Tensor]:
    """What training changed: every parameter and persistent buffer except the token embedding, plus the token
    embedding rows that differ from the init (``token_embedding.rows`` / ``token_embedding.values``)."""
    trained_state, init_state = trained.state_dict(), init.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, value in trained_state.items():
        if name == TOKEN_EMBEDDING:
            changed = (value != init_state[name]).any(dim=1).nonzero().flatten()
            out["token_embedding.rows"] = changed.to(torch.int64).contiguous()
            out["token_embedding.values"] = value[changed].to(getattr(torch, dtype)).contiguous()
        else:
            out[name] = value.detach().to(getattr(torch, dtype) if value.is_floating_point() else value.dtype
                                          ).contiguous()
    return out


def apply_delta(init: torch.nn.Module, delta: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Write stored tensors into the seeded init model (in place) and return it."""
    state = init.state_dict()
    with torch.no_grad():
        for name, value in delta.items():
            if name.startswith("token_embedding."):
                continue
            if name not in state:
                raise ValueError(f"stored lesson tensor {name!r} does not exist in the model; the weights file "
                                 "does not match the lesson config")
            state[name].copy_(value.to(state[name].dtype))
        rows = delta["token_embedding.rows"]
        state[TOKEN_EMBEDDING][rows] = delta["token_embedding.values"].float()
    return init


def write_weights(path: Path, clip: torch.nn.Module, init: torch.nn.Module, recipe: LessonRecipe,
                  cfg_hash: str, extra: dict[str, str] | None = None) -> Path:
    """Write the delta file atomically (temporary file in the same folder + rename)."""
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "config_hash": cfg_hash, "state_sha256": state_sha256(clip.state_dict()),
                "torch": torch.__version__, **(extra or {})}
    fd, tmp = tempfile.mkstemp(suffix=".safetensors.tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(delta_tensors(clip, init, recipe.store_dtype), tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: a shared cache or a packaged file must be readable by all
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class StaleWeightsError(ValueError):
    """A stored lesson file does not match the config, or assembles to another state than it was saved from."""


def read_weights(path: Path, model_cfg: dict[str, Any], recipe: LessonRecipe, arch: str) -> torch.nn.Module:
    """Assemble the model from a delta file; refuse it (StaleWeightsError) unless the config hash and the
    assembled state's SHA-256 match what the file records."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    expected = config_hash(model_cfg, recipe)
    if meta.get("format") != FORMAT or meta.get("config_hash") != expected:
        raise StaleWeightsError(f"{path} was made for lesson config {meta.get('config_hash')} "
                                f"({meta.get('format')}), this config is {expected}")
    with deterministic_torch(recipe.threads):
        clip = apply_delta(create_clip(model_cfg, arch, recipe.seed), load_file(str(path)))
    got = state_sha256(clip.state_dict())
    if got != meta.get("state_sha256"):
        raise StaleWeightsError(f"{path} assembles to state {got[:16]}, not the recorded "
                                f"{str(meta.get('state_sha256'))[:16]} (the seeded init differs here)")
    return clip.eval()


def build_weights(path: Path, model_cfg: dict[str, Any], recipe: LessonRecipe, arch: str = "ViT-B-32",
                  progress: Progress | None = None) -> torch.nn.Module:
    """Train and write the lesson weights to ``path``; returns the trained model."""
    clip, losses = train_lesson(model_cfg, recipe, arch, progress)
    with deterministic_torch(recipe.threads):
        init = create_clip(model_cfg, arch, recipe.seed)
    write_weights(path, clip, init, recipe, config_hash(model_cfg, recipe),
                  {"final_loss": f"{np.mean(losses[-20:]):.4f}"})
    return clip


# --------------------------------------------------------------------------------------------- resolution
def committed_path() -> Path:
    """The committed weights file beside the preset JSON (it may be absent, e.g. in a trimmed install)."""
    return Path(str(resources.files("clipiqa").joinpath("presets", WEIGHTS_NAME)))


def cache_root() -> Path:
    return Path(os.environ.get("CLIPIQA_CACHE") or Path.home() / ".cache" / "clipiqa")


def cache_path(cfg_hash: str) -> Path:
    return cache_root() / f"lesson-{cfg_hash}" / WEIGHTS_NAME


def _tqdm_progress(desc: str) -> Progress:
    from tqdm.auto import tqdm
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, mininterval=1.0)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update


def load_lesson(model_cfg: dict[str, Any], recipe: LessonRecipe, arch: str = "ViT-B-32",
                progress: Progress | None = None, use_committed: bool = True) -> tuple[torch.nn.Module, str]:
    """The lesson CLIP and a line saying where its weights came from.

    Order: the committed file (when it matches this config) -> the cache -> build into the cache (under a file
    lock, so processes building at once wait for one build; written atomically). ``progress`` defaults to a
    tqdm bar on stderr while building."""
    cfg_hash = config_hash(model_cfg, recipe)
    committed = committed_path()
    if use_committed and committed.is_file():
        try:
            return read_weights(committed, model_cfg, recipe, arch), f"lesson:committed {committed} ({cfg_hash})"
        except StaleWeightsError as e:
            logging.getLogger(__name__).warning("committed lesson weights not used: %s; using the cache", e)
    target = cache_path(cfg_hash)
    from filelock import FileLock
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / "build.lock")):
        if target.is_file():
            try:
                return read_weights(target, model_cfg, recipe, arch), f"lesson:cache {target}"
            except StaleWeightsError as e:
                logging.getLogger(__name__).warning("cached lesson weights rebuilt: %s", e)
        build_weights(target, model_cfg, recipe, arch,
                      progress or _tqdm_progress("building the lesson model (first use, ~5 min)"))
        return read_weights(target, model_cfg, recipe, arch), f"lesson:built {target}"


# ---------------------------------------------------------------------------------------------- measuring
def lesson_image_size() -> int:
    """The lesson model's input side in pixels (from its preset)."""
    from .presets import get_preset
    return int(get_preset("lesson").model_cfg["vision_cfg"]["image_size"])


def held_out_images(photos: Sequence[str] = (), kinds: Sequence[str] = (), types: Sequence[str] = (),
                    levels: Sequence[int] = (1, 2, 3, 4, 5), size: int | None = None, seed: int = 0,
                    instances: int = 2) -> list[dict[str, Any]]:
    """Rows ``{content, distortion, level, image}``: every content clean (level 0) and at every (type, level);
    photos centre-cropped like the demo set, procedural kinds ``instances`` times from evaluation seeds.

    ``size`` defaults to the lesson model's input size: images are distorted at the resolution the model sees,
    as in training (distorting at 256 px and letting the model's resize shrink them erases most noise and blur)."""
    from .data.demo import demo_references
    size = lesson_image_size() if size is None else int(size)
    refs = dict(demo_references(size, photos)) if photos else {}
    for kind in kinds:
        for i in range(instances):
            refs[f"{kind}#eval{i}"] = procedural_image(kind, stable_seed(seed, "eval", kind, i), size)
    rows = []
    for content, ref in refs.items():
        rows.append({"content": content, "distortion": "reference", "level": 0, "image": ref})
        for t in types:
            for lv in levels:
                img = apply_distortion(ref, t, lv, rng=stable_seed(seed, content, t))
                rows.append({"content": content, "distortion": t, "level": int(lv), "image": img})
    return rows


def write_lesson_set(folder: str | os.PathLike, **kwargs) -> "pd.DataFrame":
    """``held_out_images(**kwargs)`` written as PNGs into ``folder``: a demo-style table (``path``, ``q`` = 1 -
    level / 5 (higher = better), ``mos`` = level, ``content_id``, ``distortion``, ``level``) that
    ``clipiqa.adapt`` and ``clipiqa.protocol.run_protocol`` take. Synthetic severities, never human scores."""
    import pandas as pd
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in held_out_images(**kwargs):
        name = f"{r['content'].replace('#', '_')}__{r['distortion']}__{r['level']}.png"
        path = folder / name
        if not path.is_file():
            Image.fromarray(r["image"]).save(path)
        rows.append({"path": str(path), "q": 1.0 - r["level"] / 5.0, "mos": float(r["level"]),
                     "content_id": r["content"], "distortion": r["distortion"], "level": int(r["level"])})
    table = pd.DataFrame(rows).drop_duplicates("path").reset_index(drop=True)
    return table


def model_image_size(model) -> int:
    """The input side of an IQAModel (from its preprocess config)."""
    size = model.source.preprocess_cfg["size"]
    return int(size if isinstance(size, int) else size[0])


def zero_shot_margins(model, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Frozen model, antonym prompts: logit margin ``z_high - z_low`` per image (higher = better), through the
    one inference path (``clipiqa.inference.predict_pil``, fp32 on the CPU)."""
    from .inference import predict_pil
    with model.adapters_off():
        return predict_pil(model, list(images), batch_size=batch_size).margin.numpy()


def zero_shot_table(model, **kwargs):
    """``held_out_images(**kwargs)`` as a DataFrame with the zero-shot ``margin`` (no images); ``size``
    defaults to ``model``'s input size."""
    import pandas as pd
    if kwargs.get("size") is None:
        kwargs["size"] = model_image_size(model)
    rows = held_out_images(**kwargs)
    margins = zero_shot_margins(model, [r["image"] for r in rows])
    return pd.DataFrame([{k: v for k, v in r.items() if k != "image"} | {"margin": float(m)}
                         for r, m in zip(rows, margins)])


# ---------------------------------------------------------------------------------------------------- CLI
def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import time
    from .presets import get_preset
    p = argparse.ArgumentParser(prog="python -m clipiqa.lesson", description="Build the lesson model's weights.")
    p.add_argument("command", choices=["build", "hash"])
    p.add_argument("--out", default=None, help=f"file to write (default: the committed {committed_path()})")
    args = p.parse_args(argv)
    preset = get_preset("lesson")
    recipe = LessonRecipe.from_dict(preset.lesson)
    if args.command == "hash":
        print(config_hash(preset.model_cfg, recipe))
        return 0
    out = Path(args.out) if args.out else committed_path()
    t0, c0 = time.perf_counter(), time.process_time()
    build_weights(out, preset.model_cfg, recipe, preset.arch, _tqdm_progress("training the lesson model"))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
