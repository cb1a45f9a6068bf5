"""From an image to what a model sees, and back to numbers: the model's preprocessing split into geometry (resize,
crop) and pixels (tensor, normalisation), so that masks and attribution maps live in the model's input pixels
(:func:`to_model_input`), and :func:`score_tensors`, the score of preprocessed images that every diagnostic
explains.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T

from ..data.transforms import TransformSpec, eval_transform
from .attribution import TargetFn, FrozenCLIP, frozen_eval, model_device, unwrap

ImageLike = np.ndarray | Image.Image
References = Mapping[str, ImageLike] | Sequence[ImageLike]


def as_named(references: References | ImageLike, prefix: str = "image") -> dict[str, ImageLike]:
    """A name -> image dict from a dict, a list, or one image."""
    if isinstance(references, Mapping):
        return dict(references)
    if isinstance(references, Image.Image) or (isinstance(references, np.ndarray) and references.ndim == 3):
        references = [references]  # one image
    return {f"{prefix}{i}": im for i, im in enumerate(references)}


def model_preprocess(model: nn.Module) -> Callable:
    """The model's preprocessing (``model.preprocess``); for other modules the default
    :class:`~clipiqa.data.transforms.TransformSpec` (OpenAI CLIP's 224 px transform)."""
    core = model.inner if isinstance(model, FrozenCLIP) else model
    if hasattr(type(core), "preprocess") or "preprocess" in vars(core):
        return core.preprocess
    return eval_transform(TransformSpec())


def split_transform(transform: Callable) -> tuple[Callable, Callable]:
    """Split a ``Compose`` at its ``ToTensor`` step: (PIL -> PIL geometry, pixels -> normalised tensor)."""
    steps = list(getattr(transform, "transforms", [transform]))
    for i, step in enumerate(steps):
        if "ToTensor" in type(step).__name__:
            return T.Compose(steps[:i]), T.Compose(steps[i:])
    raise ValueError(f"cannot find the ToTensor step in {transform!r}; pass a torchvision Compose that resizes, "
                     "crops, converts to a tensor and normalises")


def as_uint8(image: ImageLike) -> np.ndarray:
    """An RGB ``uint8`` H x W x 3 array from a PIL image or an array (greyscale is replicated)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 image; got {image.dtype} {image.shape}")
    return image


def to_model_input(model: nn.Module, image: ImageLike, transform: Callable | None = None
                   ) -> tuple[Tensor, np.ndarray]:
    """Resize/crop ``image`` exactly like the model's preprocessing.

    Returns ``(tensor [3, H, W], crop uint8 H x W x 3)``: the crop is what the model sees, in input pixel
    coordinates, so a mask drawn on it lines up with attribution maps. ``pixels_to_input(model, crop)``
    equals the tensor.
    """
    geometry, _ = split_transform(transform or model_preprocess(model))
    crop = as_uint8(geometry(Image.fromarray(as_uint8(image))))
    return pixels_to_input(model, crop, transform), crop


def pixels_to_input(model: nn.Module, crop: np.ndarray, transform: Callable | None = None) -> Tensor:
    """Normalise an already resized/cropped ``uint8`` image (no geometry change): ``[3, H, W]``."""
    _, to_tensor = split_transform(transform or model_preprocess(model))
    return to_tensor(Image.fromarray(as_uint8(crop)))



@torch.no_grad()
def score_tensors(model: nn.Module, images: Tensor, batch_size: int = 32, target_fn: TargetFn | None = None
                  ) -> np.ndarray:
    """Scores ``[N]`` (float64 numpy) of preprocessed images, in batches, in eval mode (restored after), float32
    without autocast. The score is ``model(x)`` (an ``IQAModel``: its logit margin, through
    :mod:`clipiqa.inference`) or ``target_fn(model, x)`` (``p_high_target`` for p_high)."""
    out = []
    with unwrap(model) as core, frozen_eval(core):
        device = model_device(core)
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device, torch.float32)
            s = core(x) if target_fn is None else target_fn(core, x)
            out.append(s.float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)
