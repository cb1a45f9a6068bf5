"""What the learned text context has become, in words a person can read.

CoOp-style context vectors live in CLIP's token-embedding space, so each can be described by the vocabulary
tokens nearest to it (cosine similarity to every row of ``token_embedding``), and the learned "high quality" /
"low quality" prompts as whole sentences can be compared with hand-written quality phrases through the same
text encoder. Neither is the meaning of a vector (CoOp's authors warn that nearest words of learned context are
often not interpretable): they are a reading aid, best compared before and after adaptation.

Computing is separate from showing: :func:`prompt_words` returns plain data (also stored in checkpoint cards),
:func:`format_prompt_words` turns one or two of them into text. Numbers from a random-init backbone are
meaningless and the toy's vocabulary knows only its own captions: the result carries the model's caveat.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

QUALITY_PHRASES: tuple[str, ...] = (
    "a sharp photo.", "a blurry photo.", "a noisy photo.", "a clean photo.", "an overexposed photo.",
    "an underexposed photo.", "a photo with compression artifacts.", "a high quality photo.",
    "a low quality photo.", "a colourful photo.", "a washed-out photo.", "a photo with motion blur.",
)
"""Hand-written phrases the learned quality prompts are compared with (a fixed set, so that runs compare)."""


@dataclass(frozen=True)
class PromptWords:
    """Nearest vocabulary tokens of each context vector and the prompts' similarity to quality phrases.

    ``nearest[i]`` lists ``(token, cosine)`` for context vector i, best first. ``phrases[p] = (cos_high, cos_low)``:
    cosine of the learned high / low prompt features with phrase p's features. ``caveat``: the model's random-init
    or toy label ("" for real weights)."""

    nearest: list[list[tuple[str, float]]]
    phrases: dict[str, tuple[float, float]]
    classnames: tuple[str, str]
    caveat: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"nearest": [[[t, round(c, 4)] for t, c in row] for row in self.nearest],
                "phrases": {p: [round(h, 4), round(low, 4)] for p, (h, low) in self.phrases.items()},
                "classnames": list(self.classnames), "caveat": self.caveat}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptWords":
        return cls(nearest=[[(str(t), float(c)) for t, c in row] for row in data["nearest"]],
                   phrases={p: (float(v[0]), float(v[1])) for p, v in data["phrases"].items()},
                   classnames=tuple(data.get("classnames", ("high quality", "low quality"))),
                   caveat=str(data.get("caveat", "")))

    def leaning(self) -> dict[str, float]:
        """Per phrase, ``cos_high - cos_low``: positive = the phrase reads closer to the learned "high" prompt."""
        return {p: h - low for p, (h, low) in self.phrases.items()}


def _decode(tokenizer, token_id: int) -> str:
    decode = getattr(tokenizer, "decode", None)
    if decode is not None:
        try:
            text = decode([token_id]).strip()
            if text:
                return text
        except Exception:  # noqa: BLE001 - a tokenizer without single-id decoding: fall back to the id
            pass
    return f"<{token_id}>"


def nearest_tokens(model, k: int = 5) -> list[list[tuple[str, float]]]:
    """For each learned context vector, the ``k`` vocabulary tokens with the highest cosine similarity."""
    if k < 1:
        raise ValueError(f"k={k} is not allowed; use a positive number of tokens")
    with torch.no_grad():
        vocab = F.normalize(model.clip.token_embedding.weight.detach().float(), dim=-1)
        ctx = F.normalize(model.text_prompt.ctx.detach().float().to(vocab.device), dim=-1)
        cos, ids = (ctx @ vocab.T).topk(min(k, vocab.shape[0]), dim=-1)
    return [[(_decode(model.tokenizer, int(i)), float(c)) for i, c in zip(row_ids, row_cos)]
            for row_ids, row_cos in zip(ids.tolist(), cos.tolist())]


def phrase_similarity(model, phrases: Sequence[str] = QUALITY_PHRASES) -> dict[str, tuple[float, float]]:
    """Cosine of the learned (high, low) prompt features with each hand-written phrase, one text encoder."""
    if not phrases:
        raise ValueError("give at least one phrase to compare the learned prompts with")
    device = model.quality_tokens.device
    with torch.no_grad():
        learned = model.quality_text_features().float()  # [2, D], normalised; the antonyms when adapters are off
        written = F.normalize(model.encode_text(model.tokenizer(list(phrases)).to(device)).float(), dim=-1)
        cos = written @ learned.T  # [P, 2]
    return {p: (float(h), float(low)) for p, (h, low) in zip(phrases, cos.tolist())}


def prompt_words(model, k: int = 5, phrases: Sequence[str] = QUALITY_PHRASES) -> PromptWords:
    """Describe the model's learned text context (see the module docstring); the model is not changed."""
    return PromptWords(nearest=nearest_tokens(model, k), phrases=phrase_similarity(model, phrases),
                       classnames=tuple(model.prompt_config.classnames), caveat=model.source.label)


def format_prompt_words(after: PromptWords, before: PromptWords | None = None, top: int = 3) -> str:
    """Plain text: nearest tokens per context vector, then each phrase's (high, low) cosine, before -> after."""
    lines = []
    if after.caveat:
        lines.append(f"[{after.caveat}: these words and similarities say nothing about real CLIP]")
    for i, row in enumerate(after.nearest):
        now = ", ".join(f"{t} ({c:.2f})" for t, c in row[:top])
        was = f"   was: {', '.join(t for t, _ in before.nearest[i][:top])}" if before and i < len(before.nearest) else ""
        lines.append(f"context vector {i + 1}: {now}{was}")
    high, low = after.classnames
    lines.append(f"similarity of the learned prompts with hand-written phrases (cosine; '{high}' / '{low}'"
                 f"{', before -> after' if before else ''}):")
    width = max(len(p) for p in after.phrases)
    for p, (h, lo) in after.phrases.items():
        if before and p in before.phrases:
            bh, bl = before.phrases[p]
            lines.append(f"  {p:<{width}}  {bh:+.3f} -> {h:+.3f}   /   {bl:+.3f} -> {lo:+.3f}")
        else:
            lines.append(f"  {p:<{width}}  {h:+.3f}   /   {lo:+.3f}")
    return "\n".join(lines)
