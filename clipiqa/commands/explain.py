"""``clipiqa explain``: attribution overlays for image files, plus optional demo-set diagnostics.

Writes ``OUT/<image-stem>_<method>.png`` (the model-input crop with the attribution overlay) and
``OUT/diagnostics.csv``: one row per image and method (``kind=image``: score, ``top10_share`` = share of the
absolute attribution mass in the 10 % strongest pixels, the overlay file), one error row per unreadable image,
and with ``--diagnostics`` the summary rows of the demo-set distortion focus (per method) and
content-vs-distortion (``kind``, ``metric``, ``value``); their detailed tables and figures go beside it.
Exit codes: 0 all images explained, 1 usage error, 2 some images failed.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import (EXIT_OK, EXIT_PARTIAL, UsageError, add_model_args, check_out_folder, command,
                         describe_skipped, load_model_from_args, random_init_warning, scan_inputs, tqdm_progress)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="image files and/or folders (searched recursively); not needed "
                                           "with --prompt-words alone")
    add_model_args(p)
    p.add_argument("--method", action="append", default=None,
                   help="attribution method, repeatable or comma-separated (default ig); one of "
                        "ig, occlusion, smoothgrad, gradcam, gradcam-conv1")
    p.add_argument("--out", default=None, help="output folder for the overlays and diagnostics.csv (needed with "
                                                "image paths; with --prompt-words also gets prompt_words.json)")
    p.add_argument("--prompt-words", action="store_true",
                   help="show what the learned text context of --prompts CKPT has become: the nearest vocabulary "
                        "tokens of each context vector, and the learned prompts' similarity to hand-written "
                        "quality phrases, before (as recorded in the card) and after adaptation")
    p.add_argument("--diagnostics", action="store_true",
                   help="also run the distortion-focus and content-vs-distortion diagnostics on the embedded demo set")
    p.add_argument("--demo-images", type=int, default=None,
                   help="with --diagnostics: use only the first N demo photos (default all)")
    p.add_argument("--demo-types", default=None,
                   help="with --diagnostics: comma-separated distortion types for content vs distortion "
                        "(default one per category)")
    p.add_argument("--zero-shot", action="store_true", help="explain the zero-shot CLIP (prompts switched off)")
    p.add_argument("--ig-steps", type=int, default=32, help="integration steps for ig (default 32)")
    p.add_argument("--baseline", default="black", choices=("black", "zero", "blur"),
                   help="ig baseline (default black)")


def parse_methods(values: list[str] | None) -> list[str]:
    """``["ig,occlusion", "gradcam"]`` -> ``["ig", "occlusion", "gradcam"]``; unknown names are a usage error."""
    from clipiqa.explain import ATTRIBUTION_METHODS
    methods = [m.strip() for v in (values or ["ig"]) for m in v.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ATTRIBUTION_METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none)'}; use one or more of "
                         f"{', '.join(ATTRIBUTION_METHODS)}")
    return list(dict.fromkeys(methods))


def parse_demo_types(value: str | None) -> list[str] | None:
    """``"gaussian_blur,jpeg"`` -> a list of distortion names (None = the demo default); unknown -> usage error."""
    if value is None:
        return None
    from clipiqa.data.distortions import DISTORTIONS
    types = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in types if t not in DISTORTIONS]
    if unknown or not types:
        raise UsageError(f"unknown distortion type(s) {', '.join(unknown) or '(none)'}; use "
                         f"{', '.join(DISTORTIONS)}")
    return types


def method_options(method: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.ig_steps < 1:
        raise UsageError(f"--ig-steps {args.ig_steps} is not allowed; use a positive integer")
    return {"n_steps": args.ig_steps, "baseline": args.baseline} if method == "ig" else {}


@command("explain", "attribution overlays and distortion-vs-content diagnostics for a quality model")(_configure)
def cmd_explain(args: argparse.Namespace) -> int:
    if args.prompt_words:
        show_prompt_words(args)
        if not args.paths:
            return EXIT_OK
    if not args.paths or args.out is None:
        raise UsageError("give image files or folders and --out FOLDER to explain scores (or --prompts CKPT "
                         "--prompt-words to read a checkpoint's learned prompts)")
    methods = parse_methods(args.method)
    options = {m: method_options(m, args) for m in methods}
    demo_types = parse_demo_types(args.demo_types)
    if args.demo_images is not None and args.demo_images < 1:
        raise UsageError(f"--demo-images {args.demo_images} is not allowed; use a positive integer")
    out = check_out_folder(args.out)  # before any work: its parent folder must exist, nothing is created yet
    scan = scan_inputs(args.paths)
    for line in describe_skipped(scan):
        print(line, file=sys.stderr)
    paths = scan.images  # its parent folder must exist: nothing is created before the check
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {out}: {e}") from e
    model = load_model_from_args(args)
    random_init_warning(model)
    from clipiqa.explain import files, frozen_clip  # heavy (torch, captum, matplotlib): see the module docstring
    if args.zero_shot:
        model = frozen_clip(model)
    label = files.model_label(model, args.zero_shot)
    rows = files.explain_images(model, paths, methods, options, out, progress=tqdm_progress("explaining"))
    if args.diagnostics:
        rows += files.demo_diagnostics(model, methods, options, out, args.demo_images, demo_types)
    table = files.write_diagnostics(rows, label, model, out)
    failed = table[(table["kind"] == "image") & (table["status"] != "ok")]
    n_failed = failed["path"].nunique()
    print(f"explained {len(paths) - n_failed} of {len(paths)} images with {', '.join(methods)} -> {out}"
          + (f"; {n_failed} failed:" if n_failed else ""), file=sys.stderr)
    for error in dict.fromkeys(failed["error"]):
        print(f"  {error}", file=sys.stderr)
    return EXIT_PARTIAL if n_failed else EXIT_OK


def show_prompt_words(args: argparse.Namespace) -> None:
    """Print (and with --out write ``prompt_words.json``) what the checkpoint's learned text context became."""
    import json
    from clipiqa.checkpoint import read_checkpoint
    from clipiqa.explain.prompt_words import PromptWords, format_prompt_words, prompt_words
    if not args.prompts:
        raise UsageError("--prompt-words describes a checkpoint's learned text context: give --prompts CKPT")
    model = load_model_from_args(args)
    random_init_warning(model)
    after = prompt_words(model)
    recorded = read_checkpoint(args.prompts).card.get("prompt_words") or {}
    before = PromptWords.from_dict(recorded["before"]) if "before" in recorded else None
    print(format_prompt_words(after, before))
    if before is None:
        print("(the card records no 'before': it was made by a clipiqa that did not record one, or by pretrain)",
              file=sys.stderr)
    if args.out is not None:
        out = check_out_folder(args.out)
        out.mkdir(exist_ok=True)
        (out / "prompt_words.json").write_text(json.dumps(
            {"after": after.to_dict(), "before": before.to_dict() if before else None}, indent=2))
