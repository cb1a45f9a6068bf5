"""``clipiqa export``: an adapted (or zero-shot) scorer as one ONNX graph for onnxruntime (:mod:`clipiqa.export`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..extras import require
from .common import EXIT_OK, UsageError, add_model_args, check_out_file, command, load_model_from_args, \
    random_init_warning


def _configure(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--out", required=True, metavar="SCORER.ONNX",
                   help="ONNX file to write; SCORER.json (preprocessing, fingerprints, the SHA-256s every scorer "
                        "verifies) and score_onnx.py with clipiqa_imageio/ (a scorer that needs only onnxruntime, "
                        "numpy and Pillow) are written beside it")
    p.add_argument("--force", action="store_true", help="overwrite an existing SCORER.onnx")
    p.add_argument("--int8", action="store_true",
                   help="quantize the matrix products to int8 (onnxruntime dynamic quantization: faster on a CPU); "
                        "refused when int8 margins rank the demo check images with SRCC below 0.99 against fp32")


@command("export", "export a scorer (--prompts CKPT: the adapted model; without: zero-shot CLIP) to ONNX for "
                   "onnxruntime")(_configure)
def cmd_export(args: argparse.Namespace) -> int:
    require("onnxruntime", "deploy", "clipiqa export")  # before a model is loaded: the check runs the graph
    if args.int8:
        require("onnx", "deploy", "clipiqa export --int8")
    from clipiqa.export import export_onnx
    out = check_out_file(args.out)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {args.out}: the file name must end in .onnx")
    if out.exists() and not args.force:
        raise UsageError(f"--out {args.out} already exists; give another name, or add --force to overwrite it")
    if args.device == "auto":
        args.device = "cpu"  # the graph is the same wherever it is traced; the CPU needs no GPU memory
    model = load_model_from_args(args)
    random_init_warning(model, amp=False)
    card = None
    if args.prompts:
        from clipiqa.checkpoint import read_checkpoint
        card = read_checkpoint(args.prompts).card
    try:
        if args.int8:
            from clipiqa.quantize import QuantizationError, export_int8
            try:
                path = export_int8(model, out, card=card, checkpoint=args.prompts)
            except QuantizationError as e:
                raise UsageError(str(e)) from e
        else:
            path = export_onnx(model, out, card=card, checkpoint=args.prompts)
    except ValueError as e:
        raise UsageError(str(e)) from e
    if args.int8:
        check = json.loads(path.with_suffix(".json").read_text())["quantization"]["check"]
        print(f"int8: SRCC {check['srcc_vs_fp32']:.4f} against fp32 on {check['images']} demo check images "
              f"(largest margin difference {check['max_abs_margin_diff']:.3g})", file=sys.stderr)
    kind = f"the adapted model of {args.prompts}" if args.prompts else "the zero-shot model"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB), {Path(path).with_suffix('.json').name} and "
          f"score_onnx.py (with clipiqa_imageio/): {kind}; run `clipiqa score --onnx {path} PHOTOS` or, without "
          f"clipiqa, "
          f"`python {Path(path).with_name('score_onnx.py')} {path} PHOTOS`", file=sys.stderr)
    return EXIT_OK
