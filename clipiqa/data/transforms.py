"""Image transforms: the backbone's own preprocessing by default, the paper's variant as an option.

- ``"model"``: eval = the backbone's preprocessing (resize shorter side, centre crop, CLIP mean/std);
  train = the same normalisation with a random crop from a slightly larger resize (ratio 244/224) and a flip.
- ``"paper"``: the released GRMP-IQA recipe: squash to 244x244, random 224 crop + horizontal flip for training,
  one centre crop for testing, ImageNet mean/std.
"""
from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = ("model", "paper")
PAPER_RESIZE = 244


def _check(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"transform variant {variant!r} is not allowed; use one of {', '.join(VARIANTS)}")


def _size(model) -> int:
    size = model.source.preprocess_cfg.get("size", 224)
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def eval_transform(model, variant: str = "model"):
    """PIL image -> normalised tensor for scoring and evaluation."""
    _check(variant)
    if variant == "model":
        return model.preprocess
    size = _size(model)
    return T.Compose([T.Resize((PAPER_RESIZE * size // 224,) * 2, interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(model, variant: str = "model"):
    """PIL image -> randomly cropped and flipped normalised tensor (uses torch's global RNG)."""
    _check(variant)
    size = _size(model)
    big = PAPER_RESIZE * size // 224
    if variant == "paper":
        resize, mean, std = T.Resize((big, big), interpolation=T.InterpolationMode.BICUBIC), IMAGENET_MEAN, IMAGENET_STD
    else:
        cfg = model.source.preprocess_cfg
        resize, mean, std = T.Resize(big, interpolation=T.InterpolationMode.BICUBIC), cfg["mean"], cfg["std"]
    return T.Compose([resize, T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
