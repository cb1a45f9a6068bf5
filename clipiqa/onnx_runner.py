"""Score images with an exported clipiqa scorer: onnxruntime, numpy and Pillow only (no torch, no clipiqa).

``clipiqa export`` copies this file beside the model, so a machine without clipiqa scores with::

    pip install onnxruntime numpy pillow
    python score_onnx.py scorer.onnx photos/ --out scores.csv

The model is one graph: a float32 image batch ``[B, 3, S, S]`` in, ``logit_margin`` (rank by it) and ``score``
(p_high in [0, 1], for display) out. Its preprocessing is recorded beside it in ``scorer.json``
(``preprocess``: resize, centre crop, mean/std) and applied here exactly as clipiqa applies it with torchvision
on a Pillow image: the same resized size, crop offsets, float32 division by 255 and normalisation, so the
tensors agree bit for bit. Images are read with Pillow (EXIF orientation applied, transparency composited on
white, converted to RGB); clipiqa's own loader handles more exotic files (16-bit, huge JPEGs).

Output columns: ``path, score, logit_margin, status, error`` (as ``clipiqa score``), plus ``model``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

FORMAT = "clipiqa-onnx"
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS}
COLUMNS = ("path", "score", "logit_margin", "status", "error", "model")


def read_metadata(onnx_path: str | os.PathLike) -> dict:
    """The JSON written beside the model (``NAME.json`` for ``NAME.onnx``)."""
    meta_path = Path(onnx_path).with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {meta_path}, the preprocessing that goes with {onnx_path}: {e}") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a clipiqa ONNX description (format={meta.get('format')!r})")
    return meta


def resized_size(width: int, height: int, side: int, mode: str) -> tuple[int, int]:
    """``(width, height)`` after the resize step: ``shortest`` scales the shorter side to ``side`` (torchvision's
    rule, the longer side truncated), ``squash`` gives ``side`` x ``side``."""
    if mode == "squash":
        return side, side
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = side, int(side * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def preprocess(image: Image.Image, spec: dict) -> np.ndarray:
    """An RGB Pillow image -> float32 ``[3, size, size]``, as ``clipiqa.data.transforms.eval_transform(spec)``."""
    w, h = resized_size(image.width, image.height, int(spec["resize"]), spec["resize_mode"])
    if (w, h) != image.size:  # torchvision leaves an image of the target size untouched
        image = image.resize((w, h), RESAMPLE[spec["interpolation"]])
    size = int(spec["size"])
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    if image.mode != "RGB":
        image = image.convert("RGB")
    x = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1).copy()


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """A file as an 8-bit RGB image: EXIF orientation applied, transparency composited on white."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB")


class OnnxScorer:
    """An exported scorer: ``predict(batch) -> (margins, scores)`` for float32 ``[B, 3, S, S]`` batches."""

    def __init__(self, onnx_path: str | os.PathLike, providers: list[str] | None = None):
        import onnxruntime as ort  # optional (the `deploy` extra): imported only when an ONNX scorer is used
        self.path = str(onnx_path)
        self.meta = read_metadata(onnx_path)
        self.spec = self.meta["preprocess"]
        self.session = ort.InferenceSession(self.path, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @property
    def label(self) -> str:
        """'' for real weights; the random-init / toy label otherwise (every output must carry it)."""
        return self.meta.get("label", "")

    def describe(self) -> str:
        """The weights line of an exported scorer."""
        b = self.meta.get("backbone", {})
        ckpt = self.meta.get("checkpoint") or {}
        label = f" [{self.label}]" if self.label else ""
        adapted = (f"checkpoint sha256 {str(ckpt.get('sha256'))[:16]}" if ckpt.get("sha256")
                   else "adapted" if self.meta.get("adapters") == "on" else "zero-shot")
        return (f"onnx {self.path}: model {self.meta.get('model')}, backbone fingerprint {b.get('fingerprint')}, "
                f"{adapted}; onnxruntime {', '.join(self.session.get_providers())} fp32{label}")

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        margin, score = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return margin.astype(np.float64), score.astype(np.float64)

    def score_paths(self, paths: list[str], batch_size: int = 16, load=open_rgb, progress=None) -> list[dict]:
        """One row per path, in order; a file that cannot be read gets an error row and the batch goes on."""
        rows = [{"path": p, "score": math.nan, "logit_margin": math.nan, "status": "ok", "error": "",
                 "model": self.meta.get("model", "") + (f" [{self.label}]" if self.label else "")} for p in paths]
        for start in range(0, len(paths), batch_size):
            index, arrays = [], []
            for i in range(start, min(start + batch_size, len(paths))):
                try:
                    arrays.append(preprocess(load(paths[i]), self.spec))
                    index.append(i)
                except Exception as e:  # noqa: BLE001 - a bad file is a row, never the end of the run
                    rows[i].update(status="error", error=f"cannot read {paths[i]}: {type(e).__name__}: {e}")
            if arrays:
                margins, scores = self.predict(np.stack(arrays))
                for i, m, s in zip(index, margins, scores):
                    if math.isfinite(m) and math.isfinite(s):
                        rows[i].update(score=float(s), logit_margin=float(m))
                    else:
                        rows[i].update(status="error", error=f"non-finite score for {paths[i]}")
            if progress is not None:
                progress(min(start + batch_size, len(paths)), len(paths))
        return rows


def list_files(inputs: list[str]) -> list[str]:
    """Files as given, folders searched recursively for image suffixes (sorted)."""
    found = []
    for entry in inputs:
        if os.path.isdir(entry):
            found += sorted(str(p) for p in Path(entry).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        else:
            found.append(entry)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score images with a clipiqa ONNX scorer (no torch needed).")
    parser.add_argument("onnx", help="the exported scorer (.onnx; its .json must lie beside it)")
    parser.add_argument("paths", nargs="+", help="image files and/or folders")
    parser.add_argument("--out", default=None, help="CSV file to write (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    scorer = OnnxScorer(args.onnx)
    print(scorer.describe(), file=sys.stderr)
    rows = scorer.score_paths(list_files(args.paths), args.batch_size)
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    finally:
        if args.out:
            out.close()
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"scored {len(rows) - failed} of {len(rows)} files" + (f"; {failed} failed" if failed else ""),
          file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
