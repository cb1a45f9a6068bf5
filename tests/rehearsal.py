"""The dress rehearsal of the real path: random-init weights laid into a temporary Hugging Face cache exactly as
the hub lays a download (``models--ORG--REPO/blobs/<sha256>``, ``snapshots/<revision>/<file>`` links to the blobs,
``refs/main``), so that ``load_model("vitb16-openai")`` with ``HF_HUB_OFFLINE=1`` finds them as it would find real
weights. The weights file says it is random (safetensors metadata ``clipiqa_random_init``), so everything made
with it is labelled random-init.

``rehearsal_cache()`` builds the ViT-B/16 cache once per test process (the full paper architecture: ~150 M
parameters, ~600 MB on disk; a few seconds) and removes it at exit. ``rehearsal_env(cache)`` is the environment a
subprocess or notebook kernel needs; :func:`use_cache` points this process's hub library at a cache.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

def refuse_network(mp) -> None:
    """Make any socket connection fail the test (``mp``: a ``pytest.MonkeyPatch``): offline means offline."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)


REVISION = "0123456789abcdef0123456789abcdef01234567"  # any 40-hex commit id; the hub writes the real one


def _blob(repo_dir: Path, data_path: Path) -> str:
    h = hashlib.sha256()
    with open(data_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    blob = repo_dir / "blobs" / h.hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(data_path), blob)
    return h.hexdigest()


def lay_hub_snapshot(cache: Path, repo: str, clip: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict,
                     random_init: bool = True, revision: str = REVISION) -> Path:
    """Write ``clip`` into ``cache`` as the hub would for ``repo``; returns the snapshot folder."""
    from clipiqa.weights import weights_metadata
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    staging = repo_dir / "staging"
    staging.mkdir(exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(staging / "weights"), metadata=weights_metadata(random_init))
    config = {"model_cfg": model_cfg,
              "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_cfg.items()}}
    (staging / "config").write_text(json.dumps(config, indent=2))
    for name, staged in (("open_clip_model.safetensors", "weights"), ("open_clip_config.json", "config")):
        digest = _blob(repo_dir, staging / staged)
        link = snapshot / name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(Path("..") / ".." / "blobs" / digest)
    staging.rmdir()
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def random_clip(arch: str, quick_gelu: bool, seed: int = 0, **overrides) -> tuple[torch.nn.Module, dict, dict]:
    """A random-init open_clip model of ``arch`` (built-in config, ``overrides`` replacing top-level config
    entries, e.g. a shallower ``vision_cfg``); returns the model, its config and preprocessing."""
    import logging
    cfg = open_clip.get_model_config(arch)
    cfg.update(overrides)
    if quick_gelu:
        cfg["quick_gelu"] = True
    kwargs = {k: cfg[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu, **kwargs)
    finally:
        logging.getLogger().setLevel(level)
    return clip, cfg, dict(open_clip.get_model_preprocess_cfg(clip))


@lru_cache(maxsize=None)
def rehearsal_cache(preset_name: str = "vitb16-openai") -> Path:
    """A Hugging Face cache holding random-init weights of the full architecture of ``preset_name`` at its hub
    repository (built once per process, removed at exit)."""
    from clipiqa.presets import get_preset
    preset = get_preset(preset_name)
    root = Path(tempfile.mkdtemp(prefix="clipiqa-rehearsal-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    clip, cfg, preprocess = random_clip(preset.arch, preset.quick_gelu)
    tag_cfg = open_clip.get_pretrained_cfg(preset.arch, preset.tag)
    preprocess.update({k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg})
    cache = root / "hub"
    lay_hub_snapshot(cache, preset.hf_hub, clip, cfg, preprocess)
    return cache


def rehearsal_env(cache: Path, base: dict | None = None, **extra: str) -> dict:
    """Environment for a subprocess or kernel: offline hub, the cache, the rehearsal switch, no CLIPIQA_WEIGHTS."""
    env = dict(os.environ if base is None else base)
    env.pop("CLIPIQA_WEIGHTS", None)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"),
               CLIPIQA_REHEARSAL="1", **extra)
    return env


def use_cache(monkeypatch, cache: Path) -> None:
    """Point this process's hub library (and any subprocess) at ``cache``, offline."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    for key, value in rehearsal_env(cache, base={}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CLIPIQA_WEIGHTS", raising=False)


def rn50_folder(tmp_path: Path, seed: int = 0) -> Path:
    """A random ResNet CLIP shrunk in depth and width (open_clip's ModifiedResNet, attention pool, the text tower),
    exported as an open_clip folder for ``load_model("rn50-openai", weights=folder)``."""
    from clipiqa.weights import ModelSource, export_backbone
    clip, cfg, preprocess = random_clip("RN50", True, seed=seed, embed_dim=64,
                                        vision_cfg={"image_size": 224, "layers": [1, 1, 1, 1], "width": 16,
                                                    "head_width": 16},
                                        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64,
                                                  "heads": 2, "layers": 2})
    source = ModelSource(preset="rn50-openai", arch="RN50", weights="random-init", random_init=True, model_cfg=cfg,
                         preprocess_cfg=preprocess)
    return export_backbone(clip, source, tmp_path / "rn50-small")
