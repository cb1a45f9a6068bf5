"""Image transforms. The evaluation transform is a function of one small, validated :class:`TransformSpec`.

A model carries the spec its scores need (``IQAModel.transform_spec``): by default the backbone's
own preprocessing, or the one it was trained with (recorded in the checkpoint card and restored by
``load_model(prompts=ckpt)``). ``eval_transform(spec)`` is the only evaluation transform in the package.

Two specs have names:

- ``"model"`` (:func:`backbone_spec`): the backbone's preprocessing (resize the shorter side, centre crop, CLIP
  mean/std), identical to open_clip's evaluation transform.
- ``"grmp"`` (:func:`grmp_spec`, the evaluation transform of the released GRMP-IQA code): squash to 244x244, centre crop 224, ImageNet mean/std.

Training transforms (:func:`train_transform`): the same normalisation as the matching eval spec with a random
crop from a slightly larger resize (ratio 244/224) and a horizontal flip; ``"grmp"`` squashes, ``"model"`` keeps
the aspect ratio. The same two names are the ``augment`` choices of the training configs (plus ``"none"``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from torchvision import transforms as T

from ..configs import from_dict, invalid

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = ("model", "grmp")
OLD_CARD_NAMES = {"paper": "grmp"}  # what checkpoint cards written before the rename call the grmp spec
GRMP_RESIZE = 244
RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                  "nearest": T.InterpolationMode.NEAREST, "lanczos": T.InterpolationMode.LANCZOS}


@dataclass(frozen=True)
class TransformSpec:
    """How a PIL image becomes the model's input tensor at evaluation.

    size: side of the square centre crop the model sees (px).
    resize: side the image is resized to before the crop (px, >= size).
    resize_mode: ``"shortest"`` (shorter side to ``resize``, aspect kept) or ``"squash"`` (``resize`` x
        ``resize``, aspect not kept).
    interpolation: ``bicubic``, ``bilinear``, ``nearest`` or ``lanczos``.
    mean, std: per-channel normalisation of the [0, 1] RGB tensor.
    name: a label for cards and messages (``model``, ``grmp`` or ``custom``); not used by the transform.
    """

    size: int = 224
    resize: int = 224
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("size", "resize"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                invalid("TransformSpec", key, value, "use a positive integer number of pixels")
        if self.resize < self.size:
            invalid("TransformSpec", "resize", self.resize, f"use a side >= size ({self.size}): the centre crop "
                    "cannot be larger than the resized image")
        if self.resize_mode not in RESIZE_MODES:
            invalid("TransformSpec", "resize_mode", self.resize_mode, f"use one of {', '.join(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            invalid("TransformSpec", "interpolation", self.interpolation, f"use one of {', '.join(INTERPOLATIONS)}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            try:
                values = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                values = ()
            if len(values) != 3 or (key == "std" and min(values) <= 0):
                invalid("TransformSpec", key, value, "use three numbers (R, G, B)"
                        + ("; each std must be > 0" if key == "std" else ""))
            object.__setattr__(self, key, values)
        if not isinstance(self.name, str):
            invalid("TransformSpec", "name", self.name, "use a short text label")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransformSpec":
        data = dict(data)
        if isinstance(data.get("name"), str):  # a card written before the rename says "paper" for the same spec
            data["name"] = OLD_CARD_NAMES.get(data["name"], data["name"])
        return from_dict(cls, data)


def _side(size: Any) -> int:
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"backbone input size {tuple(size)} is not square; clipiqa supports square inputs")
        size = size[0]
    return int(size)


def backbone_spec(model_or_cfg: Any) -> TransformSpec:
    """The backbone's own evaluation preprocessing (open_clip's ``preprocess_cfg``) as a spec."""
    cfg = getattr(getattr(model_or_cfg, "source", None), "preprocess_cfg", model_or_cfg) or {}
    mode = cfg.get("resize_mode", "shortest")
    if mode not in RESIZE_MODES:
        raise ValueError(f"backbone resize_mode {mode!r} is not supported; clipiqa supports {RESIZE_MODES}")
    size = _side(cfg.get("size", 224))
    spec = TransformSpec(size=size, resize=size, resize_mode=mode, interpolation=cfg.get("interpolation", "bicubic"),
                         name="model")
    if "mean" in cfg or "std" in cfg:
        spec = TransformSpec(**{**asdict(spec), "mean": cfg.get("mean", spec.mean), "std": cfg.get("std", spec.std)})
    return spec


def grmp_spec(model_or_cfg: Any) -> TransformSpec:
    """The released GRMP-IQA evaluation transform for this backbone: squash to 244/224 of the input side, centre
    crop, ImageNet statistics."""
    size = backbone_spec(model_or_cfg).size
    return TransformSpec(size=size, resize=GRMP_RESIZE * size // 224, resize_mode="squash",
                         interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD, name="grmp")


def spec_for(model: Any, variant: str) -> TransformSpec:
    """The named spec ``variant`` (``model`` or ``grmp``) for ``model``'s backbone."""
    return grmp_spec(model) if variant_name(variant) == "grmp" else backbone_spec(model)


def as_spec(value: Any) -> TransformSpec:
    """A spec from a spec or its dict (e.g. from a card)."""
    if isinstance(value, TransformSpec):
        return value
    if isinstance(value, Mapping):
        return TransformSpec.from_dict(value)
    raise TypeError(f"expected a TransformSpec or its dict; got {type(value).__name__}")


class ConvertRGB:
    """PIL image -> RGB (a no-op for RGB images), like open_clip's evaluation transform."""

    def __call__(self, image):
        return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image

    def __repr__(self) -> str:
        return "ConvertRGB()"


def _resize(mode: str, side: int, interpolation: str):
    interp = INTERPOLATIONS[interpolation]
    return T.Resize(side if mode == "shortest" else (side, side), interpolation=interp)


def variant_name(variant: str, field: str = "transform variant", allowed: tuple[str, ...] = VARIANTS) -> str:
    """``variant`` when it names a transform variant or augmentation; a ``ValueError`` that names ``field``, the
    value and the allowed names otherwise."""
    if variant not in allowed:
        raise ValueError(f"{field} {variant!r} is not allowed; use one of {', '.join(allowed)}")
    return variant


def eval_transform(spec: Any, variant: str | None = None):
    """PIL image -> normalised tensor for scoring and evaluation, built from a :class:`TransformSpec`.

    ``spec``: a spec, its dict, or a model (then the spec in effect for it, ``model.eval_spec``); with
    ``variant`` (``model``/``grmp``) the named spec of that model's backbone instead.
    """
    if variant is not None:
        spec = spec_for(spec, variant)
    elif not isinstance(spec, (TransformSpec, Mapping)):
        spec = spec.eval_spec if hasattr(spec, "eval_spec") else backbone_spec(spec)
    spec = as_spec(spec)
    return T.Compose([_resize(spec.resize_mode, spec.resize, spec.interpolation), T.CenterCrop(spec.size),
                      ConvertRGB(), T.ToTensor(), T.Normalize(spec.mean, spec.std)])


def train_transform(model, variant: str = "model"):
    """PIL image -> randomly cropped and flipped normalised tensor (uses torch's global RNG)."""
    spec = spec_for(model, variant)
    big = GRMP_RESIZE * spec.size // 224
    return T.Compose([_resize(spec.resize_mode, big, spec.interpolation), T.RandomCrop(spec.size),
                      T.RandomHorizontalFlip(), ConvertRGB(), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
