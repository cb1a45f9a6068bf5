"""Periodic checkpoints of a meta-training run and resuming from them: the RNG state, the position, the run's
tensors (meta, start, best, outer moments, released inner model), written atomically and checked on resume."""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint
from ..history import MetaHistory
from .config import MetaConfig
from .run import MetaRun, Position

STATE_VERSION = 2


def _rng_state() -> dict:
    def b64(t: torch.Tensor) -> str:
        return base64.b64encode(t.cpu().numpy().tobytes()).decode()
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {"torch": b64(torch.get_rng_state()),
           "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
           "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_state(state: Mapping[str, Any]) -> None:
    def unb64(s: str) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())
    torch.set_rng_state(unb64(state["torch"]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([unb64(s) for s in state["cuda"]])


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target`` (a missing ``target`` is never observed for long)."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json.tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, default=str)
    os.replace(tmp, path)


def save_state(out_dir: Path, run: MetaRun) -> None:
    """A periodic checkpoint: ``state/<name>/`` (meta params as a clipiqa checkpoint; start, best, outer-optimizer
    and released-loop tensors; state.json), then ``state/latest.json`` is switched to it atomically and older
    state folders are removed."""

    def tensors(d: Mapping[str, torch.Tensor], name: str) -> None:
        save_file({n: t.detach().cpu().contiguous() for n, t in d.items()}, str(tmp / name))

    runner, pos = run.runner, run.position
    states = out_dir / "state"
    states.mkdir(parents=True, exist_ok=True)
    name = f"e{pos.epoch:04d}-s{pos.meta_step:07d}-{time.time_ns()}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=states))
    runner.load(run.theta)
    save_checkpoint(run.model, tmp / "theta", trainable=runner.config.trainable, training=runner.config.to_dict())
    tensors(run.theta0, "theta0.safetensors")
    if run.best is not None:
        tensors(run.best, "best.safetensors")
    if run.outer.state:
        tensors(run.outer.tensors(), "outer.safetensors")
    if run.released is not None:
        tensors(run.released.phi, "phi.safetensors")
        torch.save(run.released.optimizer.state_dict(), tmp / "inner_optimizer.pt")
    _write_json(tmp / "state.json", {
        "version": STATE_VERSION, "position": asdict(pos), "history": run.history.to_dict(),
        "config": runner.config.to_dict(), "rng": _rng_state()})
    os.replace(tmp, states / name)
    _write_json(states / "latest.json", {"folder": name})
    for other in states.iterdir():
        if other.name not in (name, "latest.json") and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def resume(out_dir: Path, run: MetaRun) -> bool:
    """Restore ``run`` in place from the latest periodic checkpoint in ``out_dir`` (tensors, position, history,
    the global random generators); False when there is none. State written before the run record was split
    (``history`` holding the fine-tuning fields too) resumes the same way."""
    pointer = out_dir / "state" / "latest.json"
    if not pointer.is_file():
        return False
    folder = out_dir / "state" / json.loads(pointer.read_text())["folder"]
    state = json.loads((folder / "state.json").read_text())
    _check_resumable(state, run.config, run.history)
    device = run.device

    def tensors(name: str) -> dict[str, torch.Tensor] | None:
        path = folder / name
        return {n: t.to(device) for n, t in load_file(str(path)).items()} if path.is_file() else None

    apply_checkpoint(run.model, read_checkpoint(folder / "theta"))
    run.theta = run.runner.theta()
    run.theta0 = tensors("theta0.safetensors")
    run.best = tensors("best.safetensors")
    run.outer.load_tensors(tensors("outer.safetensors") or {}, device)
    if run.released is not None:
        run.released.phi = tensors("phi.safetensors")
        run.released.optimizer.load_state_dict(
            torch.load(folder / "inner_optimizer.pt", map_location=device, weights_only=True))
    _set_rng_state(state["rng"])
    run.position = Position(**state["position"])
    run.history = MetaHistory.from_dict(state["history"])
    run.history.resumed_from = run.position.meta_step
    run.history.config = run.config.to_dict()
    run.history.stopped = False
    return True


def _check_resumable(state: dict, config: MetaConfig, history: MetaHistory) -> None:
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"periodic checkpoint version {state.get('version')} is not {STATE_VERSION}; "
                         "start again with resume=False or another out_dir")
    saved = {k: v for k, v in state["config"].items() if k != "epochs"}
    here = {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "epochs"}
    diff = sorted(k for k in set(saved) | set(here) if saved.get(k) != here.get(k))
    if diff:
        raise ValueError(f"cannot resume: the periodic checkpoint was made with other settings ({', '.join(diff)}: "
                         f"{[saved.get(k) for k in diff]} there, {[here.get(k) for k in diff]} now); only epochs "
                         "may change. Use resume=False (--no-resume) or another out_dir")
    old = state["history"]
    if old["train_tasks"] != history.train_tasks or old["holdout_tasks"] != history.holdout_tasks:
        raise ValueError("cannot resume: the periodic checkpoint was made with other tasks; use resume=False "
                         "(--no-resume) or another out_dir")

