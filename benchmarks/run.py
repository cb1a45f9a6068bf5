"""clipiqa benchmarks: every figure is a ratio against a baseline measured in the same run (medians of repeats).

    python benchmarks/run.py                     # CPU here: ViT-B/32 random init
    python benchmarks/run.py --device cuda       # GPU: ViT-B/16 (paper setting), bf16 autocast
    python benchmarks/run.py --quick             # fewer repeats, smaller batches (a smoke check)
    python benchmarks/run.py --only onnx,precision,large   # some sections only

Sections: scoring (model.score vs open_clip), decoding, finetune (prefix cache, QGR), meta, onnx (onnxruntime
CPU vs torch CPU on the same batch, CPU only), precision (bf16 vs fp32 scoring: ``amp="auto"`` and bf16
everywhere), large (ViT-L/14 vs ViT-B/16 scoring cost), cli (`clipiqa --help` start-up, under 1 s), int8
(benchmarks/bench_int8.py, CPU only: the int8 ONNX scorer against torch fp32 and onnxruntime fp32 on ViT-B/16 at 1
thread and one per core, the share of a fp32 GEMM's rate each reaches, SRCC of int8 against fp32 margins).

Random weights do not change speed; they make every score meaningless, and no score is reported here.
Writes ``<out>/bench-<device>.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import clipiqa
from clipiqa.finetune import RELEASED_QGR_LAM, EncodedSet, forward_cached
from clipiqa.data import demo_references
from clipiqa.data.transforms import eval_transform
from clipiqa.imageio import load_image
from clipiqa.inference import cpu_has_native_bf16, predict_batches, uses_bf16
from clipiqa.losses import quality_loss, semantic_loss
from clipiqa.qgr import QGRConfig, qgr_step

from bench_int8 import bench_int8  # benchmarks/ is on the path when this file runs as a script


# ----------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def paired_ms(fn_a, fn_b, device: torch.device, repeats: int) -> tuple[float, float]:
    """Medians of ``fn_a`` and ``fn_b`` timed alternately, so drifting machine load hits both alike."""
    a, b = [], []
    fn_a(), fn_b()
    for _ in range(repeats):
        a.append(median_ms(fn_a, device, 1, warmup=0))
        b.append(median_ms(fn_b, device, 1, warmup=0))
    return statistics.median(a), statistics.median(b)


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or sampled process RSS on CPU (MiB)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mib = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil
        proc, self._stop = psutil.Process(), threading.Event()
        self._base = proc.memory_info().rss

        def sample():
            while not self._stop.is_set():
                self.peak_mib = max(self.peak_mib, (proc.memory_info().rss - self._base) / 2**20)
                time.sleep(0.01)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


@contextmanager
def autocast(device: torch.device):
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        yield


def row(name, baseline, baseline_ms, ours, ours_ms, target=None, kind="<=", peak=None, note=""):
    ratio = ours_ms / baseline_ms if kind == "<=" else baseline_ms / ours_ms
    ok = None if target is None else (ratio <= target if kind == "<=" else ratio >= target)
    return {"benchmark": name, "baseline": baseline, "baseline_ms": round(baseline_ms, 2), "ours": ours,
            "ours_ms": round(ours_ms, 2), "ratio": round(ratio, 3), "target": target and f"{kind} {target}",
            "meets_target": ok, "peak_mib": None if peak is None else round(peak, 1), "note": note}


# ----------------------------------------------------------------------------------------------- benchmarks
def bench_scoring(model, images: torch.Tensor, repeats: int) -> list[dict]:
    """model.score (zero-shot and prompted) against raw open_clip encode_image on the same batch and device."""
    device = model.device
    rows = []
    with torch.inference_mode(), autocast(device):
        with model.adapters_off():
            model.score(images[:1])  # text features are computed once, then cached
            with PeakMemory(device) as mem:
                base, ours = paired_ms(lambda: model.clip.encode_image(images), lambda: model.score(images),
                                       device, repeats)
        rows.append(row("scoring, zero-shot", "open_clip encode_image", base, "model.score", ours, 0.95, ">=",
                        mem.peak_mib, f"batch {len(images)}"))
        model.add_visual_prompt()  # the prompted model (100 visual tokens per block), as after adaptation
        model.enable_adapters()
        model.score(images[:1])
        with PeakMemory(device) as mem:
            prompted = median_ms(lambda: model.score(images), device, repeats)
        model.enable_adapters(False)
        rows.append(row("scoring, prompted", "open_clip encode_image", base, "model.score + VPT", prompted, None,
                        ">=", mem.peak_mib, f"{model.prompt_config.visual_tokens} visual prompt tokens per block "
                        "lengthen the sequence: the cost is the method's, not overhead"))
    return rows


def bench_decoding(model, paths: list[str], repeats: int) -> list[dict]:
    """Image decoding + preprocessing per image, measured apart from the model (kept off the critical path)."""
    device = torch.device("cpu")

    def decode():
        for p in paths:
            model.preprocess(load_image(p))
    ms = median_ms(decode, device, repeats) / len(paths)
    return [row("decode + preprocess / image", "-", ms, "load_image + preprocess", ms, None, "<=", None,
                "measured separately; DataLoader workers overlap it with the model")]


def _train_setup(model, pil_images, batch: int):
    model.set_trainable("last-blocks")
    model.train()
    start = model.first_trainable_visual_block()
    transform = eval_transform(model)
    cached = EncodedSet(model, pil_images, transform, 1, start, batch)
    raw = torch.stack([transform(im) for im in pil_images]).to(model.device)
    q = torch.rand(len(pil_images), device=model.device)
    params = [p for p in model.parameters() if p.requires_grad]
    return start, cached, raw, q, params


def bench_finetune(model, pil_images, repeats: int) -> list[dict]:
    """One `last-blocks` fine-tuning step: prefix cache against the naive step (full student + teacher forward)."""
    device = model.device
    start, cached, raw, q, params = _train_setup(model, pil_images, len(pil_images))
    index = torch.arange(len(pil_images))
    view = torch.zeros_like(index)
    qgr_on, qgr_off = QGRConfig(lam=RELEASED_QGR_LAM), QGRConfig(lam=0.0)

    def step(use_cache: bool, qgr: QGRConfig, stats: bool = True):
        for p in params:
            p.grad = None
        with autocast(device):
            if use_cache:
                x, teacher = cached.batch(index, view)
                q_logits, s_logits = forward_cached(model, x, start)
            else:
                with torch.no_grad(), model.adapters_off():
                    teacher = model.scene_logits(raw)
                q_logits, s_logits = model.heads(model.encode_image(raw))
        qgr_step(params, quality_loss(q_logits.float(), q), semantic_loss(s_logits.float(), teacher.float()), qgr,
                 compute_stats=stats)

    with PeakMemory(device) as mem_naive:
        step(False, qgr_on)
    with PeakMemory(device) as mem_cached:
        step(True, qgr_on)
    naive, fast = paired_ms(lambda: step(False, qgr_on), lambda: step(True, qgr_on), device, repeats)
    plain, fast_again = paired_ms(lambda: step(True, qgr_off, stats=False), lambda: step(True, qgr_on), device,
                                  max(2, repeats // 2))
    naive_plain, plain_again = paired_ms(lambda: step(False, qgr_off, stats=False),
                                         lambda: step(True, qgr_off, stats=False), device, max(2, repeats // 2))
    n = len(pil_images)
    return [
        row("fine-tune step, prefix cache", "naive step (student + teacher forward)", naive,
            f"cached from block {start}", fast, 0.45, "<=", mem_cached.peak_mib,
            f"last-blocks set, batch {n}; naive peak {mem_naive.peak_mib:.0f} MiB"),
        row("fine-tune step, prefix cache, no QGR", "naive step, one backward", naive_plain,
            f"cached from block {start}", plain_again, None, "<=", None, "the same comparison for plain fine-tuning"),
        row("fine-tune step, QGR", "plain fine-tuning (one backward)", plain, "QGR lam=5 (two gradients)", fast_again,
            1.6, "<=", None, f"both cached, batch {n}"),
    ]


def bench_meta(model_name: str, device: torch.device, batch: int, repeats: int, workdir: Path) -> list[dict]:
    """Meta pre-training throughput: images per second through inner steps (task switches, Adam state resets
    and parameter reloads included), against plain fine-tuning steps of the same trainable set and batch."""
    from clipiqa.finetune import AdaptConfig, adapt
    from clipiqa.meta import MetaConfig, meta_pretrain, synthetic_tasks
    refs = dict(list(demo_references(size=160).items())[:4])
    tasks = synthetic_tasks(refs, types=["gaussian_blur", "white_noise", "jpeg", "darken"], levels=(1, 3, 5),
                            size=160, cache_dir=workdir / "meta-tasks")
    inner_steps = 3
    stamps: list[float] = []

    def on_step(record: dict) -> None:
        if record.get("kind") == "inner":
            _sync(device)
            stamps.append(time.perf_counter())

    config = MetaConfig(epochs=1, inner_steps=inner_steps, tasks_per_batch=3, batch_size=batch, eval_every=1,
                        holdout_tasks=0.25, augment="none", selection_metric="init")
    model = clipiqa.load_model(model_name, device=device)
    with PeakMemory(device) as mem:
        meta_pretrain(model, tasks, config, on_step=on_step)
    per_task = [b - a for a, b in zip(stamps, stamps[1:])]
    meta_ms = statistics.median(per_task)  # includes the gaps at task switches (theta reload, fresh Adam)
    table = tasks[0].table.head(batch)
    steps: list[float] = []
    adapt(clipiqa.load_model(model_name, device=device), table,
          AdaptConfig(trainable="prompts", epochs=inner_steps + 1, batch_size=batch, augment="none",
                      cache_prefix=False, qgr=config.qgr), on_step=lambda r: steps.append(time.perf_counter()))
    plain_ms = statistics.median([b - a for a, b in zip(steps, steps[1:])]) * 1000
    n = min(batch, len(table))
    return [row("meta pre-training, images/s", f"fine-tuning {1000 * n / plain_ms:.1f} img/s", plain_ms,
                f"meta {1000 * n / (meta_ms * 1000):.1f} img/s", meta_ms * 1000, None, "<=", mem.peak_mib,
                "prompts set, time per inner step incl. task switches")]


def bench_onnx(model, images: torch.Tensor, repeats: int, workdir: Path) -> list[dict]:
    """The exported scorer under onnxruntime (CPU) against torch (CPU, fp32) on the same preprocessed batch."""
    if model.device.type != "cpu":
        return []  # onnxruntime here is the CPU build: compare on --device cpu
    from clipiqa.export import export_onnx
    from clipiqa.onnx_runner import OnnxScorer
    t0 = time.perf_counter()
    scorer = OnnxScorer(export_onnx(model, workdir / "bench-scorer.onnx"))
    export_s = time.perf_counter() - t0
    x = images.cpu().numpy()
    torch_ms, ort_ms = paired_ms(lambda: predict_batches(model, [images], amp=False), lambda: scorer.predict(x),
                                 model.device, repeats)
    diff = float(abs(scorer.predict(x)[0] - predict_batches(model, [images], amp=False).margin.numpy()).max())
    return [row("scoring, onnxruntime CPU", "torch CPU fp32 (predict_batches)", torch_ms,
                "onnxruntime (exported scorer)", ort_ms, None, ">=", None,
                f"batch {len(images)}; max |margin diff| {diff:.1e}; export {export_s:.0f} s; torch "
                f"{torch.get_num_threads()} threads, onnxruntime its default")]


def bench_precision(model, images: torch.Tensor, repeats: int) -> list[dict]:
    """Scoring in bf16 against fp32 on the same batch: amp="auto" (first blocks fp32; on a CPU bf16 matmuls) and bf16
    autocast everywhere."""
    device = model.device
    auto_runs = uses_bf16(device, "auto")
    fp32, auto = paired_ms(lambda: predict_batches(model, [images], amp=False),
                           lambda: predict_batches(model, [images], amp="auto" if auto_runs else True), device,
                           repeats)
    fp32b, plain = paired_ms(lambda: predict_batches(model, [images], amp=False),
                             lambda: predict_batches(model, [images], amp=True), device, repeats)
    native = f"native bf16: {cpu_has_native_bf16()}" if device.type == "cpu" else "CUDA"
    return [row("scoring, bf16 auto vs fp32", "fp32", fp32, "amp='auto' (first blocks fp32)" if auto_runs
                else "bf16 (auto would run fp32 here)", auto, None, ">=", None, f"batch {len(images)}; {native}"),
            row("scoring, bf16 everywhere vs fp32", "fp32", fp32b, "amp=True", plain, None, ">=", None,
                "plain autocast; on a CPU torch 2.14 copies MultiheadAttention's bf16 input-projection weight per "
                "position (slow), and rankings moved (SRCC 0.992 vs fp32 on the rehearsal model)")]


def bench_large(device: torch.device, images: torch.Tensor, repeats: int) -> list[dict]:
    """ViT-L/14 against ViT-B/16 (both random init, the same batch), scoring at the device's default precision."""
    base = clipiqa.load_model("vitb16-random", device=device)
    large = clipiqa.load_model("vitl14-random", device=device)
    b16, l14 = paired_ms(lambda: predict_batches(base, [images]), lambda: predict_batches(large, [images]), device,
                         max(2, repeats // 2))
    return [row("scoring cost, ViT-L/14 vs B/16", "ViT-B/16", b16, "ViT-L/14", l14, None, "<=", None,
                f"batch {len(images)}, 224 px; ratio = L/14 time / B/16 time")]


def bench_cli(repeats: int) -> list[dict]:
    """`clipiqa --help` start-up (wall time of a fresh process) against a process that imports the model code
    (what every call would pay if the command line imported the API eagerly). Target: under 1 s absolute."""
    def wall_ms(code: list[str]) -> float:
        times = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            subprocess.run([sys.executable, *code], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times[1:])  # the first run warms the file cache
    eager = wall_ms(["-c", "import clipiqa; clipiqa.load_model"])
    ours = wall_ms(["-m", "clipiqa.cli", "--help"])
    r = row("cli: clipiqa --help", "import the model code", eager, "clipiqa --help", ours,
            note="target is absolute: under 1000 ms")
    r["target"], r["meets_target"] = "< 1000 ms", ours < 1000
    return [r]


SECTIONS = ("scoring", "decoding", "finetune", "meta", "onnx", "precision", "large", "cli", "int8")


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="preset (default: vitb32-random on CPU, vitb16-random on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default 8 CPU, 64 CUDA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats, batch 4: a smoke check of the suite")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run (default all: "
                                                                  f"{','.join(SECTIONS)})")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only {','.join(unknown)}: unknown section; use {','.join(SECTIONS)}")
    device = clipiqa.resolve_device(args.device)
    model_name = args.model or ("vitb16-random" if device.type == "cuda" else "vitb32-random")
    batch = 4 if args.quick else (args.batch or (64 if device.type == "cuda" else 8))
    repeats = 2 if args.quick else args.repeats
    torch.manual_seed(0)

    refs = list(demo_references(size=320).values())
    pil = [__import__("PIL.Image", fromlist=["Image"]).fromarray(refs[i % len(refs)]) for i in range(batch)]
    tmp = Path(args.out) / "images"
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(pil[:8]):
        paths.append(str(tmp / f"{i}.jpg"))
        im.save(paths[-1], quality=90)

    t0 = time.perf_counter()
    model = clipiqa.load_model(model_name, device=device) if set(only) - {"cli", "int8"} else None
    images = torch.stack([model.preprocess(im) for im in pil]).to(device) if model is not None else None
    sections = {
        "scoring": lambda: bench_scoring(model, images, repeats),
        "decoding": lambda: bench_decoding(model, paths, repeats),
        "finetune": lambda: bench_finetune(clipiqa.load_model(model_name, device=device), pil, repeats),
        "meta": lambda: bench_meta(model_name, device, batch, repeats, Path(args.out)),
        "onnx": lambda: bench_onnx(clipiqa.load_model(model_name, device=device), images, repeats, Path(args.out)),
        "precision": lambda: bench_precision(clipiqa.load_model(model_name, device=device), images, repeats),
        "large": lambda: bench_large(device, images, repeats),
        "cli": lambda: bench_cli(repeats),
        "int8": lambda: bench_int8(row, batch, repeats, Path(args.out)) if device.type == "cpu" else [],
    }
    rows = []
    for name in only:
        done = sections[name]()
        for r in done:  # progress on stderr; the table comes at the end
            print(f"[{time.perf_counter() - t0:6.0f} s] {r['benchmark']}: ratio {r['ratio']}", file=sys.stderr)
        rows += done
    result = {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "model": model_name, "batch": batch, "repeats": repeats, "sections": only,
        "amp": "bf16" if device.type == "cuda" else "fp32",
        "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
        "note": "random-init weights: speed only; no score here means anything",
    }
    suffix = "" if set(only) == set(SECTIONS) else "-" + "-".join(only)  # a partial run keeps the full results
    out = Path(args.out) / f"bench-{device.type}{suffix}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"clipiqa benchmarks on {result['device_name']} ({device}, {result['amp']}), {model_name}, batch {batch}, "
          f"median of {repeats}; {result['note']}")
    header = f"{'benchmark':32s} {'baseline ms':>12s} {'ours ms':>10s} {'ratio':>7s} {'target':>8s}  ok   peak MiB"
    print(header)
    print("-" * len(header))
    for r in rows:
        ok = {True: "yes", False: "NO", None: "-"}[r["meets_target"]]
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"{r['benchmark']:32s} {r['baseline_ms']:12.1f} {r['ours_ms']:10.1f} {r['ratio']:7.3f} "
              f"{r['target'] or '-':>8s}  {ok:4s} {peak:>8s}   {r['note']}")
    print(f"wrote {out} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
