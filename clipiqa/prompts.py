"""Learnable prompts that wrap a frozen open_clip model (CoOp text context, VPT-deep visual prompts).

Only the tensors defined here are new parameters; CLIP itself is never edited.
Why: docs/design.md, 'The model and its adapters'.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from .configs import from_dict, invalid

SCENES: tuple[str, ...] = (
    "animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others",
)
# "plant" in the scene branch is botanical (a plant that grows), never a factory. UIs show this label.
SCENE_LABELS: dict[str, str] = {s: s.replace("_", " ") for s in SCENES}
SCENE_LABELS["plant"] = "plant (botanical)"


DEFAULT_VISUAL_TOKENS = 100
"""Visual prompt tokens the ``prompts`` trainable set declares when the config declares none (released count)."""


def _fail(field_name: str, value: Any, allowed: str) -> None:
    invalid("PromptConfig", field_name, value, allowed)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PromptConfig:
    """Configuration of the learnable prompts (validated at construction).

    The prompt parts are *declared* here and only what is declared is built (PEFT style; CLIP is never edited).
    Together with the tuned blocks (``IQAModel.n_tuned_blocks``) this is the model's adapter spec
    (``IQAModel.adapter_spec``), recorded in checkpoint cards and rebuilt exactly on load.

    n_ctx: learnable text context vectors shared by the two classes ([SOS] [V1]..[Vn] <class> . [EOS]).
    classnames: the (high, low) class words.
    visual_tokens: VPT prompt tokens inserted after CLS; 0 (the default) = no visual prompt. The ``prompts``
        trainable set declares ``DEFAULT_VISUAL_TOKENS`` (100, the released count) when none are declared; the
        ``paper`` set never adds any (random frozen tokens would corrupt CLIP's features).
    visual_depth: number of blocks that receive a fresh prompt set (None = every block; 1 = shallow only).
    antonyms: hand-written (good, bad) prompts used when prompts are off (zero-shot, the teacher).
    scene_template / scenes: the fixed scene branch used by the regularizer; as released, "a photo of a {}"
        with the raw scene names (no period, ``still_life`` keeps its underscore).
    """

    n_ctx: int = 4
    classnames: tuple[str, str] = ("high quality", "low quality")
    ctx_init_std: float = 0.02
    visual_tokens: int = 0
    visual_depth: int | None = None
    visual_dropout: float = 0.1
    antonyms: tuple[str, str] = ("Good photo.", "Bad photo.")
    scene_template: str = "a photo of a {}"
    scenes: tuple[str, ...] = SCENES

    def __post_init__(self) -> None:
        object.__setattr__(self, "classnames", tuple(self.classnames))
        object.__setattr__(self, "antonyms", tuple(self.antonyms))
        object.__setattr__(self, "scenes", tuple(self.scenes))
        if not _is_int(self.n_ctx) or not 1 <= self.n_ctx <= 32:
            _fail("n_ctx", self.n_ctx, "use an integer from 1 to 32 (the paper uses 4)")
        for name in ("classnames", "antonyms"):
            value = getattr(self, name)
            if len(value) != 2 or not all(isinstance(v, str) and v.strip() for v in value):
                _fail(name, value, "give exactly two non-empty strings: (high/good, low/bad)")
        if not self.ctx_init_std > 0:
            _fail("ctx_init_std", self.ctx_init_std, "use a positive standard deviation (default 0.02)")
        if not _is_int(self.visual_tokens) or not 0 <= self.visual_tokens <= 1024:
            _fail("visual_tokens", self.visual_tokens, "use an integer from 0 (no visual prompt) to 1024")
        if self.visual_depth is not None and (not _is_int(self.visual_depth) or self.visual_depth < 1):
            _fail("visual_depth", self.visual_depth, "use None (every block) or an integer >= 1 (1 = shallow)")
        if not 0 <= self.visual_dropout < 1:
            _fail("visual_dropout", self.visual_dropout, "use a probability in [0, 1)")
        if "{}" not in self.scene_template:
            _fail("scene_template", self.scene_template, "it must contain '{}' where the scene goes")
        if len(self.scenes) < 2:
            _fail("scenes", self.scenes, "give at least two scene names")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data) -> "PromptConfig":
        return from_dict(cls, data)


def scene_prompts(config: PromptConfig) -> list[str]:
    """The fixed scene prompts of the regularizer's teacher, exactly as released: the template filled with the
    raw scene names (``"a photo of a still_life"``)."""
    return [config.scene_template.format(scene) for scene in config.scenes]


class TextPrompt(nn.Module):
    """CoOp context: ``n_ctx`` vectors shared by both quality classes, spliced after [SOS]."""

    def __init__(self, n_ctx: int, width: int, init_std: float = 0.02):
        super().__init__()
        self.ctx = nn.Parameter(torch.randn(n_ctx, width) * init_std)

    def splice(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """Replace the placeholder embeddings at positions 1..n_ctx of ``[N, L, W]`` by the context."""
        n = self.ctx.shape[0]
        ctx = self.ctx.to(token_embeds.dtype).unsqueeze(0).expand(token_embeds.shape[0], -1, -1)
        return torch.cat([token_embeds[:, :1], ctx, token_embeds[:, 1 + n:]], dim=1)


class VisualPrompt(nn.Module):
    """VPT-deep prompts: one set after ``ln_pre`` and a fresh set before each later prompted block.

    Every set passes a shared ``Linear(width, width)`` and dropout; ``norm`` is the extra LayerNorm that
    sits before CLIP's ``ln_post``. Initialised as released: tokens uniform with the VPT bound,
    the projection's weight kaiming-normal with fan-out (its bias keeps ``nn.Linear``'s default, which the
    released code does not re-initialise), the LayerNorm with eps 1e-6.
    """

    def __init__(self, n_tokens: int, depth: int, width: int, patch_size: int, dropout: float = 0.1):
        super().__init__()
        # Uniform init scaled by fan-in of a patch plus the width (the VPT paper's choice).
        bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + width))
        self.tokens = nn.Parameter(torch.empty(depth, n_tokens, width).uniform_(-bound, bound))
        self.proj = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.proj.weight, mode="fan_out")
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width, eps=1e-6)

    @property
    def n_tokens(self) -> int:
        return self.tokens.shape[1]

    @property
    def depth(self) -> int:
        return self.tokens.shape[0]

    def prompt_set(self, index: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
        p = self.dropout(self.proj(self.tokens[index]))
        return p.to(dtype).unsqueeze(0).expand(batch, -1, -1)

    def insert(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Insert prompt set ``index`` right after CLS (block 0) or replace the previous set (later blocks)."""
        p = self.prompt_set(index, x.shape[0], x.dtype)
        rest = x[:, 1:] if index == 0 else x[:, 1 + self.n_tokens:]
        return torch.cat([x[:, :1], p, rest], dim=1)
