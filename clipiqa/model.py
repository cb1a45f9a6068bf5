"""The prompted CLIP quality model: open_clip wrapped, never edited (docs/design.md, 'The model and its adapters').

Read top to bottom: ``IQAModel`` holds the frozen ``clip`` and the learnable adapter: the text context, and only
when declared visual prompts and tuned copies of the last blocks (``adapter_spec`` says which exist; an adapted
but untrained model has exactly the frozen CLIP's image features). ``adapters_enabled`` switches every learnable part
off at once, which gives the frozen CLIP with antonym prompts: the zero-shot baseline and the teacher.

Seams of open_clip that this file relies on (``tests/test_open_clip_seams.py`` fails if they move):
``visual._embeds``, ``visual.transformer.resblocks``, ``visual.ln_post``, ``visual.proj``, ``token_embedding``,
``positional_embedding``, ``transformer.resblocks``, ``attn_mask``, ``ln_final``, ``text_projection``,
``text_pool_type``, ``text_eos_id``, ``logit_scale`` and ``open_clip.transformer.text_global_pool``.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from .adapters import LAST_BLOCKS, trainable_set, trains, tuned_block_count
from .data.transforms import TransformSpec, as_spec, backbone_spec, eval_transform
from .inference import Prediction, head_logits, no_autocast, predict_images
from .prompts import DEFAULT_VISUAL_TOKENS, SCENES, PromptConfig, TextPrompt, VisualPrompt, scene_prompts
from .weights import ModelSource
from .zoo import supported_message



class IQAModel(nn.Module):
    """CLIP quality model. ``score(images) -> [B]`` in [0, 1], higher = better quality."""

    frozen_only = False  # True for clipiqa.clip_iqa_rn50.ClipIqaRN50 (CLIP-IQA's ResNet-50): adapters refused

    def __init__(self, clip: nn.Module, tokenizer: Callable, source: ModelSource, prompt_config: PromptConfig,
                 seed: int = 0):
        super().__init__()
        _check_supported(clip, frozen_only=self.frozen_only)
        self.clip = clip.eval()
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.source = source
        self.prompt_config = prompt_config
        self.adapters_enabled = True
        self.n_tuned_blocks = 0
        self.seed = seed
        self.prompt_dropout = False  # True: frozen visual prompts keep their dropout in training (released code)

        # Only declared parts are built (PEFT style): the text context always; visual prompts when the config
        # declares tokens (or the ``prompts`` set asks for them); tuned blocks when ``last-blocks`` asks for them.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.text_prompt = TextPrompt(prompt_config.n_ctx, clip.token_embedding.weight.shape[1],
                                          prompt_config.ctx_init_std)
        self.visual_prompt: VisualPrompt | None = None
        self.tuned = nn.ModuleDict()  # copies of the last blocks, created by add_tuned_blocks
        if prompt_config.visual_tokens > 0:
            self.add_visual_prompt(prompt_config.visual_tokens, prompt_config.visual_depth)

        placeholder = " ".join(["X"] * prompt_config.n_ctx)
        self.register_buffer("quality_tokens", tokenizer([f"{placeholder} {c}." for c in prompt_config.classnames]),
                             persistent=False)
        self.register_buffer("antonym_tokens", tokenizer(list(prompt_config.antonyms)), persistent=False)
        self.register_buffer("scene_tokens", tokenizer(scene_prompts(prompt_config)), persistent=False)
        self._text_cache: dict[str, tuple[tuple, torch.Tensor]] = {}

    # ------------------------------------------------------------------ switches and parameter sets
    def train(self, mode: bool = True) -> "IQAModel":
        """Frozen CLIP always stays in eval mode; so do frozen visual prompts (no dropout: cached prefixes
        stay exact) unless ``prompt_dropout`` asks for the released behaviour. Only trainable adapter parts (and
        then those prompts) follow ``mode``."""
        super().train(mode)
        self.clip.eval()
        frozen = self.visual_prompt is not None and not any(p.requires_grad for p in self.visual_prompt.parameters())
        if frozen and not self.prompt_dropout:
            self.visual_prompt.eval()
        return self

    def enable_adapters(self, enabled: bool = True) -> "IQAModel":
        """Switch every learnable part on (prompted / adapted model) or off (frozen CLIP, antonym prompts).

        ``load_model`` leaves them off unless a checkpoint is applied: untrained prompts score nothing useful.
        Training (``set_trainable``) and ``apply_checkpoint`` switch them on."""
        self.adapters_enabled = bool(enabled)
        return self

    @contextmanager
    def adapters_off(self) -> Iterator["IQAModel"]:
        """Temporarily the frozen CLIP with antonym prompts (zero-shot baseline / teacher)."""
        previous, self.adapters_enabled = self.adapters_enabled, False
        try:
            yield self
        finally:
            self.adapters_enabled = previous

    @property
    def random_init(self) -> bool:
        return self.source.random_init

    @property
    def n_visual_layers(self) -> int:
        return len(self.clip.visual.transformer.resblocks)

    @property
    def adapter_spec(self) -> dict:
        """What this model's adapter is made of, exactly (recorded in checkpoint cards, rebuilt on load):
        ``n_ctx`` text context vectors, ``visual_tokens`` visual prompt tokens (0 = none) entering
        ``visual_depth`` blocks (None = every block), ``tuned_blocks`` tuned copies of the last blocks (0 = none).
        """
        c = self.prompt_config
        return {"n_ctx": c.n_ctx, "visual_tokens": c.visual_tokens, "visual_depth": c.visual_depth,
                "tuned_blocks": self.n_tuned_blocks}

    def add_visual_prompt(self, n_tokens: int = DEFAULT_VISUAL_TOKENS, depth: int | None = None) -> None:
        """Build VPT-deep visual prompts (``n_tokens`` per set, in the first ``depth`` blocks; None = every block)
        and declare them in ``prompt_config``. Idempotent for the same declaration; refuses a different one.

        Untrained visual prompts change CLIP's image features: only the ``prompts`` set (which trains them) and
        checkpoints that carry them declare them."""
        wanted = replace(self.prompt_config, visual_tokens=n_tokens, visual_depth=depth)  # validates
        if self.visual_prompt is not None:
            if (self.prompt_config.visual_tokens, self.prompt_config.visual_depth) == (n_tokens, depth):
                return
            raise ValueError(f"this model already has visual prompts (visual_tokens="
                             f"{self.prompt_config.visual_tokens}, visual_depth={self.prompt_config.visual_depth}); "
                             f"load a fresh model to use visual_tokens={n_tokens}, visual_depth={depth}")
        if n_tokens == 0:
            return
        visual = self.clip.visual
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)  # the same prompts whether built at construction or later
            vp = VisualPrompt(n_tokens, min(depth or self.n_visual_layers, self.n_visual_layers),
                              visual.class_embedding.shape[0], visual.conv1.kernel_size[0],
                              self.prompt_config.visual_dropout)
        self.visual_prompt = vp.to(visual.class_embedding.device).train(self.training)
        self.prompt_config = wanted

    def add_tuned_blocks(self, k: int) -> None:
        """Create trainable copies of the last ``k`` blocks of both encoders and their final norms.

        The originals stay frozen and untouched; the copies are used while adapters are enabled.
        """
        n_v, n_t = self.n_visual_layers, len(self.clip.transformer.resblocks)
        if not 1 <= k <= min(n_v, n_t):
            raise ValueError(f"tuned blocks k={k} is not allowed; use 1..{min(n_v, n_t)} for this backbone")
        if self.n_tuned_blocks == k:
            return
        if self.n_tuned_blocks:
            raise ValueError(f"this model already has {self.n_tuned_blocks} tuned blocks; load a fresh model")
        self.tuned["visual_blocks"] = copy.deepcopy(self.clip.visual.transformer.resblocks[n_v - k:])
        self.tuned["visual_ln_post"] = copy.deepcopy(self.clip.visual.ln_post)
        self.tuned["text_blocks"] = copy.deepcopy(self.clip.transformer.resblocks[n_t - k:])
        self.tuned["text_ln_final"] = copy.deepcopy(self.clip.ln_final)
        self.tuned.to(self.quality_tokens.device)
        for p in self.tuned.parameters():
            p.requires_grad_(True)
        self.n_tuned_blocks = k

    def set_trainable(self, which: str, k: int = 4) -> list[str]:
        """Choose what trains, building what the set declares and nothing else:

        ``prompts``: text ctx + visual prompts (declares ``DEFAULT_VISUAL_TOKENS`` visual prompt tokens in every
        block when the model has none yet); ``last-blocks``: text ctx + tuned copies of the
        last ``k`` blocks of both encoders + final norms; visual prompts are never added, existing ones (from a meta checkpoint) stay
        frozen, so a fresh model's image features are exactly the frozen CLIP's before the first step;
        ``text``: ctx only; ``none``. ``adapter_spec`` (recorded in cards) says what was built.
        Returns the names of the trainable tensors."""
        which = trainable_set(which)
        if which != "none":
            self.enable_adapters(True)
        if which == "prompts" and self.visual_prompt is None:
            self.add_visual_prompt(DEFAULT_VISUAL_TOKENS, self.prompt_config.visual_depth)
        if which == LAST_BLOCKS:
            self.add_tuned_blocks(tuned_block_count(k, self.n_visual_layers, len(self.clip.transformer.resblocks)))
        for name, p in self.adapter_parameters():
            p.requires_grad_(trains(which, name))
        self.train(self.training)
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def adapter_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """All learnable tensors (trainable or not): everything except the frozen CLIP."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("clip.")]

    def first_trainable_visual_block(self) -> int:
        """Index of the first visual block whose input depends on trainable tensors (for prefix caching)."""
        if self.visual_prompt is not None and any(p.requires_grad for p in self.visual_prompt.parameters()):
            return 0
        if self.n_tuned_blocks and any(p.requires_grad for p in self.tuned.parameters()):
            return self.n_visual_layers - self.n_tuned_blocks
        return self.n_visual_layers

    # ------------------------------------------------------------------ image side
    def _visual_block(self, i: int) -> nn.Module:
        start = self.n_visual_layers - self.n_tuned_blocks
        if self.adapters_enabled and self.n_tuned_blocks and i >= start:
            return self.tuned["visual_blocks"][i - start]
        return self.clip.visual.transformer.resblocks[i]

    def visual_prefix(self, images: torch.Tensor, stop: int) -> torch.Tensor:
        """Hidden tokens ``[B, L, W]`` entering visual block ``stop`` (prompts inserted for blocks < stop)."""
        x = self.clip.visual._embeds(images)
        return self.visual_blocks(x, 0, stop)

    def visual_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        batch_first = self.clip.visual.transformer.batch_first
        vp = self.visual_prompt if self.adapters_enabled else None
        for i in range(start, stop):
            if vp is not None and i < vp.depth:
                x = vp.insert(x, i)
            block = self._visual_block(i)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        return x

    def visual_head(self, x: torch.Tensor) -> torch.Tensor:
        """Pool the CLS token of the last hidden state and project it: unnormalised image features."""
        visual = self.clip.visual
        if self.adapters_enabled and self.visual_prompt is not None:
            x = self.visual_prompt.norm(x)
        ln_post = self.tuned["visual_ln_post"] if self.adapters_enabled and self.n_tuned_blocks else visual.ln_post
        pooled = ln_post(x[:, 0])
        return pooled @ visual.proj if visual.proj is not None else pooled

    def encode_image_from(self, hidden: torch.Tensor, start: int) -> torch.Tensor:
        """Finish the image encoder from the hidden state entering block ``start`` (the cached path)."""
        return self.visual_head(self.visual_blocks(hidden, start, self.n_visual_layers))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features; equals ``clip.encode_image`` with adapters off."""
        return self.encode_image_from(self.visual_prefix(images, 0), 0)

    # ------------------------------------------------------------------ text side
    def _encode_token_embeds(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        x = x + clip.positional_embedding.to(x.dtype)
        attn_mask = clip.attn_mask
        length = _pooled_prefix_length(tokens, clip)
        if length is not None:  # causal attention: tokens after the pooled one cannot change it
            x, tokens, attn_mask = x[:, :length], tokens[:, :length], attn_mask[:length, :length]
        n_t = len(clip.transformer.resblocks)
        tuned = self.adapters_enabled and self.n_tuned_blocks
        batch_first = clip.transformer.batch_first
        for i in range(n_t):
            block = (self.tuned["text_blocks"][i - (n_t - self.n_tuned_blocks)]
                     if tuned and i >= n_t - self.n_tuned_blocks else clip.transformer.resblocks[i])
            if batch_first:
                x = block(x, attn_mask=attn_mask)
            else:
                x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
        x = (self.tuned["text_ln_final"] if tuned else clip.ln_final)(x)
        x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        proj = clip.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def encode_text(self, tokens: torch.Tensor, with_context: bool = False) -> torch.Tensor:
        """Unnormalised text features; with ``with_context`` the CoOp context replaces tokens 1..n_ctx."""
        cast = self.clip.transformer.get_cast_dtype()
        x = self.clip.token_embedding(tokens).to(cast)
        if with_context:
            x = self.text_prompt.splice(x)
        return self._encode_token_embeds(x, tokens)

    def _cached_text(self, key: str, compute: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
        """Text features are recomputed only when a tensor they depend on changed (or needs gradients)."""
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return compute()
        version = (self.adapters_enabled, self.quality_tokens.device, tuple(p._version for p in params),
                   tuple(id(p) for p in params))
        hit = self._text_cache.get(key)
        if hit is None or hit[0] != version:
            with torch.no_grad():
                hit = (version, compute())
            self._text_cache[key] = hit
        return hit[1]

    def _text_params(self, with_context: bool) -> list[torch.Tensor]:
        params = list(self.tuned["text_blocks"].parameters()) + list(self.tuned["text_ln_final"].parameters()) \
            if self.adapters_enabled and self.n_tuned_blocks else []
        return params + [self.text_prompt.ctx] if with_context else params

    def quality_text_features(self) -> torch.Tensor:
        """Normalised ``[2, D]`` features of (high, low): the learned prompts, or the antonyms when off."""
        if self.adapters_enabled:
            fn = lambda: F.normalize(self.encode_text(self.quality_tokens, with_context=True), dim=-1)  # noqa: E731
            return self._cached_text("quality", fn, self._text_params(True))
        fn = lambda: F.normalize(self.encode_text(self.antonym_tokens), dim=-1)  # noqa: E731
        return self._cached_text("antonyms", fn, [])

    def scene_text_features(self) -> torch.Tensor:
        """Normalised ``[K, D]`` features of the fixed scene prompts through the (possibly tuned) text encoder."""
        fn = lambda: F.normalize(self.encode_text(self.scene_tokens), dim=-1)  # noqa: E731
        return self._cached_text("scenes", fn, self._text_params(False))

    # ------------------------------------------------------------------ heads (clipiqa.inference)
    def logit_scale(self) -> torch.Tensor:
        """CLIP's logit scale (exp of the learned log scale, at most 100), float32."""
        return self.clip.logit_scale.float().exp().clamp(max=100.0)

    def heads(self, image_features: torch.Tensor, scenes: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Quality logits ``[B, 2]`` (column 0 = high) and scene logits ``[B, K]`` from image features.

        Float32 outside autocast (:func:`clipiqa.inference.head_logits`), text features included, whatever
        precision the encoder ran in: training losses and scores see the same logits."""
        with no_autocast(image_features.device.type):
            scale = self.logit_scale()
            quality = head_logits(image_features, self.quality_text_features(), scale)
            scene = head_logits(image_features, self.scene_text_features(), scale) if scenes else None
        return quality, scene

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Quality logits ``[B, 2]`` (float32) of preprocessed images."""
        return self.heads(self.encode_image(images), scenes=False)[0]

    def scene_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Scene logits ``[B, K]`` (float32) of preprocessed images."""
        return self.heads(self.encode_image(images))[1]

    def predict(self, images: torch.Tensor) -> Prediction:
        """Margin and p_high of preprocessed images ``[B, 3, H, W]`` (:func:`clipiqa.inference.predict_images`:
        encoder in the caller's autocast, head in fp32; mode and gradients as the caller has them)."""
        return predict_images(self, images)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Quality score ``p_high`` in [0, 1] for preprocessed images ``[B, 3, H, W]``; higher = better.
        For display; rank by the margin (``predict(images).margin``), which does not saturate."""
        return predict_images(self, images).score

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The logit margin ``z_high - z_low`` per image ``[B]`` (float32): the scalar attributions explain by
        default (p_high saturates and its gradients vanish). ``clipiqa.inference.p_high_target``
        explains p_high instead."""
        return predict_images(self, images).margin

    # ------------------------------------------------------------------ preprocessing
    @property
    def transform_spec(self) -> TransformSpec:
        """The evaluation transform of the adapted model: what it was trained with (set by ``adapt``, recorded in
        the checkpoint card, restored by ``apply_checkpoint``); the backbone's own preprocessing by default.
        Assign a ``TransformSpec`` (or its dict) to change it, ``None`` to reset it to the backbone's."""
        spec = getattr(self, "_transform_spec", None)
        return spec if spec is not None else backbone_spec(self)

    @transform_spec.setter
    def transform_spec(self, spec: TransformSpec | dict | None) -> None:
        self._transform_spec = None if spec is None else as_spec(spec)

    @property
    def eval_spec(self) -> TransformSpec:
        """The spec in effect: ``transform_spec`` while adapters are on; the backbone's own preprocessing while
        they are off (zero-shot CLIP is always scored as CLIP was trained)."""
        return self.transform_spec if self.adapters_enabled else backbone_spec(self)

    @property
    def preprocess(self):
        """The evaluation transform in effect (PIL image -> tensor), built from ``eval_spec``."""
        return eval_transform(self.eval_spec)

    @property
    def device(self) -> torch.device:
        return self.quality_tokens.device

    @property
    def scenes(self) -> tuple[str, ...]:
        return self.prompt_config.scenes


def _pooled_prefix_length(tokens: torch.Tensor, clip: nn.Module) -> int | None:
    """Length of the shortest token prefix that holds every pooled (EOT) position, when the text tower is causal
    and pools by argmax/eos; None when the whole context must run. Running only that prefix gives identical
    features (causal masking) at a fraction of the cost: CLIP prompts use ~10 of 77 positions."""
    mask = clip.attn_mask
    if mask is None or clip.text_pool_type not in ("argmax", "eos"):
        return None
    if clip.text_pool_type == "argmax":
        last = int(tokens.argmax(dim=-1).max())
    else:
        last = int((tokens == clip.text_eos_id).int().argmax(dim=-1).max())
    return last + 1


def _check_supported(clip: nn.Module, frozen_only: bool = False) -> None:
    """Refuse a built open_clip model whose towers clipiqa cannot wrap (``clipiqa.zoo`` refuses most by their
    config before anything is built; this catches what only the built model shows). ``frozen_only``: an
    open_clip ModifiedResNet image tower (``clipiqa.clip_iqa_rn50``) instead of a ViT."""
    visual = getattr(clip, "visual", None)
    text_ok = hasattr(clip, "token_embedding") and hasattr(clip, "transformer")
    if frozen_only:
        ok = text_ok and all(hasattr(visual, n) for n in ("stem", "layer4", "attnpool"))
    else:
        ok = (text_ok and visual is not None and hasattr(visual, "transformer") and hasattr(visual, "class_embedding")
              and getattr(visual, "attn_pool", None) is None and getattr(visual, "pool_type", "tok") == "tok"
              and not getattr(visual, "final_ln_after_pool", False))
    if not ok:
        need = ("an open_clip ResNet image tower (ModifiedResNet) and the built-in text tower" if frozen_only
                else "an open_clip CLIP with a ViT image tower pooled by its CLS token and the built-in text tower")
        raise ValueError(f"{type(clip).__name__} with {type(visual).__name__} is not supported: clipiqa needs "
                         f"{need}.\n{supported_message()}")


__all__ = ["IQAModel", "SCENES"]

