"""An int8 ONNX scorer: the fp32 export with its matrix products quantized by onnxruntime (``clipiqa export --int8``).

Why dynamic quantization: a CLIP ViT spends nearly all of its time in the linear layers (attention projections and
the MLP), whose weights are constants. onnxruntime's dynamic quantization stores those weights as int8 (one scale
per output channel) and quantizes each activation to uint8 at run time from its own range, so no calibration set is
needed and the u8 x s8 products run on the CPU's integer dot-product instructions (AVX-512 VNNI / AVX2). The patch
convolution (a few percent of the FLOPs; onnxruntime's integer convolution has no fast kernel) and the
activation x activation products inside attention stay fp32, and so do the quality head, the normalisations and
the softmax.

The activation ranges are taken per run of the graph, so in a batch an image's int8 margin would move with its
batch mates (by up to 0.05 on the lesson toy, whose margins spread 1.9): the scorers (``OnnxScorer``, hence
``clipiqa score --onnx`` and ``score_onnx.py``) run an int8 graph one image at a time, which makes its rows the
same whatever the batch size and, measured on ViT-B/16 with one thread, is no slower than batches of 8 (2.4 s
against 3.1 s for 8 images; the per-image products stay in cache). Rankings within a folder are what the scorer is
for; :func:`quantize_scorer` measures how well int8 keeps them: it scores a check batch (demo photos with blur and
noise at two severities) with the fp32 and the int8 graph and refuses a quantized graph whose margins rank those
images with SRCC below ``min_srcc`` against fp32. The SRCC and the largest margin difference are recorded in
the scorer's JSON.

The int8 scorer has the same input and outputs as the fp32 one, so ``clipiqa score --onnx`` and ``score_onnx.py``
run it unchanged; its JSON is the fp32 one with ``precision: "int8"``, its own ``onnx_sha256`` and a
``quantization`` record (method, the fp32 graph's SHA-256, the check).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .extras import require
from .export import copy_runner, export_onnx, write_scorer_metadata
from .metrics import srcc
from .onnx_runner import OnnxScorer, import_onnxruntime, read_metadata

MIN_CHECK_SRCC = 0.99
QUANTIZED_OPS = ("MatMul", "Gemm")
CHECK_TYPES, CHECK_LEVELS = ("gaussian_blur", "white_noise"), (2, 4)


class QuantizationError(RuntimeError):
    """The int8 graph does not keep the fp32 graph's ranking of the check images."""


def quantize_graph(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, *, per_channel: bool = True) -> Path:
    """Write ``fp32_path``'s graph with the weight x activation matrix products (MatMul, Gemm) in int8 (weights
    int8 symmetric, per output channel when ``per_channel``; activations uint8, quantized at run time) as
    ``int8_path``. Only the graph: :func:`quantize_scorer` adds the JSON and the check."""
    import logging
    for package in ("onnx", "onnxruntime"):
        require(package, "deploy", "int8 quantization")
    import_onnxruntime()  # first, so that its telemetry switch is set (see onnx_runner)
    from onnxruntime.quantization import QuantType, quantize_dynamic  # the `deploy` extra
    int8_path = Path(int8_path)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice is for other exporters
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), op_types_to_quantize=list(QUANTIZED_OPS),
                         per_channel=per_channel, reduce_range=False, weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        logging.getLogger().setLevel(level)
    return int8_path


def margins(scorer: OnnxScorer, batch: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Logit margins of a preprocessed float32 ``[N, 3, S, S]`` array, ``batch_size`` images per run."""
    return np.concatenate([scorer.predict(batch[i:i + batch_size])[0] for i in range(0, len(batch), batch_size)])


def compare(fp32: np.ndarray, int8: np.ndarray) -> dict[str, Any]:
    """How far int8 margins are from fp32 margins of the same images: SRCC (ranking) and the largest and mean
    absolute differences, next to the spread of the fp32 margins (the differences mean little without it)."""
    fp32, int8 = np.asarray(fp32, dtype=np.float64), np.asarray(int8, dtype=np.float64)
    diff = np.abs(int8 - fp32)
    return {"images": int(fp32.size), "srcc_vs_fp32": round(float(srcc(int8, fp32)), 6),
            "max_abs_margin_diff": float(f"{diff.max():.3g}"), "mean_abs_margin_diff": float(f"{diff.mean():.3g}"),
            "fp32_margin_std": float(f"{fp32.std():.3g}")}


def quantize_scorer(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, check_batch: np.ndarray, *,
                    per_channel: bool = True, min_srcc: float = MIN_CHECK_SRCC) -> Path:
    """The int8 scorer of an exported fp32 scorer: ``int8_path`` (.onnx), its JSON and ``score_onnx.py`` beside it.

    ``check_batch``: preprocessed images (float32 ``[N, 3, S, S]``, N >= 3) scored by both graphs; raises
    :class:`QuantizationError` (and writes nothing) when the int8 margins rank them with SRCC below ``min_srcc``
    against fp32."""
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if int8_path.suffix != ".onnx":
        raise ValueError(f"ONNX file name {str(int8_path)!r} must end in .onnx (the preprocessing JSON goes beside it)")
    if len(check_batch) < 3:
        raise ValueError(f"the check batch has {len(check_batch)} images; SRCC needs at least 3")
    meta = read_metadata(fp32_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=int8_path.parent, prefix=".clipiqa-int8-") as tmp:
        staged = Path(tmp) / int8_path.name
        quantize_graph(fp32_path, staged, per_channel=per_channel)
        check = compare(margins(OnnxScorer(fp32_path), check_batch), _staged_margins(staged, meta, check_batch))
        if not check["srcc_vs_fp32"] >= min_srcc:
            raise QuantizationError(
                f"the int8 graph ranks the {check['images']} check images with SRCC {check['srcc_vs_fp32']:.4f} "
                f"against fp32 (at least {min_srcc} needed; largest margin difference "
                f"{check['max_abs_margin_diff']:.3g}, fp32 margin spread {check['fp32_margin_std']:.3g}): this "
                "model does not survive int8; export it without --int8 (fp32)")
        meta.update(precision="int8", quantization={
            "method": "onnxruntime dynamic quantization", "ops": list(QUANTIZED_OPS),
            "weights": "int8 symmetric, " + ("per output channel" if per_channel else "per tensor"),
            "activations": "uint8, range taken per run; the scorers run an int8 graph one image at a time",
            "kept_fp32": "patch convolution, attention's activation x activation products, softmax, "
                         "normalisations, quality head",
            "fp32_onnx_sha256": meta.get("onnx_sha256"), "onnxruntime": _ort_version(),
            "check": {**check, "set": f"demo photos, {' and '.join(CHECK_TYPES)} at levels "
                                      f"{', '.join(map(str, CHECK_LEVELS))}, and the references"}})
        write_scorer_metadata(meta, staged)  # sealed: its own onnx_sha256 and the hash of every entry
        os.replace(staged, int8_path)
        os.replace(staged.with_suffix(".json"), int8_path.with_suffix(".json"))
    copy_runner(int8_path.parent)
    return int8_path


def _staged_margins(staged: Path, meta: dict, batch: np.ndarray) -> np.ndarray:
    """Margins of the quantized graph before its JSON exists (the fp32 JSON stands in: same preprocessing)."""
    write_scorer_metadata(meta, staged)
    return margins(OnnxScorer(staged), batch)


def _ort_version() -> str:
    return import_onnxruntime().__version__


def check_batch(model: nn.Module, folder: str | os.PathLike) -> np.ndarray:
    """The images :func:`export_int8` checks int8 against fp32 on, preprocessed for ``model``: the demo photos,
    each plain and with Gaussian blur and white noise at two severities (built in ``folder``)."""
    from PIL import Image

    from .data import build_demo_set
    table = build_demo_set(folder, types=list(CHECK_TYPES), levels=CHECK_LEVELS, size=max(64, model.eval_spec.size))
    transform = model.preprocess
    return np.stack([transform(Image.open(p).convert("RGB")).numpy() for p in table["path"]]).astype(np.float32)


def export_int8(model: nn.Module, path: str | os.PathLike, *, card: dict[str, Any] | None = None,
                checkpoint: str | os.PathLike | None = None, min_srcc: float = MIN_CHECK_SRCC) -> Path:
    """``export_onnx`` then :func:`quantize_scorer`: the int8 scorer of ``model`` (as it scores now) at ``path``,
    checked against its fp32 graph on the demo photos (:func:`check_batch`). The fp32 graph is not kept."""
    for package in ("onnx", "onnxruntime"):  # before the export, which takes a while
        require(package, "deploy", "int8 quantization")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX file name {str(path)!r} must end in .onnx (the preprocessing JSON goes beside it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".clipiqa-fp32-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / path.name, card=card, checkpoint=checkpoint)
        return quantize_scorer(fp32, path, check_batch(model, Path(tmp) / "check"), min_srcc=min_srcc)


__all__ = ["export_int8", "quantize_scorer", "quantize_graph", "check_batch", "compare", "QuantizationError",
           "MIN_CHECK_SRCC"]
