"""Batch scoring of image files: one row per input, a bad file gets an error row and the batch goes on.

Every score comes from :mod:`clipiqa.inference` (quality head in fp32 outside autocast). Each row has ``score``
(p_high in [0, 1], for display) and ``logit_margin`` (z_high - z_low, rank by it: it does not saturate).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed
from .imageio import DEFAULT_MAX_PIXELS, ImageLoadError, list_images, load_image
from .threads import sharing_cpus
from .inference import NON_FINITE_REASON, autocast_for, predict_batches, predict_pil

ProgressFn = Callable[[int, int], None]
COLUMNS = ("path", "score", "logit_margin", "status", "error")

__all__ = ["score_files", "score_files_sharded", "score_images", "autocast_for", "COLUMNS"]


class ImageFiles(Dataset):
    """Loads and preprocesses files; a file that cannot be read yields its error instead of a tensor."""

    def __init__(self, paths: Sequence[str], transform: Callable, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.paths = list(paths)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(load_image(self.paths[i], max_pixels=self.max_pixels)), ""
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


def non_finite_error(path: str, margin: float, score: float) -> str:
    """The error text of a row whose model output is NaN or infinite."""
    return (f"{NON_FINITE_REASON} for {path}: logit_margin={margin}, score={score}; the model weights are "
            "probably broken (a diverged adaptation or a corrupt checkpoint)")


def score_files(model, paths: Sequence[str | os.PathLike], *, batch_size: int = 32, num_workers: int = 0,
                amp: bool | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                progress: ProgressFn | None = None, with_features: bool = False) -> pd.DataFrame:
    """Score files with ``model`` (on its device). Returns ``path, score, logit_margin, status, error`` in input
    order.

    Folders in ``paths`` are expanded (recursively, image extensions); named files are always kept.
    Images are preprocessed with the model's evaluation transform (``model.preprocess``: the one its checkpoint
    was trained with, or the backbone's own; zero-shot with adapters off).

    ``score`` is p_high in [0, 1] (display); ``logit_margin`` is z_high - z_low (rank by it). ``status`` is "ok"
    or "error"; both numbers are NaN for errors: unreadable files and non-finite model outputs.
    amp: bf16 autocast for the image encoder: None = on CUDA only, True = on (CUDA or CPU), False = off. The
        quality head always runs in fp32.
    max_pixels: passed to :func:`clipiqa.imageio.load_image` (None: no own limit).
    ``progress(done, total)`` is called per batch.
    with_features: add a ``features`` column (the L2-normalised fp32 image embedding as a NumPy array; None for
        errors), what the line monitor's drift test on embeddings needs.
    """
    paths = list_images([os.fspath(p) for p in paths])
    scores = [float("nan")] * len(paths)
    margins = [float("nan")] * len(paths)
    errors = [""] * len(paths)
    features: list = [None] * len(paths)
    loader = DataLoader(ImageFiles(paths, model.preprocess, max_pixels), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate, pin_memory=model.device.type == "cuda",
                        persistent_workers=False)
    done = 0
    with sharing_cpus():  # the cores other work leaves free now (clipiqa.threads), restored after
        for index, batch, failed in loader:
            if batch is not None:
                batch_features: list = []
                pred = predict_batches(model, [batch], amp=amp,
                                       features_out=batch_features if with_features else None)
                for k, (i, m, s) in enumerate(zip(index.tolist(), pred.margin.tolist(), pred.score.tolist())):
                    if math.isfinite(m) and math.isfinite(s):
                        margins[i], scores[i] = m, s
                        if with_features:
                            features[i] = batch_features[0][k].numpy()
                    else:
                        errors[i] = non_finite_error(paths[i], m, s)
            for i, err in failed:
                errors[i] = err
            done += len(index) + len(failed)
            if progress is not None:
                progress(done, len(paths))
    table = pd.DataFrame({"path": paths, "score": scores, "logit_margin": margins,
                          "status": ["error" if e else "ok" for e in errors], "error": errors})
    if with_features:
        table["features"] = features
    return table


def score_files_sharded(model, paths: Sequence[str | os.PathLike], **kwargs) -> pd.DataFrame:
    """``score_files`` under ``torchrun``: each rank scores ``paths[rank::world]``; every rank returns the merged
    table in input order (identical to a single-process run). Single-process: plain ``score_files``."""
    paths = [os.fspath(p) for p in paths]
    order = distributed.shard(list(range(len(paths))))
    part = score_files(model, [paths[i] for i in order], **kwargs)
    part.index = order
    pieces = distributed.gather_objects(part)
    return pd.concat(pieces).sort_index().reset_index(drop=True)


def score_images(model, images: Sequence, amp: bool | None = None) -> torch.Tensor:
    """p_high ``[N]`` (CPU, float32) of in-memory PIL images (or HxWx3 uint8 arrays) with the model's
    preprocessing. For display; rank by ``clipiqa.inference.predict_pil(model, images).margin``."""
    return predict_pil(model, images, amp=amp).score
