"""Making a model: :func:`load_model` (the one entry, like open_clip's ``create_model_and_transforms``) resolves a
name to a backbone (:mod:`clipiqa.zoo`, :mod:`clipiqa.weights`), wraps it (:class:`clipiqa.model.IQAModel`, or the
zero-shot-only :class:`clipiqa.clip_iqa_rn50.ClipIqaRN50`), applies a checkpoint when given one and puts it on a device
(:func:`resolve_device`).
"""
from __future__ import annotations

import open_clip
import torch

from .checkpoint import apply_checkpoint, read_checkpoint
from .model import IQAModel
from .presets import DEFAULT_MODEL, Preset, get_preset
from .prompts import PromptConfig
from .weights import load_backbone
from .clip_iqa_rn50 import ClipIqaRN50, FrozenOnlyError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" picks CUDA when available, else CPU; anything else is passed to torch."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for, but torch sees no CUDA device here; "
                         "use device='cpu' or 'auto'")
    return device


def load_model(name: str | None = None, weights: str | None = None, device: str | torch.device | None = None,
               prompts: PromptConfig | dict | str | None = None, seed: int = 0) -> IQAModel:
    """Load a backbone and wrap it with prompts.

    name: a preset (``clipiqa models`` lists them: ``vitb16-openai`` (paper), ``vitb32-openai``, ``vitl14-openai``,
        ``rn50-openai`` (zero-shot only), ``tiny`` ...), any open_clip CLIP ViT as ``ARCH:TAG``
        (``ViT-L-14:openai``, ``ViT-B-16:laion2b_s34b_b88k``), ``hf-hub:ORG/REPO``, or the path of a local
        open_clip folder (:func:`clipiqa.zoo.resolve_model`). None: the model a checkpoint given as ``prompts``
        names in its card, else ``vitb16-openai``. Towers clipiqa cannot wrap are refused with the list of what is
        supported.
    weights: a local weights file or open_clip folder; never touches the network when given.
    device: "cuda", "cpu", or None/"auto".
    prompts: a ``PromptConfig`` (or its dict), or the path of a clipiqa checkpoint to load onto the model.
        Only declared adapter parts are built: the text context, visual prompts when the config declares
        ``visual_tokens`` (the default declares none; the ``prompts`` trainable set adds them), and for a
        checkpoint exactly the parts its card declares (``adapter_spec``).
        Without a checkpoint the adapters start switched off: the model scores zero-shot (frozen CLIP with
        antonym prompts) until it is trained or ``enable_adapters()`` is called.
    seed: seeds the prompt initialisation.

    ``clipiqa.weights.weights_line(model)`` says which weights, fingerprint and precision run.
    """
    checkpoint = None
    if isinstance(prompts, (str, bytes)) or hasattr(prompts, "__fspath__"):
        checkpoint = read_checkpoint(prompts)
        prompt_config = PromptConfig.from_dict(checkpoint.card["prompt_config"])
        if name is None:
            name = (checkpoint.card.get("backbone") or {}).get("preset") or DEFAULT_MODEL
    elif isinstance(prompts, dict):
        prompt_config = PromptConfig.from_dict(prompts)
    else:
        prompt_config = prompts or PromptConfig()
    preset: Preset = get_preset(name or DEFAULT_MODEL)
    if preset.frozen_only and checkpoint is not None:
        raise FrozenOnlyError(f"model {preset.name!r} is frozen only (CLIP-IQA's zero-shot configuration): it takes no "
                                "checkpoint; adapted checkpoints need a ViT backbone such as vitb16-openai")
    clip, source = load_backbone(preset, weights)
    tokenizer = open_clip.get_tokenizer(source.tokenizer or preset.arch, context_length=clip.context_length)
    if preset.frozen_only:
        model: IQAModel = ClipIqaRN50(clip, tokenizer, source, prompt_config, seed=seed)
    else:
        model = IQAModel(clip, tokenizer, source, prompt_config, seed=seed)
    model.enable_adapters(False)
    if checkpoint is not None:
        apply_checkpoint(model, checkpoint)
    return model.to(resolve_device(device)).eval()


__all__ = ["DEFAULT_MODEL", "load_model", "resolve_device"]
