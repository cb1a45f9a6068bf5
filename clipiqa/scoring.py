"""Batch scoring of image files: one row per input, a bad file gets an error row and the batch goes on."""
from __future__ import annotations

import os
from typing import Callable, Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from .imageio import ImageLoadError, list_images, load_image

ProgressFn = Callable[[int, int], None]


class ImageFiles(Dataset):
    """Loads and preprocesses files; a file that cannot be read yields its error instead of a tensor."""

    def __init__(self, paths: Sequence[str], transform: Callable):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(load_image(self.paths[i])), ""
        except ImageLoadError as e:
            return i, None, str(e)
        except Exception as e:  # a transform failing on an odd image must not kill the batch
            return i, None, f"cannot process {self.paths[i]}: {type(e).__name__}: {e}"


def _collate(items):
    ok = [(i, t) for i, t, _ in items if t is not None]
    failed = [(i, err) for i, t, err in items if t is None]
    index = torch.tensor([i for i, _ in ok], dtype=torch.long)
    batch = torch.stack([t for _, t in ok]) if ok else None
    return index, batch, failed


def autocast_for(device: torch.device, amp: bool | None = None):
    """bf16 autocast on CUDA (the default there), a no-op on CPU."""
    enabled = device.type == "cuda" if amp is None else amp
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def score_files(model, paths: Sequence[str | os.PathLike], *, batch_size: int = 32, num_workers: int = 0,
                amp: bool | None = None, progress: ProgressFn | None = None) -> pd.DataFrame:
    """Score files with ``model`` (on its device). Returns ``path, score, status, error`` in input order.

    Folders in ``paths`` are expanded (recursively, image extensions); named files are always kept.

    ``status`` is "ok" or "error"; ``score`` is NaN for errors. ``progress(done, total)`` is called per batch.
    """
    paths = list_images([os.fspath(p) for p in paths])
    scores = [float("nan")] * len(paths)
    errors = [""] * len(paths)
    loader = DataLoader(ImageFiles(paths, model.preprocess), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=model.device.type == "cuda",
                        persistent_workers=False)
    was_training = model.training
    model.eval()
    done = 0
    with torch.inference_mode(), autocast_for(model.device, amp):
        for index, batch, failed in loader:
            if batch is not None:
                s = model.score(batch.to(model.device, non_blocking=True)).float().cpu()
                for i, v in zip(index.tolist(), s.tolist()):
                    scores[i] = v
            for i, err in failed:
                errors[i] = err
            done += len(index) + len(failed)
            if progress is not None:
                progress(done, len(paths))
    model.train(was_training)
    return pd.DataFrame({"path": paths, "score": scores,
                         "status": ["error" if e else "ok" for e in errors], "error": errors})


def score_files_sharded(model, paths: Sequence[str | os.PathLike], **kwargs) -> pd.DataFrame:
    """``score_files`` under ``torchrun``: each rank scores ``paths[rank::world]``; every rank returns the merged
    table in input order (identical to a single-process run). Single-process: plain ``score_files``."""
    from . import distributed
    paths = [os.fspath(p) for p in paths]
    order = distributed.shard(list(range(len(paths))))
    part = score_files(model, [paths[i] for i in order], **kwargs)
    part.index = order
    pieces = distributed.gather_objects(part)
    return pd.concat(pieces).sort_index().reset_index(drop=True)


def score_images(model, images: Sequence, amp: bool | None = None) -> torch.Tensor:
    """Score in-memory PIL images (or HxWx3 uint8 arrays) with the model's own preprocessing."""
    from PIL import Image
    pil = [Image.fromarray(im) if not isinstance(im, Image.Image) else im.convert("RGB") for im in images]
    batch = torch.stack([model.preprocess(im) for im in pil]).to(model.device)
    with torch.inference_mode(), autocast_for(model.device, amp):
        return model.score(batch).float().cpu()
