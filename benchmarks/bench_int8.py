"""The int8 scorer (``clipiqa export --int8``) against fp32, for ``benchmarks/run.py --only int8``.

Speed: torch fp32 scoring (``predict_batches``, amp off), the fp32 ONNX graph and the int8 ONNX graph under
onnxruntime, on the same preprocessed batch of the ViT-B/16 architecture (random init), timed alternately in the
same run, at 1 thread and at one thread per core this process may use. Throughput: a 2048 x 2048 fp32
``torch.matmul`` timed at the same thread count gives this CPU's fp32 matrix rate; each scorer's rate is the
model's FLOPs per image (counted below) times images per second, reported as a fraction of that GEMM rate (int8
may pass 1: its products are integer ones). Accuracy: SRCC of int8 against fp32 margins on the demo images, for
the lesson toy and ViT-B/16.

Random weights set the speed as real ones would; no score here says anything about image quality.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import clipiqa
from clipiqa.export import export_onnx
from clipiqa.inference import predict_batches
from clipiqa.metrics import srcc
from clipiqa.quantize import margins, quantize_scorer
from clipiqa.onnx_runner import OnnxScorer, import_onnxruntime, session_options

SPEED_MODEL = "vitb16-random"  # the paper's architecture (the rehearsal model's), random init
GEMM_N = 2048
SRCC_BAR, SPEED_TARGET = 0.995, 2.0


def model_flops(model) -> float:
    """FLOPs (2 per multiply-add) of one image through the image encoder and head: the linear layers, the patch
    convolution and the projection as ``torch.utils.flop_counter`` counts them (fused attention fast path off),
    plus attention's two activation products (QK^T and AV: 2 * 2 * T^2 * width per block), which it does not see
    in nn.MultiheadAttention."""
    from torch.utils.flop_counter import FlopCounterMode
    spec = model.eval_spec
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.encode_image(torch.rand(1, 3, spec.size, spec.size, device=model.device))
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
    counted = counter.get_flop_counts()["Global"]
    total = float(sum(counted.values()))
    if not any("attention" in str(op) or "bmm" in str(op) for op in counted):
        visual = model.clip.visual
        tokens = int(np.prod(visual.grid_size)) + 1 + (model.prompt_config.visual_tokens
                                                       if getattr(model, "adapters_enabled", False) else 0)
        total += 4.0 * tokens ** 2 * visual.transformer.width * len(visual.transformer.resblocks)
    return total


def gemm_gflops(repeats: int) -> tuple[float, float]:
    """This CPU's fp32 matrix rate at the current torch thread count: (GFLOP/s, ms per GEMM)."""
    a, b = torch.rand(GEMM_N, GEMM_N), torch.rand(GEMM_N, GEMM_N)
    ms = _median_ms(lambda: torch.matmul(a, b), max(3, repeats))
    return 2.0 * GEMM_N ** 3 / (ms / 1000) / 1e9, ms


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _interleaved_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Medians of each function, timed in turn each round, so drifting machine load hits all alike."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def _session(path: Path, threads: int):
    ort = import_onnxruntime()
    options = session_options(ort)  # as OnnxScorer: idle threads sleep (spinning ones fight for shared cores)
    options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per physical core)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _demo_batch(scorer: OnnxScorer, folder: Path, size: int) -> np.ndarray:
    from clipiqa.data import build_demo_set
    from clipiqa.imageio import load_image
    from clipiqa.onnx_runner import preprocess
    table = build_demo_set(folder, types=["gaussian_blur", "white_noise"], size=size)
    return np.stack([preprocess(load_image(p), scorer.spec) for p in table["path"]])


def export_pair(model, folder: Path, demo_size: int) -> tuple[Path, Path, np.ndarray]:
    """fp32 and int8 scorers of ``model`` in ``folder`` and the preprocessed demo images."""
    (folder / "fp32").mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, folder / "fp32" / "scorer.onnx")
    demo = _demo_batch(OnnxScorer(fp32), folder / "demo", demo_size)
    int8 = quantize_scorer(fp32, folder / "int8" / "scorer.onnx", demo[::3])
    return fp32, int8, demo


def accuracy_row(row, name: str, fp32: Path, int8: Path, demo: np.ndarray) -> dict:
    t0 = time.perf_counter()
    m32 = margins(OnnxScorer(fp32), demo)
    t1 = time.perf_counter()
    m8 = margins(OnnxScorer(int8), demo)
    t2 = time.perf_counter()
    value = srcc(m8, m32)
    r = row(f"int8 SRCC vs fp32, {name}", "fp32 ONNX margins", (t1 - t0) * 1000, "int8 ONNX margins",
            (t2 - t1) * 1000, note=f"ms: all images, batches of 16, not interleaved; {len(demo)} demo images "
                                   f"(blur + noise, 5 levels, and references); max |margin diff| "
                                   f"{np.abs(m8 - m32).max():.3g}, fp32 margin std {m32.std():.3g}")
    r["ratio"], r["target"], r["meets_target"] = round(value, 5), f">= {SRCC_BAR}", bool(value >= SRCC_BAR)
    return r


def speed_rows(row, model, fp32: Path, int8: Path, images: torch.Tensor, repeats: int, threads: int,
               flops: float) -> list[dict]:
    """torch fp32, onnxruntime fp32 and int8 on ``images`` at ``threads`` threads; GEMM share of each."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = images.cpu().numpy()
        s32, s8 = _session(fp32, threads), _session(int8, threads)
        ms = _interleaved_ms({"torch": lambda: predict_batches(model, [images], amp=False),
                              "ort32": lambda: s32.run(None, {"image": x}),
                              "ort8": lambda: [s8.run(None, {"image": x[i:i + 1]}) for i in range(len(x))]},
                             repeats)  # int8: one image per run, as OnnxScorer runs it (batch-independent margins)
        gemm, gemm_ms = gemm_gflops(repeats)
    finally:
        torch.set_num_threads(previous)
    n, tag = len(images), f"{threads} thread{'s' if threads > 1 else ''}"
    rate = {k: flops * n / (v / 1000) / 1e9 for k, v in ms.items()}
    rows = [row(f"int8: onnxruntime fp32 vs torch, {tag}", "torch fp32 (predict_batches)", ms["torch"],
                "onnxruntime fp32 graph", ms["ort32"], None, ">=", None, f"batch {n}, {SPEED_MODEL}"),
            row(f"int8: onnxruntime int8 vs torch, {tag}", "torch fp32 (predict_batches)", ms["torch"],
                "onnxruntime int8 graph", ms["ort8"], SPEED_TARGET, ">=", None,
                f"{n} images, one per run; int8 / onnxruntime fp32: {ms['ort32'] / ms['ort8']:.2f}x")]
    share = row(f"int8: share of fp32 GEMM rate, {tag}", f"torch.matmul {GEMM_N}^2 fp32: {gemm:.0f} GFLOP/s",
                gemm_ms, f"int8 {rate['ort8']:.0f} GFLOP/s", ms["ort8"],
                note=f"{flops / 1e9:.1f} GFLOP/image; torch fp32 {rate['torch']:.0f} GFLOP/s = "
                     f"{rate['torch'] / gemm:.2f}, onnxruntime fp32 {rate['ort32'] / gemm:.2f}, int8 "
                     f"{rate['ort8'] / gemm:.2f} of the GEMM rate")
    share["ratio"] = round(rate["ort8"] / gemm, 3)
    return rows + [share]


def bench_int8(row, batch: int, repeats: int, workdir: Path) -> list[dict]:
    """All int8 rows: accuracy on the lesson toy and ViT-B/16, speed at 1 thread and one per core."""
    workdir = Path(workdir) / "int8"
    # the cores this process may use (clipiqa.threads lowers torch's count when the load is high; this measures both)
    default_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    lesson = clipiqa.load_model("lesson", device="cpu")
    rows = [accuracy_row(row, "lesson toy", *export_pair(lesson, workdir / "lesson", 64))]
    model = clipiqa.load_model(SPEED_MODEL, device="cpu")
    fp32, int8, demo = export_pair(model, workdir / "b16", 224)
    rows.append(accuracy_row(row, f"{SPEED_MODEL} (rehearsal architecture)", fp32, int8, demo))
    flops = model_flops(model)
    images = torch.from_numpy(demo[:batch]).float()  # demo images, preprocessed as clipiqa does
    for threads in sorted({1, default_threads}):
        rows += speed_rows(row, model, fp32, int8, images, repeats, threads, flops)
    return rows
