"""Checkpoints: the learned tensors as safetensors plus a JSON card (DESIGN 5). Nothing is unpickled.

A checkpoint is a folder (or the pair ``NAME.safetensors`` + ``NAME.json``) holding only the adapter
tensors (text context, visual prompts, tuned block copies) and a card that records the backbone, the prompt
config, the trainable set, the training config, data and split hashes, metrics and library versions.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CARD_VERSION = 1


class CheckpointMismatchError(ValueError):
    """The checkpoint was made for another backbone or prompt layout."""


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    card: dict[str, Any]
    path: Path


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".safetensors"), path.with_suffix(".json")
    return path / "adapter.safetensors", path / "card.json"


def library_versions() -> dict[str, str]:
    import open_clip

    from . import __version__
    return {"clipiqa": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def save_checkpoint(model, path: str | os.PathLike, *, trainable: str | None = None,
                    training: dict | None = None, data: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Save the adapter tensors of ``model`` and a card. ``path`` is a folder or ``NAME.safetensors``."""
    tensor_path, card_path = _paths(path)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.adapter_parameters()}
    card = {
        "format": "clipiqa-checkpoint", "version": CARD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": model.source.card(),
        "prompt_config": model.prompt_config.to_dict(),
        "tuned_blocks": model.n_tuned_blocks,
        "trainable": trainable,
        "training": training or {},
        "data": data or {},
        "metrics": metrics or {},
        "libraries": library_versions(),
        **(extra or {}),
    }
    if model.random_init:
        card["warning"] = "random-init backbone: every score from this checkpoint is meaningless"
    save_file(tensors, str(tensor_path), metadata={"format": "clipiqa-checkpoint"})
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, default=str))
    os.replace(tmp, card_path)
    return tensor_path


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    tensor_path, card_path = _paths(path)
    for p in (tensor_path, card_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file {p} is missing; a clipiqa checkpoint is a folder with "
                                    "adapter.safetensors + card.json, or NAME.safetensors + NAME.json")
    card = json.loads(card_path.read_text())
    if card.get("format") != "clipiqa-checkpoint":
        raise ValueError(f"{card_path} is not a clipiqa checkpoint card (format={card.get('format')!r})")
    return Checkpoint(tensors=load_file(str(tensor_path)), card=card, path=tensor_path)


def check_compatible(model, card: dict[str, Any]) -> None:
    """Refuse a checkpoint made for another backbone, saying what differs."""
    saved, here = card["backbone"], model.source.card()
    diffs = [f"{key}: checkpoint has {saved.get(key)!r}, this model has {here.get(key)!r}"
             for key in ("arch", "fingerprint") if saved.get(key) != here.get(key)]
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint was made for backbone {saved.get('preset')!r} ({saved.get('weights')}) and does not fit "
            f"this model ({here.get('preset')!r}, {here.get('weights')}): " + "; ".join(diffs)
            + ". Load the model with the same preset and weights the checkpoint names.")
    if card["prompt_config"] != model.prompt_config.to_dict():
        raise CheckpointMismatchError(
            "checkpoint prompt config differs from the model's: load the model with "
            "load_model(..., prompts=<checkpoint path>) so the prompt layout is taken from the card")


def apply_checkpoint(model, checkpoint: Checkpoint | str | os.PathLike) -> dict[str, Any]:
    """Copy the checkpoint's tensors into ``model`` (after checking it fits); returns the card."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    check_compatible(model, checkpoint.card)
    if checkpoint.card.get("tuned_blocks"):
        model.add_tuned_blocks(int(checkpoint.card["tuned_blocks"]))
    params = dict(model.adapter_parameters())
    missing = sorted(set(params) - set(checkpoint.tensors))
    unexpected = sorted(set(checkpoint.tensors) - set(params))
    if missing or unexpected:
        raise CheckpointMismatchError(f"checkpoint {checkpoint.path} tensors do not match the model: "
                                      f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            t = checkpoint.tensors[name]
            if t.shape != p.shape:
                raise CheckpointMismatchError(f"tensor {name}: checkpoint shape {tuple(t.shape)} != model "
                                              f"shape {tuple(p.shape)}")
            p.copy_(t.to(p.device, p.dtype))
    model.enable_adapters(True)
    return checkpoint.card
