"""Where backbone weights come from, in this order (docs/design.md, 'Weights, checkpoints and export'):

1. ``weights=`` an explicit local file or folder (or a model named by its folder): never touches the network;
2. ``$CLIPIQA_WEIGHTS/<name>/``: a local folder in open_clip's ``local-dir`` format, named after the model
   (``vitb16-openai``, ``ViT-L-14--openai``) or after its hub repository (``vit_large_patch14_clip_224.openai``);
3. the Hugging Face cache (``$HF_HOME`` / ``$HF_HUB_CACHE``), read locally only;
4. a hub download (open_clip's pretrained tag or ``hf-hub:`` repository), only when the hub is reachable; else a
   fast :class:`WeightsUnavailableError` naming the ways to provide weights.

A folder (and a hub snapshot) carries its own ``open_clip_config.json``: model and preprocessing config travel
with the weights. A bare weights file uses the architecture of the name and the tag's preprocessing, recorded in
``ModelSource``. Names are resolved by :func:`clipiqa.zoo.resolve_model`; unsupported towers are refused before
anything is built. Weights say themselves when they are random-init or a toy (:func:`weight_markers`), and
:func:`weights_line` is the one line that says what runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from huggingface_hub import constants, try_to_load_from_cache
from safetensors import safe_open
from safetensors.torch import save_file

from .inference import precision_name
from .lesson import LessonRecipe, load_lesson
from .caveats import CaveatOfWeights
from .presets import Preset, get_preset
from .zoo import UnsupportedModelError, check_supported_config, folder_names, read_folder_config

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PREPROCESS_KEYS = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")
RANDOM_MARKER, TOY_MARKER = "clipiqa_random_init", "clipiqa_toy"  # safetensors metadata keys
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HUB_HOST = ("huggingface.co", 443)
TINY_SEED = 1234


class WeightsUnavailableError(RuntimeError):
    """No local weights were found and the model hub cannot be reached."""


@dataclass
class ModelSource(CaveatOfWeights):
    """What was loaded, recorded in checkpoint cards and shown in reports. ``preset`` is the model's name as
    given to ``load_model`` (a preset, ``ARCH:TAG``, ``hf-hub:ORG/REPO`` or a folder path), so a card names the
    model that ``load_model(prompts=card)`` loads again."""

    preset: str
    arch: str
    weights: str  # a local path, "hub:<repo>", "random-init" or "lesson:<committed|cache|built> <path>"
    random_init: bool
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    toy: bool = False  # the lesson model: trained by clipiqa on synthetic distortions (not random, not real CLIP)
    tokenizer: str = ""  # what open_clip.get_tokenizer is given: the architecture, or local-dir:<folder with config>


    def card(self) -> dict[str, Any]:
        return {"preset": self.preset, "arch": self.arch, "weights": self.weights,
                "random_init": self.random_init, "toy": self.toy, "label": self.label,
                "fingerprint": self.fingerprint}


def how_to_provide_weights(preset: Preset) -> str:

    repo = preset.hf_hub or "ORG/REPO"
    folders = " or ".join(f"$CLIPIQA_WEIGHTS/{n}/" for n in folder_names(preset))
    return (
        f"Ways to provide the {preset.name} weights:\n"
        f"  1. pass a local file or folder: load_model({preset.name!r}, weights='/path/to/folder') or "
        f"`clipiqa score ... --weights /path`; a folder holds open_clip_config.json plus "
        f"open_clip_model.safetensors (the layout of the hub repo {repo});\n"
        f"  2. put that folder at {folders} (CLIPIQA_WEIGHTS is "
        f"{os.environ.get('CLIPIQA_WEIGHTS', 'not set')});\n"
        f"  3. fill the Hugging Face cache on a machine with network access, e.g. `hf download {repo}` "
        f"(older hub versions: `huggingface-cli download {repo}`), and copy the cache to {constants.HF_HUB_CACHE} "
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


def cached_hub_snapshot(repo: str | None) -> tuple[Path, Path | None] | None:
    """``(weights file, open_clip_config.json or None)`` of ``repo`` in the Hugging Face cache, read locally only
    (``$HF_HUB_CACHE``, as the hub library resolves it); None when the cache holds no weights for it."""
    if not repo:
        return None
    for name in WEIGHT_FILES:
        hit = try_to_load_from_cache(repo_id=repo, filename=name, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(hit, str) and os.path.isfile(hit):
            config = try_to_load_from_cache(repo_id=repo, filename=CONFIG_FILE, cache_dir=constants.HF_HUB_CACHE)
            return Path(hit), Path(config) if isinstance(config, str) and os.path.isfile(config) else None
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
    elif preset.kind in ("hf-hub", "local"):
        raise ValueError(f"model {preset.name!r}: a bare weights file carries no architecture; give the open_clip "
                         "folder (open_clip_config.json + weights) instead, or name the model ARCH:TAG")
    else:
        cfg = open_clip.get_model_config(preset.arch)
    if preset.quick_gelu:
        cfg["quick_gelu"] = True
    return cfg


def _check_config(preset: Preset, model_cfg: dict[str, Any]) -> None:
    """Refuse an architecture clipiqa cannot wrap before anything is built (the zero-shot ResNet preset aside)."""
    if preset.frozen_only:
        if not isinstance((model_cfg.get("vision_cfg") or {}).get("layers"), (list, tuple)):
            raise UnsupportedModelError(f"model {preset.name!r} is CLIP-IQA's zero-shot ResNet configuration; its "
                                        "weights must hold an open_clip ResNet image tower")
        return
    check_supported_config(model_cfg, preset.name)


def _read_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return read_folder_config(path.parent) if path.name == CONFIG_FILE else read_folder_config(path)


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
    local = name.startswith(("local-dir:", "hf-hub:"))
    if model_cfg is not None and not local:
        kwargs = {k: v for k, v in model_cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg")}
    quick_gelu = (preset.quick_gelu or bool((model_cfg or {}).get("quick_gelu"))) and not local
    logger = logging.getLogger()
    level = logger.level
    if pretrained is None and not local:
        logger.setLevel(logging.ERROR)  # open_clip warns about random init; clipiqa labels it itself
    try:
        return open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick_gelu, **kwargs)
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


def weight_markers(file: Path | None, config: dict[str, Any] | None) -> tuple[bool, bool]:
    """``(random_init, toy)`` as the weights say of themselves: the safetensors metadata ``clipiqa_random_init`` /
    ``clipiqa_toy`` (written by :func:`export_backbone` and the CI rehearsal) or the folder config's ``clipiqa``
    entry. Real hub files carry neither, so they read as real weights."""
    meta: dict[str, str] = {}
    if file is not None and file.suffix == ".safetensors":
        try:
            with safe_open(str(file), "pt") as f:
                meta = f.metadata() or {}
        except Exception:  # noqa: BLE001 - an unreadable header fails later, with open_clip's own message
            meta = {}
    own = (config or {}).get("clipiqa") or {}
    return (meta.get(RANDOM_MARKER) == "true" or bool(own.get("random_init")),
            meta.get(TOY_MARKER) == "true" or bool(own.get("toy")))


def _env_folder(preset: Preset) -> Path | None:
    root = os.environ.get("CLIPIQA_WEIGHTS")
    if not root or preset.random_init or preset.kind == "local":
        return None
    for name in folder_names(preset):
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def _preprocess_cfg(clip: torch.nn.Module, preset: Preset, config: dict[str, Any] | None) -> dict[str, Any]:
    """open_clip's preprocessing of ``clip``, overlaid with the tag's (a bare weights file loses it otherwise:
    open_clip #1068) and then with the config that travels with the weights; set back on ``clip``."""
    cfg = dict(open_clip.get_model_preprocess_cfg(clip))
    overlays = []
    if preset.tag and preset.kind in ("preset", "tag"):
        overlays.append(open_clip.get_pretrained_cfg(preset.arch, preset.tag) or {})
    if config:
        overlays.append(config.get("preprocess_cfg") or {})
    for overlay in overlays:
        cfg.update({k: v for k, v in overlay.items() if k in PREPROCESS_KEYS and v is not None})
    if "mean" in cfg and "std" in cfg:
        open_clip.set_model_preprocess_cfg(clip, cfg)
    return cfg


def _load_local(preset: Preset, weights: str | os.PathLike):
    """An explicit local file or folder, with sockets refused. Returns clip, source string, file, config, cfg."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"weights={str(weights)!r} does not exist; give a weights file "
                                f"({', '.join(WEIGHT_SUFFIXES)}) or a folder with {CONFIG_FILE}")
    with _no_network():
        if path.is_dir() and (path / CONFIG_FILE).is_file():
            config = _read_config(path)
            model_cfg = config["model_cfg"]
            file = _weights_file_in(path)
            if file is None:
                raise FileNotFoundError(f"Folder {path} has {CONFIG_FILE} but no weights file "
                                        f"(expected {WEIGHT_FILES[0]})")
            _check_config(preset, model_cfg)
            clip = _create(f"local-dir:{path}", None, preset, None)
        else:
            config = None
            file = _weights_file_in(path) if path.is_dir() else path
            if file is None:
                raise FileNotFoundError(f"Folder {path} holds no weights file ({', '.join(WEIGHT_SUFFIXES)})")
            model_cfg = _arch_cfg(preset)
            _check_config(preset, model_cfg)
            try:
                clip = _create(preset.arch, str(file), preset, model_cfg if preset.model_cfg else None)
            except Exception as e:  # noqa: BLE001 - torch/open_clip raise many types, none naming the file
                first = ("a pickle holding more than tensors, which is never unpickled"
                         if isinstance(e, pickle.UnpicklingError)
                         else "its tensor names or shapes are not this architecture's" if "state_dict" in str(e)
                         else (str(e).strip() or type(e).__name__).splitlines()[0][:200])
                raise ValueError(f"weights file {file} cannot be loaded as {preset.arch} weights ({first}); give "
                                 f"this architecture's open_clip weights (.safetensors, or a .pt/.bin state dict "
                                 f"of tensors; other pickles are never loaded) or a folder with "
                                 f"{CONFIG_FILE}") from e
    return clip, str(path.resolve()), file, config, model_cfg


def _load_from_hub(preset: Preset):
    """The Hugging Face cache (local only), else a hub download when the hub is reachable, else a fast, clear
    error. Returns clip, source string, file, config, cfg."""
    cached = cached_hub_snapshot(preset.hf_hub)
    if cached is not None:
        file, config_file = cached
        config = _read_config(config_file)
        with _no_network():
            if preset.kind == "hf-hub":
                if config is None:
                    raise WeightsUnavailableError(f"the Hugging Face cache holds weights of {preset.hf_hub} but no "
                                                  f"{CONFIG_FILE}; download the whole repository")
                _check_config(preset, config["model_cfg"])
                clip = _create(f"local-dir:{file.parent}", None, preset, None)
                model_cfg = config["model_cfg"]
            else:  # the config that travels with the weights, else open_clip's built-in one for ARCH
                model_cfg = dict(config["model_cfg"]) if config else _arch_cfg(preset)
                _check_config(preset, model_cfg)
                clip = _create(preset.arch, str(file), preset, model_cfg if config else None)
        return clip, str(file), file, config, model_cfg
    if hub_reachable():
        if preset.kind == "hf-hub":
            clip = _create(f"hf-hub:{preset.hf_hub}", None, preset, None)
        else:
            _check_config(preset, _arch_cfg(preset))
            clip = _create(preset.arch, preset.tag, preset, None)
        cached = cached_hub_snapshot(preset.hf_hub)
        config = _read_config(cached[1]) if cached else None
        model_cfg = config["model_cfg"] if config else _arch_cfg(preset)
        return clip, f"hub:{preset.hf_hub or preset.name}", cached[0] if cached else None, config, model_cfg
    raise WeightsUnavailableError(
        f"No weights for model {preset.name!r} were found locally and the model hub "
        f"({HUB_HOST[0]}) cannot be reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}).\n"
        + how_to_provide_weights(preset))


def load_backbone(preset: Preset, weights: str | os.PathLike | None = None) -> tuple[torch.nn.Module, ModelSource]:
    """Build the open_clip model for ``preset`` with weights resolved as described in the module docstring."""
    if weights is None:
        weights = preset.folder if preset.kind == "local" else _env_folder(preset)
    file, config = None, None
    if weights is not None:
        clip, source_weights, file, config, model_cfg = _load_local(preset, weights)
        random_init, toy = weight_markers(file, config)
        toy = toy or (preset.toy and config is None)
    elif preset.random_init:
        model_cfg = _arch_cfg(preset)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            clip = _create(preset.arch, None, preset, model_cfg)
        source_weights, random_init, toy = "random-init", True, False
    elif preset.lesson is not None:  # trained by clipiqa itself: committed file, cache, or built on first use
        model_cfg = _arch_cfg(preset)
        clip, source_weights = load_lesson(model_cfg, LessonRecipe.from_dict(preset.lesson), preset.arch)
        random_init, toy = False, True
    else:
        clip, source_weights, file, config, model_cfg = _load_from_hub(preset)
        random_init, toy = weight_markers(file, config)

    preprocess_cfg = _preprocess_cfg(clip, preset, config)
    folder = file.parent if file is not None and config is not None else None
    source = ModelSource(preset=preset.name, arch=preset.arch, weights=source_weights, random_init=random_init,
                         model_cfg=model_cfg, preprocess_cfg=preprocess_cfg,
                         fingerprint=fingerprint(clip.state_dict()), toy=toy,
                         tokenizer=f"local-dir:{folder}" if folder is not None else preset.arch)
    if preset.lesson is not None:
        source.extra["lesson"] = {k: preset.lesson[k] for k in ("pretrain_types", "heldout_types", "train_photos",
                                                                "heldout_photos", "train_kinds", "heldout_kinds")}
    return clip, source


def weights_are_random(name: str, weights: str | os.PathLike | None = None) -> bool:
    """Whether ``load_model(name, weights)`` would load random-init weights, found without building the model:
    a random-init preset, or weights (explicit, ``$CLIPIQA_WEIGHTS``, Hugging Face cache) marked random."""
    preset = get_preset(name)
    if weights is None:
        weights = preset.folder if preset.kind == "local" else _env_folder(preset)
    if weights is None:
        if preset.random_init:
            return True
        cached = None if preset.lesson is not None else cached_hub_snapshot(preset.hf_hub)
        return bool(cached) and weight_markers(cached[0], _read_config(cached[1]))[0]
    path = Path(weights).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return weight_markers(_weights_file_in(path), _read_config(path))[0]
    file = _weights_file_in(path) if path.is_dir() else path
    return weight_markers(file, None)[0] if file is not None and file.exists() else False


def describe_weights(source: ModelSource) -> str:
    """Where the weights came from, for the weights line: file or hub repository, and its fingerprint."""
    where = source.weights
    if where == "random-init":
        where = "random init (no weights file)"
    elif where.startswith("hub:"):
        where = f"hub {where[4:]}"
    return f"{where}, fingerprint {source.fingerprint}"


def weights_line(model, amp: bool | str | None = None) -> str:
    """One line that tells a real run from a random or toy one at a glance: the model name, where the weights came
    from (file or hub repository), their fingerprint, the device and the precision that runs with ``amp``
    (:func:`clipiqa.inference.precision_name`), and the random-init / toy label. Shown by the CLI (stderr) and
    for notebooks: ``print(weights_line(model))``."""
    source = model.source
    label = f" [{source.label}]" if source.label else ""
    arch = f" ({source.arch})" if source.arch not in source.preset else ""
    if source.toy and hasattr(model, "clip"):  # its config borrows an architecture's name: say what it is
        arch = f" ({_toy_size(model)})"
    return (f"model {source.preset}{arch}: weights {describe_weights(source)}; {model.device.type} "
            f"{precision_name(model.device, amp)}{label}")


def _toy_size(model) -> str:
    """``a toy open_clip ViT: 64 px, 4 layers, width 64`` (read from the model itself)."""
    visual = model.clip.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    return (f"a toy open_clip ViT: {size} px, {len(visual.transformer.resblocks)} layers, width "
            f"{visual.transformer.width}")


def export_backbone(clip: torch.nn.Module, source: ModelSource, folder: str | os.PathLike) -> Path:
    """Write ``clip`` as an open_clip local-dir folder (config + safetensors) that ``weights=`` can load, and that
    ``load_model(folder)`` loads by itself. Random-init and toy weights are marked as such in both files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": source.model_cfg, "preprocess_cfg": _jsonable(source.preprocess_cfg),
              "clipiqa": {"preset": source.preset, "arch": source.arch, "random_init": source.random_init,
                          "toy": source.toy}}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(folder / WEIGHT_FILES[0]), metadata=weights_metadata(source.random_init, source.toy))
    return folder


def weights_metadata(random_init: bool, toy: bool = False) -> dict[str, str]:
    """safetensors metadata that marks random-init / toy weights wherever the file goes (:func:`weight_markers`)."""
    return {"format": "pt", RANDOM_MARKER: "true" if random_init else "false", TOY_MARKER: "true" if toy else "false"}


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
