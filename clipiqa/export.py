"""Deployment: an adapted (or zero-shot) scorer as one ONNX graph that runs under onnxruntime without clipiqa or
torch (docs/design.md, 'Weights, checkpoints and export').

``export_onnx(model, "scorer.onnx")`` writes:

- ``scorer.onnx``: image tensor ``image`` ``[B, 3, S, S]`` float32 in (batch size free), ``logit_margin`` and
  ``score`` ``[B]`` out. The image encoder is the model as it scores now (adapters on: the adapted model; off: the
  zero-shot CLIP); the quality head is the fp32 head of :mod:`clipiqa.inference` (``head_logits`` ->
  ``from_logits``) with the quality text features computed once and stored as constants. Exported in fp32.
- ``scorer.json``: the preprocessing (the model's evaluation ``transform_spec``, exactly as its checkpoint card
  records it), the backbone card (name, weights, fingerprint, random-init / toy label), the checkpoint's SHA-256
  when one was applied, the adapter fingerprint, the ONNX file's SHA-256 and the versions that made it;
- ``score_onnx.py``: :mod:`clipiqa.onnx_runner`, a scorer that needs only onnxruntime, numpy and Pillow, and
  ``clipiqa_imageio/``: a copy of :mod:`clipiqa.imageio` (Pillow and numpy only), so the standalone scorer reads
  and scans images with clipiqa's own rules and gives the rows ``clipiqa score`` gives.

``scorer.json`` is sealed (:func:`clipiqa.onnx_runner.seal_metadata`): ``integrity.fields_sha256`` holds the hash
of each of its entries (``onnx_sha256`` among them), and every scorer verifies both before it loads the graph.

Exporter: torch's TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``, opset 17); it still
works in torch 2.14 (with a deprecation warning) and needs no ``onnxscript``. PyTorch's fused attention fast path
has no ONNX symbol, so it is switched off while tracing. After writing, the graph is run once under onnxruntime
and compared with torch on the example batch (margins within 1e-3, else :class:`ExportMismatchError`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._version import __version__
from .inference import from_logits, head_logits
from .csvio import atomic_write
from .extras import require
from .onnx_runner import OnnxScorer, file_sha256, seal_metadata

OPSET = 17
INPUT, OUTPUTS = "image", ("logit_margin", "score")
RUNNER_NAME = "score_onnx.py"
IMAGEIO_COPY = "clipiqa_imageio"
VERIFY_ATOL = 1e-3


class ExportMismatchError(RuntimeError):
    """onnxruntime does not reproduce torch's margins on the example batch."""


class FrozenHeadScorer(nn.Module):
    """``image -> (logit_margin, score)``: the model's image encoder and the fp32 quality head with the quality
    text features (and logit scale) fixed at their current values."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("text_features", model.quality_text_features().detach().float().clone())
            self.register_buffer("logit_scale", model.logit_scale().detach().float().clone())

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        prediction = from_logits(head_logits(self.model.encode_image(image), self.text_features, self.logit_scale))
        return prediction.margin, prediction.score


@contextmanager
def _exportable():
    """No fused attention fast path (no ONNX symbol) and no autocast while tracing."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.autocast("cpu", enabled=False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def adapter_fingerprint(model: nn.Module) -> str | None:
    """SHA-256 (16 hex) of the adapter tensors in use; None when the adapters are off (zero-shot)."""
    if not getattr(model, "adapters_enabled", False):
        return None
    h = hashlib.sha256()
    for name, p in sorted(model.adapter_parameters()):
        t = p.detach().float().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def export_onnx(model: nn.Module, path: str | os.PathLike, *, card: dict[str, Any] | None = None,
                checkpoint: str | os.PathLike | None = None, opset: int = OPSET, verify: bool = True) -> Path:
    """Write ``model`` (as it scores now) as ``path`` (.onnx) with its ``.json`` and ``score_onnx.py`` beside it;
    see the module docstring. ``card``/``checkpoint``: the checkpoint applied to the model (recorded in the JSON;
    ``clipiqa export --prompts`` passes them). Returns the ONNX path."""
    if verify:
        require("onnxruntime", "deploy", "export_onnx (its check runs the graph under onnxruntime)")
    if getattr(model, "frozen_only", False):
        raise ValueError(f"model {model.source.preset!r} scores each image at its own resolution (CLIP-IQA's "
                         "ResNet configuration); the ONNX export takes models with a fixed input size (the ViTs)")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX file name {str(path)!r} must end in .onnx (the preprocessing JSON goes beside it)")
    spec = model.eval_spec
    scorer = FrozenHeadScorer(model).eval()
    example = torch.rand(2, 3, spec.size, spec.size, device=model.device)
    was_training = model.training
    model.eval()
    try:
        with _exportable(), torch.no_grad():
            expected = scorer(example)[0].float().cpu()
            torch.onnx.export(scorer, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=list(OUTPUTS),
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUTS[0]: {0: "batch"}, OUTPUTS[1]: {0: "batch"}})
    finally:
        model.train(was_training)
    _write_metadata(model, path, spec.to_dict(), card, checkpoint, opset)
    copy_runner(path.parent)
    if verify:
        _verify(path, example.cpu().numpy(), expected)
    return path


def copy_runner(folder: Path) -> Path:
    """Write ``score_onnx.py`` and ``clipiqa_imageio/`` (the image loader it imports) into ``folder``."""
    here = Path(__file__).parent
    runner = folder / RUNNER_NAME
    shutil.copyfile(here / "onnx_runner.py", runner)
    loader = folder / IMAGEIO_COPY
    loader.mkdir(exist_ok=True)
    for source in sorted((here / "imageio").glob("*.py")):
        shutil.copyfile(source, loader / source.name)
    return runner


def write_scorer_metadata(meta: dict, onnx_path: Path) -> Path:
    """Seal ``meta`` (the SHA-256 of ``onnx_path`` and of every entry) and write it atomically beside the graph as
    ``NAME.json``. Call it again after rewriting the graph (e.g. quantizing it in place)."""
    meta = seal_metadata({**meta, "onnx_sha256": file_sha256(onnx_path)})
    meta_path = onnx_path.with_suffix(".json")
    with atomic_write(meta_path) as f:
        f.write(json.dumps(meta, indent=2))
    return meta_path


def _write_metadata(model, path: Path, spec: dict, card: dict | None, checkpoint, opset: int) -> Path:
    source = model.source
    integrity = (card or {}).get("integrity") or {}
    meta = {
        "format": "clipiqa-onnx", "version": 1,
        "model": source.preset, "label": source.label, "backbone": source.card(),
        "adapters": "on" if model.adapters_enabled else "off",
        "adapter_fingerprint": adapter_fingerprint(model),
        "checkpoint": None if card is None and checkpoint is None else {
            "path": None if checkpoint is None else str(checkpoint), "sha256": integrity.get("sha256"),
            "created": (card or {}).get("created"), "trainable": (card or {}).get("trainable")},
        "preprocess": spec,
        "input": {"name": INPUT, "shape": ["batch", 3, spec["size"], spec["size"]], "dtype": "float32",
                  "layout": "RGB, normalised as 'preprocess' says"},
        "outputs": {OUTPUTS[0]: "z_high - z_low, float32: rank by it", OUTPUTS[1]: "p_high in [0, 1]: display"},
        "exported_with": {"clipiqa": __version__, "torch": torch.__version__, "opset": opset,
                          "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)"},
    }
    if source.caveat:
        meta["warning"] = source.caveat.text
    return write_scorer_metadata(meta, path)


def _verify(path: Path, example, expected: Tensor) -> None:
    margin, _ = OnnxScorer(path).predict(example)
    worst = float((torch.from_numpy(margin).float() - expected).abs().max())
    if not worst <= VERIFY_ATOL:
        raise ExportMismatchError(f"{path}: onnxruntime margins differ from torch's by up to {worst:.2e} on the "
                                  f"example batch (allowed {VERIFY_ATOL}); the export is not faithful")


__all__ = ["export_onnx", "FrozenHeadScorer", "adapter_fingerprint", "ExportMismatchError", "copy_runner",
           "write_scorer_metadata"]
