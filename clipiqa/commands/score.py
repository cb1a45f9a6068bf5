"""``clipiqa score``: quality scores of image files as CSV (torch, or an exported ONNX scorer).

Exit codes: 0 all images scored, 1 usage error, 2 some images failed (an error row each).
"""
from __future__ import annotations

import argparse
import sys

from .common import (EXIT_OK, EXIT_PARTIAL, UsageError, add_max_pixels_arg, add_model_args, check_out_file, command,
                     describe_skipped, load_model_from_args, random_init_warning, scan_inputs, tqdm_progress,
                     write_table)


def _configure_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    add_model_args(p)
    p.add_argument("--out", default=None, help="CSV to write (default: print CSV to stdout); its folder must exist. "
                                               "File names are written so that they read back exactly (UTF-8; "
                                               "names that are not UTF-8 as their raw bytes)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for image decoding")
    p.add_argument("--amp", choices=tuple(AMP_FLAGS), default="default",
                   help="precision of the image encoder (the quality head is always fp32): default = bf16 on CUDA, "
                        "fp32 on CPU; auto = bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX, ~1.8x "
                        "faster; scores keep SRCC >= 0.999 against fp32); bf16; fp32")
    p.add_argument("--onnx", default=None, metavar="SCORER.ONNX",
                   help="score with an exported scorer (`clipiqa export`) under onnxruntime instead of torch; "
                        "its preprocessing comes from the .json beside it (no --model/--weights/--prompts)")
    p.add_argument("--gate", default=None, metavar="GATE.JSON",
                   help="add a decision column (pass / reject) with a site threshold from `clipiqa gate fit`; "
                        "refused when the gate was fitted for another model version; rows that failed to score "
                        "get no decision")
    add_max_pixels_arg(p)


AMP_FLAGS = {"default": None, "auto": "auto", "bf16": True, "fp32": False}


@command("score", "score images: zero-shot CLIP, or an adapted model with --prompts CKPT")(_configure_score)
def cmd_score(args: argparse.Namespace) -> int:
    from ..scoring import score_files_sharded
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} is not allowed; use a positive integer")
    if args.out:
        check_out_file(args.out)
    if args.onnx:
        return _score_onnx(args)
    scan = scan_inputs(args.paths)
    paths = scan.images
    amp = AMP_FLAGS[args.amp]
    from .. import distributed
    distributed.init_distributed(device=args.device)  # under torchrun: shard the inputs by rank
    args.device = distributed.device_for_rank(args.device)
    main_rank = distributed.is_main()
    if main_rank:
        for line in describe_skipped(scan):
            print(line, file=sys.stderr)
    model = load_model_from_args(args)
    if main_rank:
        random_init_warning(model, amp)
    from ..pilot.gate import model_identity
    gate = _load_gate(args.gate, model_identity(model, args.prompts))  # before any work
    if getattr(model, "native_resolution", False) and args.batch_size != 1:
        args.batch_size = 1  # each image keeps its own size: batches cannot stack different sizes
        if main_rank:
            print(f"note: {model.source.preset} scores every image at its own resolution; scoring one image at a "
                  "time (--batch-size 1)", file=sys.stderr)
    table = score_files_sharded(model, paths, batch_size=args.batch_size, num_workers=args.workers, amp=amp,
                                max_pixels=args.max_pixels, progress=tqdm_progress("scoring") if main_rank else None)
    distributed.cleanup()
    if not main_rank:
        return EXIT_PARTIAL if (table["status"] != "ok").any() else EXIT_OK
    table["model"] = model.source.preset + (f" [{model.source.label}]" if model.source.label else "")
    return _report_table(_decide(table, gate), args.out)


def _load_gate(path: str | None, identity: dict):
    """The gate of ``--gate``, checked against the model that will score (None without ``--gate``)."""
    if path is None:
        return None
    from ..pilot.gate import Gate
    try:
        gate = Gate.load(path)
        gate.check_model(identity, path)
    except (OSError, ValueError) as e:  # a GateMismatchError is a ValueError
        raise UsageError(str(e)) from e
    return gate


def _decide(table, gate):
    """Add ``decision`` (pass / reject; empty for rows that failed to score) when a gate is given."""
    if gate is not None:
        ok = table["status"] == "ok"
        table["decision"] = [d if d is not None else "" for d in gate.decide(table["logit_margin"].where(ok))]
    return table


def _report_table(table, out: str | None) -> int:
    write_table(table, out)
    failed = int((table["status"] != "ok").sum())
    print(f"scored {len(table) - failed} of {len(table)} files" + (f"; {failed} failed:" if failed else ""),
          file=sys.stderr)
    for _, row in table[table["status"] != "ok"].iterrows():
        print(f"  {row['error']}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


def _score_onnx(args: argparse.Namespace) -> int:
    """``clipiqa score --onnx``: the scorer verified against its JSON before anything else, then clipiqa's image
    loader, the runner's preprocessing and onnxruntime."""
    import pandas as pd

    from ..extras import require
    from ..onnx_runner import OnnxScorer, ScorerError
    given = [flag for flag, value in (("--model", args.model), ("--weights", args.weights),
                                      ("--prompts", args.prompts)) if value]
    if given:
        raise UsageError(f"--onnx scores with the exported scorer alone; drop {', '.join(given)} (the model, "
                         "weights and checkpoint are inside the .onnx file)")
    require("onnxruntime", "deploy", "clipiqa score --onnx")
    try:
        scorer = OnnxScorer(args.onnx)
    except ScorerError as e:
        raise UsageError(f"--onnx {args.onnx}: {e}") from e
    meta = scorer.meta
    gate = _load_gate(args.gate, {"model": meta.get("model"), "fingerprint": (meta.get("backbone") or {}).get(
        "fingerprint"), "checkpoint_sha256": (meta.get("checkpoint") or {}).get("sha256")})
    scan = scan_inputs(args.paths)
    for line in describe_skipped(scan):
        print(line, file=sys.stderr)
    print(scorer.describe(), file=sys.stderr)
    if scorer.label:
        print(f"WARNING: this scorer was exported from a model with {scorer.label} weights.", file=sys.stderr)
    try:
        rows = scorer.score_paths(scan.images, args.batch_size, max_pixels=args.max_pixels,
                                  progress=tqdm_progress("scoring"))
    except ScorerError as e:
        raise UsageError(str(e)) from e
    return _report_table(_decide(pd.DataFrame(rows, columns=list(rows[0])), gate), args.out)
