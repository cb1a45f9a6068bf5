"""Naming any open_clip CLIP (docs/design.md, 'Weights, checkpoints and export'): a preset, ``ARCH:TAG``,
``hf-hub:ORG/REPO`` or a local open_clip folder.

``resolve_model(name)`` turns a name into a :class:`clipiqa.presets.Preset` (what the name means: architecture,
tag, hub repository, folder), without building or downloading anything. ``load_backbone`` then finds the weights.

What clipiqa can wrap (prompts, adaptation, explain, checkpoints): open_clip's own ``VisionTransformer`` image
tower pooled by its CLS token, with open_clip's ``TextTransformer`` text tower and tokenizer: the OpenAI, LAION,
DataComp, MetaCLIP and DFN CLIP ViTs. Anything else (timm towers such as SigLIP or EVA, Hugging Face text towers,
CoCa, CLIPA's average pooling, ResNets) is refused at load with :func:`supported_message`. The ResNet-50 exists
only as the zero-shot preset ``rn50-openai`` (CLIP-IQA's configuration, :mod:`clipiqa.clip_iqa_rn50`).
"""
from __future__ import annotations

import difflib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import open_clip

from .presets import PRESETS, Preset

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
CONFIG_FILE = "open_clip_config.json"


class UnsupportedModelError(ValueError):
    """The named model exists but its towers cannot be wrapped by clipiqa."""


# ---------------------------------------------------------------------------------------------- what is supported
def unsupported_reasons(model_cfg: dict[str, Any]) -> list[str]:
    """Why an open_clip model config cannot be wrapped (empty: it can). Pure: reads the config only."""
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    reasons = []
    if "timm_model_name" in vision:
        reasons.append(f"its image tower is a timm model ({vision['timm_model_name']}), not open_clip's "
                       "VisionTransformer (SigLIP, EVA, ConvNeXt, ViTamin ... are built this way)")
    if isinstance(vision.get("layers"), (list, tuple)):
        reasons.append("its image tower is a ResNet: visual prompts and tuned blocks need a ViT (for CLIP-IQA's "
                       "zero-shot ResNet-50 use the preset rn50-openai)")
    if "hf_model_name" in text or model_cfg.get("custom_text"):
        reasons.append("its text tower is a Hugging Face or custom text model, not open_clip's TextTransformer")
    if "multimodal_cfg" in model_cfg:
        reasons.append("it is a CoCa captioning model")
    if vision.get("attentional_pool"):
        reasons.append("its image tower pools with attentional pooling, not the CLS token")
    if vision.get("pool_type", "tok") != "tok" or vision.get("final_ln_after_pool") or vision.get("no_ln_pre"):
        reasons.append("its image tower is not pooled by the CLS token (CLIPA-style average pooling)")
    if text.get("pool_type", "argmax") not in ("argmax", "eos"):
        reasons.append(f"its text tower pools by {text.get('pool_type')!r}, not by the end-of-text token")
    if text.get("hf_tokenizer_name"):
        reasons.append(f"its tokenizer ({text['hf_tokenizer_name']}) comes from Hugging Face transformers, not "
                       "open_clip's own")
    return reasons


@lru_cache(maxsize=1)
def supported_archs() -> tuple[str, ...]:
    """open_clip architecture names whose built-in config clipiqa can wrap."""
    return tuple(name for name in open_clip.list_models()
                 if not unsupported_reasons(open_clip.get_model_config(name) or {}))


@lru_cache(maxsize=1)
def supported_tags() -> tuple[tuple[str, str], ...]:
    """Every ``(ARCH, TAG)`` with pretrained weights in open_clip that clipiqa can wrap."""
    archs = set(supported_archs())
    return tuple((arch, tag) for arch, tag in open_clip.list_pretrained() if arch in archs)


def supported_message() -> str:
    """What clipiqa can wrap, for refusals."""
    families = sorted({tag.split("_")[0] for _, tag in supported_tags()})
    return (f"clipiqa wraps open_clip CLIPs with open_clip's own VisionTransformer image tower (CLS-token pooling) "
            f"and TextTransformer text tower: the architectures {', '.join(supported_archs())}, with the weights "
            f"of {', '.join(families)} ({len(supported_tags())} ARCH:TAG pairs; `clipiqa models --all` lists them), "
            "any hf-hub:ORG/REPO or local open_clip folder of those architectures, and the presets "
            f"{', '.join(PRESETS)}")


def check_supported_config(model_cfg: dict[str, Any], name: str) -> None:
    """Refuse a model config clipiqa cannot wrap, naming why and what is supported."""
    reasons = unsupported_reasons(model_cfg)
    if reasons:
        raise UnsupportedModelError(f"model {name!r} is not supported: {'; '.join(reasons)}.\n{supported_message()}")


# ---------------------------------------------------------------------------------------------- naming
def how_to_name_models() -> str:
    """The ways to name a model, for `clipiqa models` and errors."""
    return ("Name a model by: a preset (above); open_clip ARCH:TAG, e.g. ViT-L-14:openai or "
            "ViT-B-16:laion2b_s34b_b88k (`clipiqa models --all` lists the supported pairs); hf-hub:ORG/REPO, an "
            "open_clip repository on the Hugging Face hub; or the path of a local open_clip folder "
            f"({CONFIG_FILE} + open_clip_model.safetensors, e.g. one written by clipiqa.export_backbone).")


def folder_names(preset: Preset) -> list[str]:
    """Names a folder under ``$CLIPIQA_WEIGHTS`` may have for this model: the preset name (``:`` and ``/``
    as ``--``), and the hub repository's name (the folder ``huggingface-cli download ... --local-dir`` makes)."""
    names = [preset.name.replace(HF_HUB_PREFIX, "").replace(":", "--").replace("/", "--")]
    if preset.hf_hub:
        names.append(preset.hf_hub.rstrip("/").split("/")[-1])
    return list(dict.fromkeys(names))


def resolve_model(name: str | os.PathLike) -> Preset:
    """What ``name`` means, without building or downloading anything (see the module docstring)."""
    text = os.fspath(name).strip()
    if text.lower() in PRESETS:
        return PRESETS[text.lower()]
    if text.startswith(HF_HUB_PREFIX):
        repo = text[len(HF_HUB_PREFIX):].strip("/")
        if repo.count("/") != 1:
            raise ValueError(f"model {text!r}: write a hub repository as hf-hub:ORG/REPO")
        return Preset(name=f"{HF_HUB_PREFIX}{repo}", description=f"open_clip model from the hub repository {repo}",
                      arch=f"{HF_HUB_PREFIX}{repo}", hf_hub=repo, kind="hf-hub")
    folder = Path(text[len(LOCAL_DIR_PREFIX):] if text.startswith(LOCAL_DIR_PREFIX) else text).expanduser()
    if folder.is_dir():
        return _local_preset(folder)
    if ":" in text and not text.startswith((".", "/", "~")):
        return _tag_preset(*text.split(":", 1))
    close = difflib.get_close_matches(text.lower(), list(PRESETS), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownModelError(f"Unknown model {text!r}; {hint}presets: {', '.join(PRESETS)}. " + how_to_name_models())


class UnknownModelError(ValueError):
    """A model name that is no preset, no ARCH:TAG, no hf-hub: repository and no folder (a typo, most often)."""


def _tag_preset(arch: str, tag: str) -> Preset:
    known = {a.lower(): a for a in open_clip.list_models()}
    if arch.lower() not in known:
        raise ValueError(f"model '{arch}:{tag}': {arch!r} is not an open_clip architecture. " + how_to_name_models())
    arch = known[arch.lower()]
    check_supported_config(open_clip.get_model_config(arch) or {}, f"{arch}:{tag}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"model '{arch}:{tag}': open_clip has no weights tagged {tag!r} for {arch}; its tags: "
                         f"{', '.join(tags) or 'none'}")
    return Preset(name=f"{arch}:{tag}", description=f"open_clip {arch} with the {tag} weights", arch=arch, tag=tag,
                  hf_hub=(cfg.get("hf_hub") or "").rstrip("/") or None, quick_gelu=bool(cfg.get("quick_gelu")),
                  kind="tag")


def read_folder_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"folder {folder} is not an open_clip folder: cannot read {CONFIG_FILE} ({e})") from e
    if not isinstance(config, dict) or "model_cfg" not in config:
        raise ValueError(f"{folder / CONFIG_FILE} has no 'model_cfg': not an open_clip model config")
    return config


def _local_preset(folder: Path) -> Preset:
    folder = folder.resolve()
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"folder {folder} has no {CONFIG_FILE}: a local model is an open_clip folder (config + "
                         "weights, e.g. written by clipiqa.export_backbone or `huggingface-cli download ... "
                         "--local-dir`); a bare weights file goes with a preset: load_model(PRESET, weights=FILE)")
    config = read_folder_config(folder)
    meta = config.get("clipiqa") or {}
    origin = PRESETS.get(meta.get("preset") or "")
    arch = meta.get("arch") or (origin.arch if origin else None)
    return Preset(name=str(folder), description=f"open_clip folder {folder}", arch=arch or "local-dir",
                  kind="local", folder=str(folder), frozen_only=bool(origin and origin.frozen_only))


__all__ = ["resolve_model", "supported_archs", "supported_tags", "supported_message", "unsupported_reasons",
           "check_supported_config", "how_to_name_models", "folder_names", "UnsupportedModelError"]
