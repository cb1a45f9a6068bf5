"""The one inference path (docs/design.md, 'Scores: one inference path'): every score in the package is made here.

The quality head turns image features into two logits, ``z = logit_scale * [cos(f, t_high), cos(f, t_low)]``.
It always runs in **float32 outside autocast** (features, text features and the logit scale cast to float32),
whatever precision the encoder ran in. A prediction holds, per image:

- ``margin = z_high - z_low`` (float32): the number to **rank** by. SRCC/KRCC for selection, evaluation, the
  protocol, meta held-out tasks, the Session and the panels use it. It does not saturate.
- ``score = p_high = sigmoid(margin)`` (= the 2-way softmax), in [0, 1], higher = better: the number to show. At
  CLIP's logit scale (100) it saturates (margins of 20 and 40 both give 1.0 in float32) and in bf16 it collapses
  to a handful of values, so never rank by it.

Layers, bottom to top (callers pick the one matching what they hold):

- :func:`head_logits` (cosine logits, fp32, autocast off) and :func:`from_logits` (margin and score): the math;
  ``IQAModel.heads`` uses ``head_logits``, so the training loss sees the same fp32 logits as scoring.
- :func:`predict_features` (image features), :func:`predict_images` (preprocessed tensors) and
  :func:`predict_hidden` (hidden states entering visual block ``start``, the fine-tuning cache): no mode,
  gradient or autocast changes; the encoder runs in the caller's autocast, the head in fp32.
- :func:`predict_batches` and :func:`predict_pil`: batch drivers for evaluation. Eval mode (restored after), no
  gradients, the encoder under :func:`autocast_for` (bf16 on CUDA by default; ``amp="auto"`` also on CPUs with
  native bf16; ``amp=True`` on any CPU), results on the CPU.

Attribution targets (:func:`margin_target`, :func:`p_high_target`) are here too: ``IQAModel.forward`` returns the
margin, so explaining a model explains its margin unless ``target_fn=p_high_target`` is passed.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["Prediction", "head_logits", "from_logits", "predict_features", "predict_images", "predict_hidden",
           "predict_batches", "predict_pil", "encode_images", "autocast_for", "uses_bf16", "precision_name",
           "cpu_has_native_bf16", "PIXEL_STAGE_BLOCKS",
           "no_autocast", "evaluating", "margin_target", "p_high_target", "NON_FINITE_REASON"]

NON_FINITE_REASON = "non-finite score (model produced NaN/inf)"


class Prediction(NamedTuple):
    """Per image: ``margin`` = z_high - z_low (float32, rank by it) and ``score`` = p_high = sigmoid(margin)."""

    margin: Tensor
    score: Tensor

    def cpu(self) -> "Prediction":
        return Prediction(self.margin.detach().cpu(), self.score.detach().cpu())

    @staticmethod
    def cat(parts: Sequence["Prediction"]) -> "Prediction":
        if not parts:
            return Prediction(torch.zeros(0), torch.zeros(0))
        return Prediction(torch.cat([p.margin for p in parts]), torch.cat([p.score for p in parts]))


# ---------------------------------------------------------------------------------------------- precision
def no_autocast(device_type: str):
    """A context that disables autocast on ``device_type`` (a no-op where torch has no autocast)."""
    return torch.autocast(device_type=device_type, enabled=False) if device_type in ("cuda", "cpu") \
        else nullcontext()


AMP_CHOICES = (None, True, False, "auto")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in ``/proc/cpuinfo``; on other systems
    torch's AMX capability): bf16 matmuls are then faster than fp32 (ViT-B/32 encoding: 1.8x measured here with
    :func:`cpu_bf16_matmuls`; plain bf16 autocast is 4x *slower* on this CPU, see there).
    ``cpuinfo``: the text to read instead of ``/proc/cpuinfo`` (tests)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def uses_bf16(device: torch.device | str, amp: bool | str | None = None) -> bool:
    """Whether the encoder runs under bf16 autocast for ``amp``:

    - ``None`` (the default everywhere): CUDA yes, CPU no (CPU scores stay fp32, identical on every CPU and
      independent of batch composition);
    - ``"auto"``: CUDA when it supports bf16; CPU when it has native bf16 (:func:`cpu_has_native_bf16`), there as
      bf16 matmuls on fp32 tensors (:func:`cpu_bf16_matmuls`), not autocast; the pixel stage stays fp32
      (:data:`PIXEL_STAGE_BLOCKS`, :func:`encode_images`) and scores keep SRCC >= 0.999 against fp32
      (``tests/test_rehearsal.py``);
    - ``True`` / ``False``: on / off. Devices without autocast always run in full precision.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp={amp!r} is not allowed; use None (bf16 on CUDA only), 'auto' (bf16 on CUDA and on "
                         "CPUs with native bf16), True (bf16) or False (fp32)")
    device = torch.device(device)
    if device.type not in ("cuda", "cpu"):
        return False
    if amp == "auto":
        if device.type == "cuda":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return cpu_has_native_bf16()
    return device.type == "cuda" if amp is None else bool(amp)


def precision_name(device: torch.device | str, amp: bool | str | None = None) -> str:
    """What runs, for the weights line: ``"bf16 autocast (head fp32)"``, ``"bf16 autocast (pixel stage and head
    fp32)"`` (``amp="auto"``) or ``"fp32"``."""
    if not uses_bf16(device, amp):
        return "fp32"
    if amp == "auto" and torch.device(device).type == "cpu":
        return "bf16 matmuls (oneDNN; pixel stage and head fp32)"
    return "bf16 autocast (pixel stage and head fp32)" if amp == "auto" else "bf16 autocast (head fp32)"


PIXEL_STAGE_BLOCKS = 1
"""With ``amp="auto"`` the pixel stage, the patch embedding and the first ``PIXEL_STAGE_BLOCKS`` ViT block(s), runs in
fp32 and the rest under bf16 autocast. Rounding normalised pixels to bf16 (8-bit mantissa) adds an error of
about one grey level, the scale of the noise and compression artefacts a quality score must see; measured on the
rehearsal ViT-B/16 (32 demo images), bf16 everywhere gave SRCC 0.992-0.995 against fp32 and this split 1.000,
for 1/12 of the blocks in fp32."""

CPU_FP32_BLOCKS = 3
"""On a CPU, ``amp="auto"`` keeps the patch embedding and the first ``CPU_FP32_BLOCKS`` blocks in fp32 and runs the
rest with bf16 matmuls (:func:`cpu_bf16_matmuls`). Measured on a random ViT-B/16 (32 demo images, SRCC against fp32
margins): 1 block 0.9985, 2 blocks 0.9982, 3 blocks 0.9993 (the 0.999 bar); speed-up over fp32 about 1.5x
(ViT-B/32: fp32 237 ms/img, all blocks bf16 130 ms/img, one thread)."""


def encode_images(model, x: Tensor, start: int = 0, amp: bool | str | None = None) -> Tensor:
    """Image features for evaluation in the precision ``amp`` asks for (:func:`uses_bf16`); ``x`` is a batch of
    preprocessed images (``start == 0``) or hidden states entering visual block ``start``. No mode or gradient
    changes (the drivers set them)."""
    device = x.device
    if start == 0 and amp == "auto" and uses_bf16(device, amp) and not getattr(model, "frozen_only", False):
        blocks = PIXEL_STAGE_BLOCKS
        if device.type == "cpu":  # never all of them: a small model keeps its last block in bf16
            blocks = max(PIXEL_STAGE_BLOCKS, min(CPU_FP32_BLOCKS, len(model.clip.visual.transformer.resblocks) - 1))
        with no_autocast(device.type):
            x = model.visual_prefix(x, blocks)
        start = blocks
    if amp == "auto" and device.type == "cpu" and uses_bf16(device, amp):
        with cpu_bf16_matmuls():  # not autocast: see cpu_bf16_matmuls
            return model.encode_image_from(x, start) if start else model.encode_image(x)
    with autocast_for(device, amp):
        return model.encode_image_from(x, start) if start else model.encode_image(x)


@contextmanager
def cpu_bf16_matmuls() -> Iterator[None]:
    """fp32 tensors, but oneDNN computes each fp32 matmul from bf16-rounded inputs (fp32 accumulation): the CPU
    analogue of TF32 on a GPU, what ``amp="auto"`` runs on CPUs with native bf16. Measured here on ViT-B/32 (batch 8,
    one thread): 237 ms/img fp32, 130 ms/img this way, 982 ms/img under ``torch.autocast("cpu", bfloat16)``: under
    autocast, torch 2.14 runs ``nn.MultiheadAttention``'s input projection on its (seq, batch, width) view as a
    batched matmul that copies the bf16 weight once per sequence position. Sets the process-wide
    ``torch.backends.mkldnn.matmul.fp32_precision`` while any such block runs (counted, so that blocks of two threads
    that overlap restore the setting only when the last one ends) and restores it after. Process-wide means that
    fp32 work of *other* threads meanwhile (a panel's training run) also gets bf16 matmuls: use ``amp=None`` where
    that matters."""
    matmul = torch.backends.mkldnn.matmul
    with _BF16_MATMULS["lock"]:
        if _BF16_MATMULS["active"] == 0:
            _BF16_MATMULS["before"] = matmul.fp32_precision
            matmul.fp32_precision = "bf16"
        _BF16_MATMULS["active"] += 1
    try:
        yield
    finally:
        with _BF16_MATMULS["lock"]:
            _BF16_MATMULS["active"] -= 1
            if _BF16_MATMULS["active"] == 0:
                matmul.fp32_precision = _BF16_MATMULS["before"]


_BF16_MATMULS = {"lock": threading.Lock(), "active": 0, "before": "none"}
"""How many :func:`cpu_bf16_matmuls` blocks run now, and the setting to restore when the last one ends."""


def autocast_for(device: torch.device | str, amp: bool | str | None = None):
    """bf16 autocast for the encoder as :func:`uses_bf16` decides (``None``: CUDA only; ``"auto"``: also CPUs
    with native bf16; ``True``/``False``: on/off). Devices without autocast run in full precision."""
    device = torch.device(device)
    enabled = uses_bf16(device, amp)
    if device.type not in ("cuda", "cpu"):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# ---------------------------------------------------------------------------------------------- the head
def head_logits(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """``logit_scale * cos(f, t)``: ``[B, K]`` float32, computed with autocast off (gradients flow)."""
    with no_autocast(image_features.device.type):
        f = F.normalize(image_features.float(), dim=-1)
        t = F.normalize(text_features.float(), dim=-1)
        scale = torch.as_tensor(logit_scale, device=f.device).float()
        return scale * f @ t.t()


def from_logits(quality_logits: Tensor) -> Prediction:
    """Margin and p_high from quality logits ``[B, 2]`` (column 0 = high quality), in float32."""
    if quality_logits.dim() != 2 or quality_logits.shape[1] != 2:
        raise ValueError("quality logits must have shape [B, 2] (column 0 = 'high quality'); "
                         f"got {tuple(quality_logits.shape)}")
    with no_autocast(quality_logits.device.type):
        z = quality_logits.float()
        margin = z[:, 0] - z[:, 1]
        return Prediction(margin, torch.sigmoid(margin))


def predict_features(model, image_features: Tensor) -> Prediction:
    """THE function from image features ``[B, D]`` (any dtype, unnormalised) to quality outputs."""
    return from_logits(model.heads(image_features, scenes=False)[0])


# ---------------------------------------------------------------------------------------------- encoders
def predict_images(model, images: Tensor) -> Prediction:
    """Preprocessed images ``[B, 3, H, W]``; the encoder runs in the caller's autocast, the head in fp32."""
    return predict_features(model, model.encode_image(images))


def predict_hidden(model, hidden: Tensor, start: int) -> Prediction:
    """Hidden tokens entering visual block ``start`` (the fine-tuning cache); ``start == 0``: images."""
    if start:
        return predict_features(model, model.encode_image_from(hidden, start))
    return predict_images(model, hidden)


# ---------------------------------------------------------------------------------------------- drivers
@contextmanager
def evaluating(model) -> Iterator[None]:
    """Eval mode (restored after) and no gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def predict_batches(model, batches: Iterable[Tensor], *, start: int = 0, amp: bool | None = None,
                    progress: Callable[[int], None] | None = None, features_out: list | None = None) -> Prediction:
    """Predictions (on the CPU) for an iterable of input batches: preprocessed images (``start == 0``) or cached
    hidden states entering block ``start``. Eval mode, no gradients, encoder under :func:`autocast_for`.
    ``progress(n_done)`` is called after each batch. ``features_out``: a list that receives each batch's image
    features (fp32, L2-normalised, on the CPU), e.g. for drift tests on embeddings."""
    parts, done = [], 0
    with evaluating(model):
        for x in batches:
            x = x.to(model.device, non_blocking=True)
            features = encode_images(model, x, start, amp)
            if features_out is not None:
                features_out.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
            parts.append(predict_features(model, features).cpu())
            done += x.shape[0]
            if progress is not None:
                progress(done)
    return Prediction.cat(parts)


def predict_pil(model, images: Sequence, *, batch_size: int = 32, amp: bool | None = None,
                transform: Callable | None = None) -> Prediction:
    """Predictions (on the CPU) for in-memory PIL images (or HxWx3 uint8 arrays), preprocessed with
    ``transform`` (default: the model's own, ``model.preprocess``)."""

    def pil(im):
        if not isinstance(im, Image.Image):
            return Image.fromarray(im)
        return im if im.mode == "RGB" else im.convert("RGB")

    transform = transform or model.preprocess
    margins, scores = torch.empty(len(images)), torch.empty(len(images))
    for start in range(0, len(images), batch_size):
        tensors = [transform(pil(im)) for im in images[start:start + batch_size]]
        for index, batch in _same_size_groups(tensors):  # one group unless a transform keeps each image's size
            pred = predict_batches(model, [batch], amp=amp)
            margins[[start + i for i in index]] = pred.margin
            scores[[start + i for i in index]] = pred.score
    return Prediction(margins, scores)


def _same_size_groups(tensors: Sequence[Tensor]) -> list[tuple[list[int], Tensor]]:
    """Stack tensors of equal shape together: ``[(indices, batch)]`` in order of first appearance. Models that
    score each image at its own resolution (``rn50-openai``) get one batch per size."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    return [(index, torch.stack([tensors[i] for i in index])) for index in groups.values()]


# ---------------------------------------------------------------------------------------------- attribution targets
def margin_target(model, images: Tensor) -> Tensor:
    """Attribution target: the logit margin (the default; its gradients do not vanish at saturation)."""
    return predict_images(model, images).margin


def p_high_target(model, images: Tensor) -> Tensor:
    """Attribution target: p_high in [0, 1] (saturates at CLIP's logit scale; gradients can vanish)."""
    return predict_images(model, images).score
