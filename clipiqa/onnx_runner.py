"""Score images with an exported clipiqa scorer: onnxruntime, numpy and Pillow only (no torch, no clipiqa).

``clipiqa export`` copies this file beside the model as ``score_onnx.py``, with ``clipiqa_imageio/`` (a copy of
:mod:`clipiqa.imageio`, clipiqa's image loader), so a machine without clipiqa scores with::

    pip install onnxruntime numpy pillow
    python score_onnx.py scorer.onnx photos/ --out scores.csv

The model is one graph: a float32 image batch ``[B, 3, S, S]`` in, ``logit_margin`` (rank by it) and ``score``
(p_high in [0, 1], for display) out. Its preprocessing is recorded beside it in ``scorer.json``
(``preprocess``: resize, centre crop, mean/std) and applied here exactly as clipiqa applies it with torchvision
on a Pillow image: the same resized size, crop offsets, float32 division by 255 and normalisation, so the
tensors agree bit for bit.

The rows are those of ``clipiqa score``, because the same code makes them: files, folders and globs are expanded
by the same scan (it names what it leaves out), every file is read by the same loader (16-bit and float images
scaled, transparency on white, EXIF orientation, the same pixel limit against decompression bombs, ``--max-pixels``),
a file that cannot be read gets an error row and a line on stderr, and the CSV follows ``clipiqa.csvio``'s rule
(UTF-8; a file name that is not UTF-8 as its raw bytes; quoted fields; written to a temporary file and renamed, so
a crash never leaves a CSV that looks complete). ``--out`` is checked before any image is read.

Verified before use (:func:`verify_scorer`): ``scorer.json`` records the SHA-256 of the ONNX file and of each of
its own entries (``integrity.fields_sha256``), so a damaged or swapped graph and an edited preprocessing are
refused, naming the file, before anything is scored. A ``scorer.json`` written before clipiqa recorded the entry
hashes is used with a warning (its graph is still checked). These hashes catch accidents (a flipped byte, a
partial copy, a hand edit, files from two exports), not an attacker who rewrites both files.

Output columns: ``path, score, logit_margin, status, error, model`` (as ``clipiqa score``). Exit codes: 0 all
scored, 1 the command cannot run (nothing scored), 2 some files failed (an error row each).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import secrets
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

if __package__:  # clipiqa.onnx_runner
    from .imageio import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, scan_images
else:  # score_onnx.py: the copy of clipiqa.imageio that `clipiqa export` wrote beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from clipiqa_imageio import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, scan_images
    except ImportError as _e:
        sys.exit(f"{Path(__file__).name}: error: cannot import clipiqa_imageio, the image loader that `clipiqa "
                 f"export` writes beside this file ({_e}); copy the folder clipiqa_imageio/ along with it")

FORMAT = "clipiqa-onnx"
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS}
COLUMNS = ("path", "score", "logit_margin", "status", "error", "model")
PREPROCESS_KEYS = ("size", "resize", "resize_mode", "interpolation", "mean", "std")
EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2


class ScorerError(ValueError):
    """An exported scorer cannot be used (damaged, edited, mismatched); the message names the file and what to do."""


class ScorerIntegrityError(ScorerError):
    """The ONNX file or its JSON changed after export."""


def import_onnxruntime():
    """``onnxruntime``, imported with ``ORT_DISABLE_TELEMETRY=1`` unless the caller set the variable: onnxruntime
    1.29+ otherwise writes a device id and an event database under ``~/.cache/Microsoft/DeveloperTools/``. The
    variable is read when onnxruntime is first imported, so an earlier import in the process keeps its setting."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime
    return onnxruntime


def session_options(ort):
    """onnxruntime settings for a scorer: worker threads sleep when idle instead of spinning. On a machine whose
    cores others use too, spinning threads take the cores the work needs (measured on a shared 2-core VM, int8
    ViT-B/16 with 2 threads: 4.4 s spinning, 2.5 s not, for 8 images); alone on idle cores, waking sleeping
    threads may cost a little latency (not measured here)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


# ------------------------------------------------------------------------------------------------ integrity
def canonical_sha256(value) -> str:
    """SHA-256 of a JSON value written canonically (sorted keys, no spaces, ASCII): reformatting a file or
    reordering its keys keeps the hash; any change of a value does not."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def field_hashes(meta: dict) -> dict[str, str]:
    """``{entry: canonical_sha256(value)}`` for every entry of a scorer description except ``integrity``."""
    return {key: canonical_sha256(value) for key, value in meta.items() if key != "integrity"}


def seal_metadata(meta: dict) -> dict:
    """``meta`` as it will read back from JSON, with its ``integrity`` entry (the hash of every other entry)."""
    meta = json.loads(json.dumps({k: v for k, v in meta.items() if k != "integrity"}, default=str))
    meta["integrity"] = {"algorithm": "sha256", "fields_sha256": field_hashes(meta)}
    return meta


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_scorer(onnx_path: str | os.PathLike, meta: dict) -> None:
    """Refuse an ONNX file or a description that changed after export (see the module docstring)."""
    meta_path = Path(onnx_path).with_suffix(".json")
    redo = f"restore the exported {Path(onnx_path).name} and {meta_path.name}, or export the scorer again " \
           "(clipiqa export); nothing was scored"
    record = meta.get("integrity")
    if record is None:
        warnings.warn(f"{meta_path} records no hash of its own entries (exported before clipiqa recorded one), so "
                      "an edit to its preprocessing cannot be detected; export the scorer again to add one",
                      UserWarning, stacklevel=3)
    else:
        expected = record.get("fields_sha256") if isinstance(record, dict) else None
        if not isinstance(expected, dict):
            raise ScorerIntegrityError(f"{meta_path}: its integrity entry is damaged (no fields_sha256); {redo}")
        actual = field_hashes(meta)
        changed = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
        if changed:
            raise ScorerIntegrityError(
                f"{meta_path} was edited after export (changed: {', '.join(changed)}); its entries decide how "
                f"images are scored, so it is refused: {redo}")
    expected_sha = meta.get("onnx_sha256")
    if not isinstance(expected_sha, str):
        raise ScorerIntegrityError(f"{meta_path} records no onnx_sha256 for {onnx_path}, so the graph cannot be "
                                   f"verified; {redo}")
    try:
        actual_sha = file_sha256(onnx_path)
    except OSError as e:
        raise ScorerError(f"cannot read the ONNX scorer {onnx_path}: {e.strerror or e}") from e
    if actual_sha != expected_sha:
        raise ScorerIntegrityError(
            f"{onnx_path} does not match the SHA-256 recorded in {meta_path.name} (the file changed after export: "
            f"a flipped byte, a partial copy, or another graph put in its place); {redo}")


def read_metadata(onnx_path: str | os.PathLike) -> dict:
    """The JSON written beside the model (``NAME.json`` for ``NAME.onnx``), with its preprocessing checked."""
    meta_path = Path(onnx_path).with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ScorerError(f"cannot read {meta_path}, the preprocessing that goes with {onnx_path}: {e}; it must "
                          "lie beside the .onnx file as clipiqa export wrote it") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ScorerError(f"{meta_path} is not a clipiqa ONNX description (format={found!r})")
    spec = meta.get("preprocess")
    missing = [k for k in PREPROCESS_KEYS if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise ScorerError(f"{meta_path}: its preprocess entry lacks {', '.join(missing)}; restore it or export "
                          "the scorer again (clipiqa export)")
    return meta


# ------------------------------------------------------------------------------------------------ preprocessing
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


# ------------------------------------------------------------------------------------------------ the scorer
def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


class OnnxScorer:
    """An exported scorer, verified against its ``scorer.json`` before onnxruntime loads it:
    ``predict(batch) -> (margins, scores)`` for float32 ``[B, 3, S, S]`` batches, ``score_paths(paths)`` rows."""

    def __init__(self, onnx_path: str | os.PathLike, providers: list[str] | None = None):
        self.path = str(onnx_path)
        if not os.path.isfile(self.path):
            raise ScorerError(f"ONNX scorer {self.path} does not exist; give the .onnx file clipiqa export wrote")
        self.meta = read_metadata(onnx_path)
        verify_scorer(onnx_path, self.meta)
        self.spec = self.meta["preprocess"]
        ort = import_onnxruntime()
        try:
            self.session = ort.InferenceSession(self.path, session_options(ort),
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error types; the message is what matters
            raise ScorerError(f"{self.path} cannot be loaded by onnxruntime ({_first_line(e)}): the file is damaged "
                              "or not an ONNX model; export the scorer again (clipiqa export)") from e
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        side = int(self.spec["size"])
        if any(isinstance(d, int) and d != side for d in first.shape[2:]):
            raise ScorerError(f"{Path(self.path).with_suffix('.json')} says size {side}, but the graph {self.path} "
                              f"takes images of {first.shape[2:]}: the two files come from different exports; "
                              "restore the pair or export the scorer again (clipiqa export)")

    @property
    def label(self) -> str:
        """'' for real weights; the random-init / toy label otherwise (every output must carry it)."""
        return self.meta.get("label", "")

    @property
    def model_name(self) -> str:
        return self.meta.get("model", "") + (f" [{self.label}]" if self.label else "")

    def describe(self) -> str:
        """The weights line of an exported scorer."""
        b = self.meta.get("backbone", {})
        ckpt = self.meta.get("checkpoint") or {}
        label = f" [{self.label}]" if self.label else ""
        adapted = (f"checkpoint sha256 {str(ckpt.get('sha256'))[:16]}" if ckpt.get("sha256")
                   else "adapted" if self.meta.get("adapters") == "on" else "zero-shot")
        return (f"onnx {self.path}: model {self.meta.get('model')}, backbone fingerprint {b.get('fingerprint')}, "
                f"{adapted}; onnxruntime {', '.join(self.session.get_providers())} "
                f"{self.meta.get('precision', 'fp32')}{label}; verified against "
                f"the SHA-256s in {Path(self.path).with_suffix('.json').name}")

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.meta.get("precision") == "int8" and len(batch) > 1:
            # an int8 graph takes each activation's range from the whole run: one image per run keeps an image's
            # margin independent of its batch mates (and costs no speed on a CPU; see clipiqa.quantize)
            parts = [self.predict(batch[i:i + 1]) for i in range(len(batch))]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        try:
            margin, score = self.session.run(None, {self.input_name: batch})
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
            raise ScorerError(f"onnxruntime refused a batch of shape {list(batch.shape)} for {self.path} "
                              f"({_first_line(e)}); check that {Path(self.path).with_suffix('.json').name} is the "
                              "one exported with it, or export the scorer again") from e
        return margin.astype(np.float64), score.astype(np.float64)

    def score_paths(self, paths: list[str], batch_size: int = 16, load=None,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS, progress=None) -> list[dict]:
        """One row per path, in order; a file that cannot be read gets an error row and the batch goes on.
        ``load(path) -> RGB image`` defaults to clipiqa's loader with ``max_pixels``."""
        if load is None:
            def load(p):
                return load_image(p, max_pixels=max_pixels)
        rows = [{"path": p, "score": math.nan, "logit_margin": math.nan, "status": "ok", "error": "",
                 "model": self.model_name} for p in paths]
        for start in range(0, len(paths), batch_size):
            index, arrays = [], []
            for i in range(start, min(start + batch_size, len(paths))):
                try:
                    arrays.append(preprocess(load(paths[i]), self.spec))
                    index.append(i)
                except ImageLoadError as e:
                    rows[i].update(status="error", error=str(e))
                except Exception as e:  # noqa: BLE001 - a bad file is a row, never the end of the run
                    rows[i].update(status="error", error=f"cannot process {paths[i]}: {type(e).__name__}: {e}")
            if arrays:
                margins, scores = self.predict(np.stack(arrays))
                for i, m, s in zip(index, margins, scores):
                    if math.isfinite(m) and math.isfinite(s):
                        rows[i].update(score=float(s), logit_margin=float(m))
                    else:
                        rows[i].update(status="error", error=f"non-finite score (model produced NaN/inf) for "
                                                             f"{paths[i]}: logit_margin={m}, score={s}")
            if progress is not None:
                progress(min(start + batch_size, len(paths)), len(paths))
        return rows


# ------------------------------------------------------------------------------------------------ CSV
def csv_bytes(rows: list[dict], columns=COLUMNS) -> bytes:
    """The CSV of ``rows`` under ``clipiqa.csvio``'s rule: UTF-8, names that are not UTF-8 as their raw bytes
    (``surrogateescape``), minimal quoting, ``\\n`` rows (``\\r\\n`` when a value holds a ``\\r``), NaN empty."""
    def render(terminator: str) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=terminator)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if isinstance(row[c], float) and math.isnan(row[c]) else row[c] for c in columns])
        return buffer.getvalue()
    text = render("\n")
    if "\r" in text:
        text = render("\r\n")
    return text.encode("utf-8", "surrogateescape")


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it over ``path``: a reader sees
    the old file or the complete new one; after an error the temporary file is removed."""
    folder, name = os.path.split(os.path.abspath(path))
    short = os.fsdecode(os.fsencode(name)[:100])
    tmp = os.path.join(folder, f".{short}.{os.getpid()}.{secrets.token_hex(4)}.clipiqa-tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_out_file(path: str) -> None:
    """``--out`` must be writable before any image is read: its folder exists and is writable, it is no folder."""
    if os.path.isdir(path):
        raise ScorerError(f"--out {path} is a folder; give the name of a file to write")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ScorerError(f"--out {path}: the folder {parent} does not exist; create it first (nothing was scored)")
    if not os.access(parent, os.W_OK):
        raise ScorerError(f"--out {path}: no permission to write in {parent} (nothing was scored)")


def parse_max_pixels(text: str) -> int | None:
    """``--max-pixels``: a positive integer, optionally with ``M``/``MP`` (millions), or ``none``."""
    value = text.strip().lower()
    if value == "none":
        return None
    scale = 1_000_000 if value.endswith(("m", "mp")) else 1
    value = value.rstrip("pm") if scale > 1 else value
    try:
        number = float(value) * scale
    except ValueError:
        number = -1.0
    if not (number > 0 and number == int(number)):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; give a positive number of pixels (120000000 "
                                         "or 120M), or none for Pillow's own safety limit")
    return int(number)


# ------------------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score images with a clipiqa ONNX scorer (no torch needed).")
    parser.add_argument("onnx", help="the exported scorer (.onnx; its .json must lie beside it)")
    parser.add_argument("paths", nargs="+", help="image files, folders (searched recursively) and globs")
    parser.add_argument("--out", default=None, help="CSV file to write (default: stdout); its folder must exist")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-pixels", type=parse_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"refuse images whose decoding needs more pixels in memory (default "
                             f"{DEFAULT_MAX_PIXELS:,}; 120M; none = Pillow's safety limit), as clipiqa score")
    args = parser.parse_args(argv)
    name = Path(sys.argv[0]).name if argv is None else "score_onnx.py"
    try:
        if args.batch_size < 1:
            raise ScorerError(f"--batch-size {args.batch_size} is not allowed; use a positive integer")
        if args.out:
            check_out_file(args.out)
        scorer = OnnxScorer(args.onnx)
        scan = scan_images(args.paths)
        if scan.skipped:
            print(f"skipped {len(scan.skipped)} path(s) while listing images:", file=sys.stderr)
            for line in scan.describe():
                print(f"  {line}", file=sys.stderr)
        if not scan.images:
            raise ScorerError(f"no images found in {', '.join(args.paths)}")
        print(scorer.describe(), file=sys.stderr)
        if scorer.label:
            print(f"WARNING: this scorer was exported from a model with {scorer.label} weights.", file=sys.stderr)
        rows = scorer.score_paths(scan.images, args.batch_size, max_pixels=args.max_pixels)
        data = csv_bytes(rows)
        if args.out:
            try:
                write_atomic(args.out, data)
            except OSError as e:
                raise ScorerError(f"cannot write --out {args.out}: {e.strerror or e} (no CSV was written)") from e
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    except ScorerError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"scored {len(rows) - len(failed)} of {len(rows)} files" + (f"; {len(failed)} failed:" if failed else ""),
          file=sys.stderr)
    for row in failed:
        print(f"  {row['error']}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
