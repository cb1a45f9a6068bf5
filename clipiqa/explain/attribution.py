"""Pixel attributions of a scalar quality score (docs/design.md, 'Explainability').

One entry point for every method::

    maps = attribute(model, images, "ig")          # Tensor[B, H, W], aligned with the input pixels

``model`` is any ``nn.Module`` mapping preprocessed images ``[B, 3, H, W]`` to one number per image ``[B]``
(an :class:`~clipiqa.model.IQAModel` returns its logit margin ``z_high - z_low``: the default target;
p_high saturates at logit scale 100 and its gradients vanish); ``target_fn(model, images) -> [B]`` picks another
scalar: ``clipiqa.inference.p_high_target`` for p_high, or e.g. one scene logit. Grad-CAM needs an ``IQAModel``
(it hooks the ViT blocks).

Sign conventions of the returned maps:

* ``ig``, ``occlusion``, ``smoothgrad``, ``gradcam-conv1``... every method except ``gradcam`` returns the
  *signed sum over the three channels*: positive pixels push the score up (better quality), negative
  pixels push it down. For ``ig`` the map sums to ``f(x) - f(baseline)`` (completeness).
* ``gradcam`` is non-negative by construction (ReLU of the weighted token map).
* ``absolute=True`` returns the sum over channels of ``|attribution|`` instead (a magnitude map, what the
  diagnostics use).

Memory stays bounded: images are attributed one at a time, and the interpolation steps of IG, the occluded
copies and the SmoothGrad noise samples run in internal batches. The model is put in eval mode and its
parameters stop requiring gradients for the duration; both are restored afterwards. Maps are returned on
the CPU as float32.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import CLIP_MEAN, CLIP_STD
from ..registry import Registry

TargetFn = Callable[[nn.Module, Tensor], Tensor]

# Captum is imported inside each method: `import captum.attr` takes seconds (3.8 s measured on the 2-core CI machine),
# and the diagnostics, the panels and `clipiqa explain --help` import this module without attributing anything.



class AttributionFn(Protocol):
    """An attribution method: ``(fn, x, **options) -> Tensor [1, 3, H, W]`` for one preprocessed image ``x``
    ``[1, 3, H, W]`` (float32, on the model's device); ``fn`` is the :class:`ScoreFn` to explain (``fn(x)`` gives
    ``[1]``, ``fn.model`` the module behind it). Its keyword-only parameters are the options
    :func:`attribute` accepts for it (any other option is refused by name)."""

    def __call__(self, fn: "ScoreFn", x: Tensor, **options: Any) -> Tensor: ...


@dataclass(frozen=True)
class AttributionMethod:
    """A registered attribution method (:data:`ATTRIBUTION_METHODS`)."""

    name: str
    description: str
    fn: AttributionFn
    needs_iqa_model: bool = False
    """True when it hooks an ``IQAModel``'s visual blocks (Grad-CAM): other score functions are refused."""


ATTRIBUTION_METHODS: Registry[AttributionMethod] = Registry("attribution method", describe=lambda m: m.description)
"""Every attribution method by name, in registration order (the choices of :func:`attribute`, ``clipiqa explain
--methods`` and the attribution panel)."""


def register_attribution(name: str, description: str, needs_iqa_model: bool = False, *, replace: bool = False
                         ) -> Callable[[AttributionFn], AttributionFn]:
    """Add an attribution method: ``@register_attribution("name", "what it shows")`` on an :class:`AttributionFn`;
    :func:`attribute` then calls it like every other. A name already registered needs ``replace=True``."""
    def wrap(fn: AttributionFn) -> AttributionFn:
        ATTRIBUTION_METHODS.add(name, AttributionMethod(name, description, fn, needs_iqa_model), replace=replace)
        return fn
    return wrap


# ---------------------------------------------------------------------------------------------- wrappers
class FrozenCLIP(nn.Module):
    """The frozen CLIP view of an :class:`IQAModel` (what the zero-shot arm scores with): every call runs with the
    adapters switched off.

    Use it wherever a model is expected (``attribute``, the diagnostics) to get the "before adaptation"
    model without loading a second copy. Attributes not defined here (``preprocess``, ``random_init``,
    ``clip`` ...) are read from the wrapped model.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, images: Tensor) -> Tensor:
        with self.inner.adapters_off():
            return self.inner(images)

    def score(self, images: Tensor) -> Tensor:
        """p_high of the zero-shot model (``forward`` gives its logit margin)."""
        with self.inner.adapters_off():
            return self.inner.score(images)

    def scene_logits(self, images: Tensor) -> Tensor:
        with self.inner.adapters_off():
            return self.inner.scene_logits(images)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


def frozen_clip(model: nn.Module) -> FrozenCLIP:
    """``FrozenCLIP(model)``: the frozen CLIP with antonym prompts, sharing ``model``'s weights."""
    return model if isinstance(model, FrozenCLIP) else FrozenCLIP(model)


@contextmanager
def unwrap(model: nn.Module) -> Iterator[nn.Module]:
    """Yield the module to run: a :class:`FrozenCLIP` yields its inner model with adapters off."""
    if isinstance(model, FrozenCLIP):
        with model.inner.adapters_off():
            yield model.inner
    else:
        yield model


def is_iqa_model(model: nn.Module) -> bool:
    """True for an ``IQAModel`` (or anything with its visual-tower seams)."""
    return hasattr(model, "clip") and hasattr(model, "visual_blocks") and hasattr(model, "_visual_block")


def is_random_init(model: nn.Module) -> bool:
    """Whether ``model`` runs on random-init weights (its scores are meaningless)."""
    return bool(getattr(model, "random_init", False))


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer, CPU for a module without tensors."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; both restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]  # per module: set_trainable may mix modes
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


class ScoreFn(nn.Module):
    """The scalar an attribution method explains: ``images -> [B]`` from ``model`` (its output, or
    ``target_fn(model, images)``), shape checked; ``model`` is the module behind it."""

    def __init__(self, model: nn.Module, target_fn: TargetFn | None):
        super().__init__()
        self.model = model
        self.target_fn = target_fn

    def forward(self, images: Tensor) -> Tensor:
        out = self.model(images) if self.target_fn is None else self.target_fn(self.model, images)
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.dim() != 1 or out.shape[0] != images.shape[0]:
            raise ValueError(f"the score function must return one number per image, shape [B]={images.shape[0]}; "
                             f"got {tuple(out.shape)} (pass target_fn to pick a scalar)")
        return out.float()


# ---------------------------------------------------------------------------------------------- baselines
def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the model's input normalisation (its evaluation transform spec in effect); OpenAI CLIP's
    when the module does not say."""
    spec = getattr(model, "eval_spec", None)
    if spec is not None:
        return tuple(spec.mean), tuple(spec.std)
    cfg = getattr(getattr(model, "source", None), "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))


def make_baseline(model: nn.Module, images: Tensor, baseline: str | float | Tensor = "black",
                  blur_sigma: float = 10.0) -> Tensor:
    """A baseline in the model's (normalised) input space, same shape as ``images``.

    ``"black"``: black pixels (``-mean/std``); ``"zero"``: zeros, i.e. the dataset-mean grey;
    ``"blur"``: the image under a Gaussian blur of ``blur_sigma`` pixels; a number or tensor is used as is.
    """
    if isinstance(baseline, Tensor):
        return baseline.to(images.device, images.dtype).expand_as(images)
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(images)
    if baseline == "black":
        mean, std = normalization(model)
        black = -torch.tensor(mean, dtype=images.dtype) / torch.tensor(std, dtype=images.dtype)
        return black.to(images.device).view(1, -1, 1, 1).expand_as(images).clone()
    if baseline == "blur":
        return gaussian_blur(images, blur_sigma)
    raise ValueError(f"baseline={baseline!r} is not allowed; use 'black', 'zero', 'blur', a number or a tensor")


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with reflect padding (radius 3 sigma, capped by the size)."""
    radius = max(1, min(int(3 * sigma + 0.5), min(images.shape[-2:]) - 1))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _patch_size(model: nn.Module, default: int = 16) -> int:
    conv1 = getattr(getattr(getattr(model, "clip", None), "visual", None), "conv1", None)
    return int(conv1.kernel_size[0]) if conv1 is not None else default


# ---------------------------------------------------------------------------------------------- methods
@register_attribution("ig", "Integrated Gradients from a baseline (black by default); signed, sums to f(x) - f(baseline)")
def _ig(fn: ScoreFn, x: Tensor, *, baseline: str | float | Tensor = "black", n_steps: int = 32,
        internal_batch_size: int = 16, blur_sigma: float = 10.0, method: str = "gausslegendre") -> Tensor:
    from captum.attr import IntegratedGradients
    base = make_baseline(fn.model, x, baseline, blur_sigma)
    return IntegratedGradients(fn).attribute(x, baselines=base, n_steps=n_steps, method=method,
                                             internal_batch_size=internal_batch_size)


@register_attribution("occlusion", "Occlusion: score change when a window is replaced by the baseline (patch-sized by "
           "default); signed")
def _occlusion(fn: ScoreFn, x: Tensor, *, window: int | None = None, stride: int | None = None,
               baseline: str | float | Tensor = "zero", perturbations_per_eval: int = 16,
               blur_sigma: float = 10.0) -> Tensor:
    from captum.attr import Occlusion
    window = window or _patch_size(fn.model)
    stride = stride or window
    base = make_baseline(fn.model, x, baseline, blur_sigma)
    # the original minus the occluded score, spread over the window: a positive pixel region raised the score
    return Occlusion(fn).attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                                   strides=(x.shape[1], stride, stride), baselines=base,
                                   perturbations_per_eval=perturbations_per_eval)


@register_attribution("smoothgrad", "SmoothGrad: input gradient averaged over noisy copies; signed")
def _smoothgrad(fn: ScoreFn, x: Tensor, *, nt_samples: int = 16, stdevs: float | None = None,
                noise_level: float = 0.15, nt_samples_batch_size: int = 8) -> Tensor:
    from captum.attr import NoiseTunnel, Saliency
    if stdevs is None:  # a share of the input's value range (the SmoothGrad paper's 10-20 %)
        stdevs = float(noise_level * (x.max() - x.min()).clamp_min(1e-6))
    return NoiseTunnel(Saliency(fn)).attribute(x, nt_type="smoothgrad", nt_samples=nt_samples,
                                               nt_samples_batch_size=nt_samples_batch_size, stdevs=stdevs,
                                               abs=False)


@register_attribution("gradcam", "Grad-CAM on the patch-token grid read by a visual block (default the last); non-negative",
           needs_iqa_model=True)
def _gradcam(fn: ScoreFn, x: Tensor, *, block: int = -1, relu: bool = True) -> Tensor:
    """Grad-CAM on the tokens *entering* ``block``.

    The patch tokens leaving the last block never reach the CLS-pooled output, so their gradient is zero;
    the tokens entering a block (the output of the block before) are what its attention reads. ``block=-1``
    therefore explains the last block's input, the usual choice for ViT Grad-CAM.
    """
    model = fn.model
    index = _block_index(model, block)
    score, tokens = _run_capturing_block_input(model, index, fn, x)  # tokens [B, L, W], part of the graph
    gh, gw = _grid(model, x)
    n_prefix = tokens.shape[1] - gh * gw  # CLS and the visual prompt tokens come first
    expected = 1 + (model.visual_prompt.n_tokens if model.adapters_enabled and model.visual_prompt is not None else 0)
    if n_prefix != expected:
        raise RuntimeError(f"block {index} reads {tokens.shape[1]} tokens; expected CLS + {expected - 1} prompt "
                           f"tokens + a {gh}x{gw} patch grid")
    grads = torch.autograd.grad(score.sum(), tokens)[0]
    acts = _to_grid(tokens.detach()[:, n_prefix:], gh, gw)  # [B, W, gh, gw]
    weights = _to_grid(grads[:, n_prefix:], gh, gw).mean(dim=(2, 3), keepdim=True)
    cam = (weights * acts).sum(dim=1, keepdim=True)
    if relu:
        cam = cam.clamp_min(0)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam.expand(-1, x.shape[1], -1, -1) / x.shape[1]  # the channel sum gives the map back


def _block_index(model: nn.Module, block: int) -> int:
    n_blocks = model.n_visual_layers
    if not -n_blocks <= block < n_blocks:
        raise ValueError(f"block={block} is not allowed; this model has {n_blocks} visual blocks "
                         f"(use 0..{n_blocks - 1} or negative indices)")
    return block % n_blocks


def _grid(model: nn.Module, x: Tensor) -> tuple[int, int]:
    patch_h, patch_w = model.clip.visual.conv1.kernel_size
    return x.shape[-2] // patch_h, x.shape[-1] // patch_w


def _to_grid(tokens: Tensor, gh: int, gw: int) -> Tensor:
    """Patch tokens ``[B, gh*gw, W]`` (row-major, as ``conv1`` flattens them) to ``[B, W, gh, gw]``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)


def _run_capturing_block_input(model: nn.Module, index: int, fn: ScoreFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``fn(x)``; return the score and the batch-first tokens entering visual block ``index``."""
    batch_first = getattr(model.clip.visual.transformer, "batch_first", True)
    captured: dict[str, Tensor] = {}

    def hook(_module, args):
        captured["tokens"] = args[0] if batch_first else args[0].transpose(0, 1)

    handle = model._visual_block(index).register_forward_pre_hook(hook)
    try:
        score = fn(x.requires_grad_(True))
    finally:
        handle.remove()
    return score, captured["tokens"]


@register_attribution("gradcam-conv1", "Captum LayerGradCam on the patch embedding (visual.conv1), upsampled; signed unless "
           "relu=True", needs_iqa_model=True)
def _gradcam_conv1(fn: ScoreFn, x: Tensor, *, relu: bool = False) -> Tensor:
    from captum.attr import LayerAttribution, LayerGradCam
    layer = fn.model.clip.visual.conv1
    cam = LayerGradCam(fn, layer).attribute(x, relu_attributions=relu)  # [B, 1, gh, gw]
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return cam.expand(-1, x.shape[1], -1, -1) / x.shape[1]


# ---------------------------------------------------------------------------------------------- entry point
def attribute(model: nn.Module, images: Tensor, method: str = "ig", *, target_fn: TargetFn | None = None,
              absolute: bool = False, **options: Any) -> Tensor:
    """Attribution maps ``[B, H, W]`` (CPU, float32) of a scalar score for preprocessed ``images [B, 3, H, W]``.

    model: any module mapping images to ``[B]`` (an ``IQAModel``, a :class:`FrozenCLIP` view, your own function).
    method: a key of :data:`ATTRIBUTION_METHODS` (``ig``, ``occlusion``, ``smoothgrad``, ``gradcam``,
        ``gradcam-conv1``, or one added with :func:`register_attribution`).
    target_fn: ``target_fn(model, images) -> [B]``, the scalar to explain instead of ``model(images)``.
    absolute: sum ``|attr|`` over channels instead of the signed sum (gradcam is non-negative anyway).
    options: method settings, e.g. ``n_steps``, ``baseline`` ("black", "zero", "blur"), ``internal_batch_size``
        (ig); ``window``, ``stride``, ``perturbations_per_eval`` (occlusion); ``nt_samples``, ``stdevs`` /
        ``noise_level`` (smoothgrad); ``block`` (gradcam).
    """
    attr = attribute_channels(model, images, method, target_fn=target_fn, **options)
    return attr.abs().sum(1) if absolute else attr.sum(1)


def attribute_channels(model: nn.Module, images: Tensor, method: str = "ig", *, target_fn: TargetFn | None = None,
                       **options: Any) -> Tensor:
    """Like :func:`attribute` but keeps the channel axis: ``[B, 3, H, W]`` (CPU, float32)."""
    spec = _method(method)
    _check_options(spec, options)
    if images.dim() != 4:
        raise ValueError(f"images must be a batch [B, 3, H, W] of preprocessed images; got {tuple(images.shape)}")
    with unwrap(model) as core:
        if spec.needs_iqa_model and not is_iqa_model(core):
            raise TypeError(f"method {method!r} hooks the ViT blocks of a clipiqa IQAModel; {type(core).__name__} "
                            "is not one (use ig, occlusion or smoothgrad for other score functions)")
        device = model_device(core)
        out = []
        with frozen_eval(core), autocast_off(device):
            fn = ScoreFn(core, target_fn)
            for i in range(images.shape[0]):  # one image at a time bounds the memory
                x = images[i:i + 1].detach().to(device, torch.float32).clone()
                attr = spec.fn(fn, x, **options)
                out.append(attr.detach().float().cpu())
    return torch.cat(out) if out else torch.empty(0, *images.shape[1:])


def autocast_off(device: torch.device):
    """Attributions run in float32: a context that disables autocast on ``device``."""
    return torch.autocast(device_type=device.type, enabled=False) if device.type in ("cuda", "cpu") else nullcontext()


def _check_options(spec: AttributionMethod, options: dict[str, Any]) -> None:
    allowed = [p for p in inspect.signature(spec.fn).parameters if p not in ("fn", "x")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"method {spec.name!r} does not take option(s) {', '.join(unknown)}; "
                        f"it takes {', '.join(allowed) or 'no options'}")


def _method(name: str) -> AttributionMethod:
    return ATTRIBUTION_METHODS.get_or_explain(name)


@torch.no_grad()
def completeness_error(model: nn.Module, images: Tensor, attributions: Tensor,
                       baseline: str | float | Tensor = "black", *, target_fn: TargetFn | None = None,
                       eps: float = 1e-8) -> Tensor:
    """Relative IG completeness error per image: ``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|``.

    ``attributions`` may be ``[B, 3, H, W]`` or the signed ``[B, H, W]`` maps of :func:`attribute` (their sums
    are equal). ``baseline`` as in :func:`make_baseline`. Near 0 when the integral is well approximated; grows
    when ``n_steps`` is too small. Returns a CPU tensor ``[B]``.
    """
    with unwrap(model) as core, frozen_eval(core):
        device = model_device(core)
        fn = ScoreFn(core, target_fn)
        x = images.to(device, torch.float32)
        delta = (fn(x) - fn(make_baseline(core, x, baseline))).float().cpu()
    total = attributions.reshape(attributions.shape[0], -1).sum(1).float().cpu()
    return (total - delta).abs() / delta.abs().clamp_min(eps)




__all__ = ["ATTRIBUTION_METHODS", "AttributionFn", "AttributionMethod", "ScoreFn", "register_attribution", "FrozenCLIP",
           "frozen_clip", "attribute", "attribute_channels", "completeness_error",
           "make_baseline", "gaussian_blur", "normalization", "frozen_eval", "is_random_init", "is_iqa_model",
           "CLIP_MEAN", "CLIP_STD"]
