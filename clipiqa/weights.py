"""Where backbone weights come from, in this order (DESIGN 4):

1. ``weights=`` an explicit local file or folder: never touches the network;
2. ``$CLIPIQA_WEIGHTS/<preset>/``: a local folder in open_clip's ``local-dir`` format;
3. the Hugging Face cache (``$HF_HOME`` / ``$HF_HUB_CACHE``), read with ``local_files_only``;
4. a hub download through open_clip's pretrained tag, only when the hub is reachable.

A folder carries its own ``open_clip_config.json`` (model and preprocessing config travel with the weights).
A bare weights file uses the preset's architecture and preprocessing, recorded in ``ModelSource``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save_file

from .presets import Preset

WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HUB_HOST = ("huggingface.co", 443)
TINY_SEED = 1234


class WeightsUnavailableError(RuntimeError):
    """No local weights were found and the model hub cannot be reached."""


@dataclass
class ModelSource:
    """What was loaded, recorded in checkpoint cards and shown in reports."""

    preset: str
    arch: str
    weights: str  # a local path, "hub:<repo>" or "random-init"
    random_init: bool
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def card(self) -> dict[str, Any]:
        return {"preset": self.preset, "arch": self.arch, "weights": self.weights,
                "random_init": self.random_init, "fingerprint": self.fingerprint}


def how_to_provide_weights(preset: Preset) -> str:
    from huggingface_hub import constants
    return (
        f"Ways to provide the {preset.name} weights:\n"
        f"  1. pass a local file or folder: load_model({preset.name!r}, weights='/path/to/folder') or "
        f"`clipiqa score ... --weights /path`; a folder holds open_clip_config.json plus "
        f"open_clip_model.safetensors (the layout of the hub repo {preset.hf_hub});\n"
        f"  2. put that folder at $CLIPIQA_WEIGHTS/{preset.name}/ (CLIPIQA_WEIGHTS is "
        f"{os.environ.get('CLIPIQA_WEIGHTS', 'not set')});\n"
        f"  3. fill the Hugging Face cache on a machine with network access, "
        f"e.g. `huggingface-cli download {preset.hf_hub}`, and copy the cache to {constants.HF_HUB_CACHE} "
        f"(or point HF_HOME / HF_HUB_CACHE at it);\n"
        f"  4. run with network access once: the hub download then lands in that cache.\n"
        f"For tests and smoke runs without weights use the 'tiny' preset (random init, meaningless scores)."
    )


def hub_reachable(timeout: float = 1.5) -> bool:
    """True when the model hub accepts a TCP connection; False offline or with HF_HUB_OFFLINE=1."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _cached_hub_file(repo: str) -> str | None:
    from huggingface_hub import constants, try_to_load_from_cache
    for name in WEIGHT_FILES:
        hit = try_to_load_from_cache(repo_id=repo, filename=name, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _weights_file_in(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if len(found) > 1:
        raise ValueError(f"Folder {folder} holds several weight files ({', '.join(p.name for p in found)}); "
                         f"keep one, or name it as {WEIGHT_FILES[0]}")
    return found[0] if found else None


def _arch_cfg(preset: Preset) -> dict[str, Any]:
    if preset.model_cfg is not None:
        cfg = json.loads(json.dumps(preset.model_cfg))
    else:
        cfg = open_clip.get_model_config(preset.arch)
    if preset.quick_gelu:
        cfg["quick_gelu"] = True
    return cfg


@contextmanager
def _no_network():
    """Refuse sockets while loading from a local path: a local path must never reach the network."""
    real = socket.socket.connect

    def refuse(self, *args, **kwargs):
        raise OSError("clipiqa: network access refused while loading local weights")

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = real


def _create(name: str, pretrained: str | None, preset: Preset, model_cfg: dict[str, Any] | None) -> torch.nn.Module:
    kwargs: dict[str, Any] = {}
    if model_cfg is not None and not name.startswith("local-dir:"):
        kwargs = {k: v for k, v in model_cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg")}
    logger = logging.getLogger()
    level = logger.level
    if pretrained is None and not name.startswith("local-dir:"):
        logger.setLevel(logging.ERROR)  # open_clip warns about random init; clipiqa labels it itself
    try:
        return open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=preset.quick_gelu and
                                      not name.startswith("local-dir:"), **kwargs)
    finally:
        logger.setLevel(level)


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short, fast hash of a state dict: names, shapes and the first 1024 values of every tensor."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().reshape(-1)[:1024].float().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(state[name].shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def load_backbone(preset: Preset, weights: str | os.PathLike | None = None) -> tuple[torch.nn.Module, ModelSource]:
    """Build the open_clip model for ``preset`` with weights resolved as described in the module docstring."""
    model_cfg = _arch_cfg(preset)
    if weights is None and os.environ.get("CLIPIQA_WEIGHTS") and not preset.random_init:
        candidate = Path(os.environ["CLIPIQA_WEIGHTS"]) / preset.name
        if candidate.is_dir():
            weights = candidate

    if weights is not None:
        path = Path(weights).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"weights={str(weights)!r} does not exist; give a weights file "
                                    f"({', '.join(WEIGHT_SUFFIXES)}) or a folder with open_clip_config.json")
        random_init = False
        with _no_network():
            if path.is_dir() and (path / "open_clip_config.json").is_file():
                with open(path / "open_clip_config.json") as f:
                    folder_cfg = json.load(f)
                model_cfg = folder_cfg["model_cfg"]
                random_init = bool(folder_cfg.get("clipiqa", {}).get("random_init", False))
                if _weights_file_in(path) is None:
                    raise FileNotFoundError(f"Folder {path} has open_clip_config.json but no weights file "
                                            f"(expected {WEIGHT_FILES[0]})")
                clip = _create(f"local-dir:{path}", None, preset, None)
            else:
                file = _weights_file_in(path) if path.is_dir() else path
                if file is None:
                    raise FileNotFoundError(f"Folder {path} holds no weights file ({', '.join(WEIGHT_SUFFIXES)})")
                clip = _create(preset.arch, str(file), preset, model_cfg if preset.model_cfg else None)
        source_weights = str(path.resolve())
    elif preset.random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            clip = _create(preset.arch, None, preset, model_cfg)
        source_weights, random_init = "random-init", True
    else:
        cached = _cached_hub_file(preset.hf_hub)
        if cached is not None:
            with _no_network():
                clip = _create(preset.arch, cached, preset, None)
            source_weights = cached
        elif hub_reachable():
            clip = _create(preset.arch, preset.tag, preset, None)
            source_weights = f"hub:{preset.hf_hub}"
        else:
            raise WeightsUnavailableError(
                f"No weights for model preset {preset.name!r} were found locally and the model hub "
                f"({HUB_HOST[0]}) cannot be reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}).\n"
                + how_to_provide_weights(preset))
        random_init = False

    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(clip))
    source = ModelSource(preset=preset.name, arch=preset.arch, weights=source_weights, random_init=random_init,
                         model_cfg=model_cfg, preprocess_cfg=preprocess_cfg,
                         fingerprint=fingerprint(clip.state_dict()))
    return clip, source


def export_backbone(clip: torch.nn.Module, source: ModelSource, folder: str | os.PathLike) -> Path:
    """Write ``clip`` as an open_clip local-dir folder (config + safetensors) that ``weights=`` can load."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": source.model_cfg, "preprocess_cfg": _jsonable(source.preprocess_cfg),
              "clipiqa": {"preset": source.preset, "random_init": source.random_init}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(folder / WEIGHT_FILES[0]))
    return folder


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
