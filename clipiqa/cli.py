"""Command line: ``clipiqa score``, ``clipiqa models`` and the other verbs.

Exit codes: 0 success, 1 usage or setup error (bad arguments, missing weights), 2 some inputs failed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {}


class UsageError(Exception):
    """A problem with the command line or its inputs that the user can fix; exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits with 2 by default; 2 means "some inputs failed" here
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def command(name: str, help: str):
    """Register ``configure(parser)`` / ``run(args) -> int`` pairs as a subcommand."""
    def wrap(configure):
        def register(run):
            COMMANDS[name] = (configure, run, help)
            return run
        return register
    return wrap


def add_model_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--model", default=default,
                   help="backbone: a preset, ARCH:TAG (ViT-L-14:openai), hf-hub:ORG/REPO or an open_clip folder "
                        f"(default {default or 'the model of the --prompts checkpoint, else vitb16-openai'}); "
                        "see `clipiqa models`")
    p.add_argument("--weights", default=None, help="local weights file or open_clip folder (never uses the network)")
    p.add_argument("--prompts", default=None, help="a clipiqa checkpoint (folder or .safetensors) to apply")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")


def load_model_from_args(args: argparse.Namespace):
    from .model import load_model
    from .weights import WeightsUnavailableError
    try:
        return load_model(args.model, weights=args.weights, device=args.device, prompts=args.prompts)
    except (WeightsUnavailableError, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e


def random_init_warning(model, amp: bool | str | None = None) -> None:
    """The weights line on stderr (:func:`clipiqa.weights.weights_line`: weights file or hub repository,
    fingerprint, device and precision with ``amp``), then a warning when the backbone is random (meaningless
    scores) or the lesson toy (real but a toy)."""
    from .weights import weights_line
    print(weights_line(model, amp), file=sys.stderr)
    if model.random_init:
        print(f"WARNING: model {model.source.preset!r} has random-init weights: its scores are meaningless "
              "(use it for tests and smoke runs only).", file=sys.stderr)
    elif getattr(model.source, "toy", False):
        print(f"NOTE: model {model.source.preset!r} is a {model.source.label}: its scores show that the "
              "machinery learns, never how real CLIP behaves.", file=sys.stderr)


def parse_max_pixels(text: str) -> int | None:
    """``--max-pixels``: a positive integer, optionally with an ``M`` / ``MP`` suffix (``120M``), or ``none``."""
    value = text.strip().lower()
    if value == "none":
        return None
    scale = 1
    for suffix in ("mp", "m"):
        if value.endswith(suffix):
            value, scale = value[: -len(suffix)], 1_000_000
            break
    try:
        number = int(value) if scale == 1 else float(value)
    except ValueError:
        number = None
    if number is None or number <= 0 or number * scale != int(number * scale):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed; give a positive number of pixels (120000000 or 120M), or none for Pillow's "
            "own safety limit")
    return int(number * scale)


def add_max_pixels_arg(p: argparse.ArgumentParser) -> None:
    from .imageio import DEFAULT_MAX_PIXELS
    p.add_argument("--max-pixels", type=parse_max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse images whose decoding needs more pixels in memory (default {DEFAULT_MAX_PIXELS:,}; "
                        "120M = 120 million; none = Pillow's safety limit, about 179M, which no value can raise). "
                        "Baseline JPEGs decode at reduced scale, so a 108-MP photo fits the default; progressive "
                        "JPEGs and other formats count their full size")


def check_out_file(path: str, flag: str = "--out") -> Path:
    """An output file: its folder must exist (nothing is created before the work) and it must not be a folder."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give the name of a file to write")
    _check_parent(out, flag)
    return out


def check_out_folder(path: str, flag: str = "--out") -> Path:
    """An output folder: it may exist, or be created inside a folder that exists (never a chain of new folders)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {path} exists and is not a folder")
    if not out.exists():
        _check_parent(out, flag)
    elif not os.access(out, os.W_OK):
        raise UsageError(f"{flag} {path}: no permission to write in this folder")
    return out


def check_out_checkpoint(path: str, force: bool, flag: str = "--out",
                         files: tuple[str, ...] = ("adapter.safetensors", "card.json", "history.csv")) -> Path:
    """A checkpoint to write (a folder, or ``NAME.safetensors`` beside ``NAME.json``): its folder must exist, and
    an existing checkpoint there is never overwritten unless ``force``."""
    out = Path(path)
    if out.suffix in (".safetensors", ".json"):
        check_out_file(path, flag)
        existing = [p for p in (out.with_suffix(".safetensors"), out.with_suffix(".json"),
                                out.with_suffix(".history.csv")) if p.exists()]
    else:
        check_out_folder(path, flag)
        existing = [out / name for name in files if (out / name).exists()] if out.is_dir() else []
    if existing and not force:
        raise UsageError(f"{flag} {path} already holds a checkpoint ({', '.join(p.name for p in existing)}); "
                         "give another --out, or add --force to overwrite it")
    return out


def _check_parent(out: Path, flag: str) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {out}: the folder {parent} does not exist; create it first (nothing was done)")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {out}: no permission to write in {parent}")


def scan_inputs(paths: list[str]):
    """Expand files / folders / globs (:func:`clipiqa.imageio.scan_images`); no images at all is a usage error."""
    from .imageio import scan_images
    result = scan_images(paths)
    if not result.images:
        for line in describe_skipped(result):
            print(line, file=sys.stderr)
        raise UsageError(f"no images found in {', '.join(paths)}")
    return result


def describe_skipped(result) -> list[str]:
    """Lines for stderr naming what a folder scan left out, and why (empty when nothing was)."""
    if not result.skipped:
        return []
    return [f"skipped {len(result.skipped)} path(s) while listing images:"] + [f"  {line}" for line in
                                                                               result.describe()]


def write_table(table, out: str | None) -> None:
    """A result table as CSV (clipiqa.csvio: any file name round-trips; atomic), to ``out`` or stdout."""
    from .csvio import write_csv
    try:
        write_csv(table, out if out else sys.stdout)
    except OSError as e:
        raise UsageError(f"cannot write {out or 'stdout'}: {e}") from e


def tqdm_progress(desc: str, unit: str = "img"):
    from tqdm.auto import tqdm
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update


# ---------------------------------------------------------------------------------------------- score
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
    add_max_pixels_arg(p)


AMP_FLAGS = {"default": None, "auto": "auto", "bf16": True, "fp32": False}


@command("score", "score images: zero-shot CLIP, or an adapted model with --prompts CKPT")(_configure_score)
def cmd_score(args: argparse.Namespace) -> int:
    from .scoring import score_files_sharded
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} is not allowed; use a positive integer")
    if args.out:
        check_out_file(args.out)
    scan = scan_inputs(args.paths)
    paths = scan.images
    if args.onnx:
        return _score_onnx(args, scan)
    amp = AMP_FLAGS[args.amp]
    from . import distributed
    distributed.init_distributed(device=args.device)  # under torchrun: shard the inputs by rank
    args.device = distributed.device_for_rank(args.device)
    main_rank = distributed.is_main()
    if main_rank:
        for line in describe_skipped(scan):
            print(line, file=sys.stderr)
    model = load_model_from_args(args)
    if main_rank:
        random_init_warning(model, amp)
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
    return _report_table(table, args.out)


def _report_table(table, out: str | None) -> int:
    write_table(table, out)
    failed = int((table["status"] != "ok").sum())
    print(f"scored {len(table) - failed} of {len(table)} files" + (f"; {failed} failed:" if failed else ""),
          file=sys.stderr)
    for _, row in table[table["status"] != "ok"].iterrows():
        print(f"  {row['error']}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


def _score_onnx(args: argparse.Namespace, scan) -> int:
    """``clipiqa score --onnx``: clipiqa's image loader, the runner's preprocessing, onnxruntime."""
    import pandas as pd

    from .imageio import load_image
    from .onnx_runner import OnnxScorer
    given = [flag for flag, value in (("--model", args.model), ("--weights", args.weights),
                                      ("--prompts", args.prompts)) if value]
    if given:
        raise UsageError(f"--onnx scores with the exported scorer alone; drop {', '.join(given)} (the model, "
                         "weights and checkpoint are inside the .onnx file)")
    try:
        scorer = OnnxScorer(args.onnx)
    except (ValueError, OSError, ImportError) as e:
        raise UsageError(f"--onnx {args.onnx}: {e}") from e
    except Exception as e:  # onnxruntime's own errors (a damaged or foreign file)
        raise UsageError(f"--onnx {args.onnx} cannot be loaded by onnxruntime: {e}") from e
    for line in describe_skipped(scan):
        print(line, file=sys.stderr)
    print(scorer.describe(), file=sys.stderr)
    if scorer.label:
        print(f"WARNING: this scorer was exported from a model with {scorer.label} weights.", file=sys.stderr)
    rows = scorer.score_paths(scan.images, args.batch_size, load=lambda p: load_image(p, max_pixels=args.max_pixels),
                              progress=tqdm_progress("scoring"))
    return _report_table(pd.DataFrame(rows), args.out)


# ---------------------------------------------------------------------------------------------- models
def _configure_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="also list every open_clip ARCH:TAG that clipiqa can wrap")


@command("models", "list backbone presets, where their weights come from, and how to name any other "
                   "model")(_configure_models)
def cmd_models(args: argparse.Namespace) -> int:
    from .presets import PRESETS
    from .zoo import how_to_name_models, supported_archs, supported_tags
    for preset in PRESETS.values():
        label = f" [{preset.label}]" if preset.label else ""
        only = " [zero-shot only]" if preset.zero_shot_only else ""
        print(f"{preset.name:15s} {preset.arch:10s} {preset.description}{label}{only}\n{'':15s} weights: "
              f"{preset.weights_source}")
    print()
    print(how_to_name_models())
    if getattr(args, "all", False):
        print(f"\nSupported open_clip architectures ({len(supported_archs())}): {', '.join(supported_archs())}")
        print(f"Supported ARCH:TAG ({len(supported_tags())}):")
        for arch, tag in supported_tags():
            print(f"  {arch}:{tag}")
    else:
        print(f"{len(supported_tags())} ARCH:TAG pairs are supported: `clipiqa models --all` lists them.")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    _import_command_modules()
    parser = _Parser(prog="clipiqa", description="Few-shot blind image quality assessment with CLIP.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"clipiqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (configure, _, help_text) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _import_command_modules() -> None:
    """Commands defined beside their subsystems register themselves on import."""
    import importlib
    for module in ("clipiqa.commands", "clipiqa.commands.export"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, run, _ = COMMANDS[args.command]
    try:
        return run(args)
    except UsageError as e:
        print(f"clipiqa {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
