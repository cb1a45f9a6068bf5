"""The lesson weights on disk: only what training changed (float16, the untouched token-embedding rows left
out) with the SHA-256 of the assembled state; the committed file, the cache, and building on first use under a
file lock."""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .recipe import FORMAT, LessonRecipe, config_hash
from .training import TOKEN_EMBEDDING, Progress, create_clip, deterministic_torch, train_lesson

WEIGHTS_NAME = "lesson.safetensors"


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


def tqdm_progress(desc: str) -> Progress:
    """A ``progress(done, total)`` that draws a tqdm bar on stderr."""
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
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / "build.lock")):
        if target.is_file():
            try:
                return read_weights(target, model_cfg, recipe, arch), f"lesson:cache {target}"
            except StaleWeightsError as e:
                logging.getLogger(__name__).warning("cached lesson weights rebuilt: %s", e)
        build_weights(target, model_cfg, recipe, arch,
                      progress or tqdm_progress("building the lesson model (first use, ~5 min)"))
        return read_weights(target, model_cfg, recipe, arch), f"lesson:built {target}"
