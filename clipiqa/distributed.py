"""Small helpers for PyTorch DDP runs started with ``torchrun`` (docs/design.md, 'Scale: torchrun').

Everything here is a no-op (or the obvious single-process answer) when the process is not part of an
initialised process group, so library code calls these helpers unconditionally:

* :func:`init_distributed` joins the group described by torchrun's environment variables (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); gloo on CPU, nccl on CUDA;
* :func:`get_rank`, :func:`get_world_size`, :func:`is_main`, :func:`local_rank`;
* :func:`all_reduce_sum_` / :func:`all_reduce_mean_` reduce a list of tensors in place (one flat buffer);
* :func:`broadcast_` copies tensors from one rank to all; :func:`all_reduce_max` for flags;
* :func:`shard` splits a list by rank (``items[rank::world]``); :func:`gather_objects` collects one picklable
  object per rank.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

__all__ = ["init_distributed", "cleanup", "is_distributed", "get_rank", "get_world_size", "local_rank",
           "is_main", "env_world_size", "device_for_rank", "all_reduce_sum_", "all_reduce_mean_",
           "all_reduce_max", "broadcast_", "barrier", "shard", "gather_objects"]

_OWNED = False  # True when init_distributed created the process group (so cleanup may destroy it)


def env_world_size() -> int:
    """World size announced by torchrun's environment (1 when not launched by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 when not set)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """True on rank 0 (and in any single-process run): the process that writes files and logs."""
    return get_rank() == 0


def init_distributed(backend: str | None = None, device: str | torch.device | None = None,
                     timeout_s: float = 1800.0) -> bool:
    """Join the process group that torchrun describes; returns True when running distributed.

    backend: ``None`` picks ``nccl`` when ``device`` is (or, for None/"auto", would be) CUDA and CUDA is
    available, else ``gloo``. Does nothing and returns False when ``WORLD_SIZE`` is 1 or unset; returns True
    without re-initialising when a group already exists.
    """
    global _OWNED
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if backend is None:
        backend = "nccl" if _wants_cuda(device) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    _OWNED = True
    return dist.get_world_size() > 1


def _wants_cuda(device: str | torch.device | None) -> bool:
    if not torch.cuda.is_available():
        return False
    return device is None or str(device) == "auto" or torch.device(device).type == "cuda"


def device_for_rank(device: str | torch.device | None) -> str:
    """The device this rank should use: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` when distributed and CUDA
    is available; anything else (``cpu``, an explicit ``cuda:1``) is returned unchanged."""
    name = "auto" if device is None else str(device)
    if env_world_size() > 1 and _wants_cuda(name) and name in ("auto", "cuda"):
        return f"cuda:{local_rank()}"
    return name


def cleanup() -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    global _OWNED
    if _OWNED and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# ------------------------------------------------------------------------------------------- collectives
def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def _unflat_(tensors: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    """Sum each tensor over all ranks, in place (one flat buffer, one collective). No-op when single-process.
    All tensors must share dtype and device."""
    if is_distributed() and tensors:
        flat = _flat(tensors)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        _unflat_(tensors, flat)
    return tensors


def all_reduce_mean_(tensors: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    """Average each tensor over all ranks, in place. No-op when single-process."""
    if is_distributed() and tensors:
        all_reduce_sum_(tensors)
        with torch.no_grad():
            for t in tensors:
                t.div_(get_world_size())
    return tensors


def all_reduce_max(value: float | bool, device: str | torch.device = "cpu") -> float:
    """The maximum of a scalar over all ranks (e.g. "did any rank ask to stop")."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> Sequence[torch.Tensor]:
    """Copy the tensors of rank ``src`` into every rank's tensors, in place. No-op when single-process."""
    if is_distributed() and tensors:
        flat = _flat(tensors)
        dist.broadcast(flat, src=src)
        _unflat_(tensors, flat)
    return tensors


# ------------------------------------------------------------------------------------------- work sharing
def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world_size]`` (deterministic, balanced within one)."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not valid for world size {world_size}")
    return list(items)[rank::world_size]


def gather_objects(obj: Any) -> list[Any]:
    """One picklable object from every rank, in rank order, on every rank (``[obj]`` when single-process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
