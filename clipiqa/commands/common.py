"""What every ``clipiqa`` subcommand shares: exit codes, the command registry (``@command``), the usage error, and the
argument helpers (model flags, output checks, input scans, progress bars).

Command modules are imported to build the parser on every ``clipiqa`` call, ``--help`` included, so they import only
the standard library at their top and load their subsystem (torch, pandas, the model code) inside the function
that runs the command: measured, importing the model code costs 2-6 s against 0.25 s for ``clipiqa --help``
(``benchmarks/run.py --only cli``). That is why the imports inside functions in this folder are there.
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
    from ..factory import load_model
    from ..weights import WeightsUnavailableError
    try:
        return load_model(args.model, weights=args.weights, device=args.device, prompts=args.prompts)
    except (WeightsUnavailableError, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e


def random_init_warning(model, amp: bool | str | None = None) -> None:
    """The weights line on stderr (:func:`clipiqa.weights.weights_line`: weights file or hub repository,
    fingerprint, device and precision with ``amp``), then a warning when the backbone is random (meaningless
    scores) or the lesson toy (real but a toy)."""
    from ..weights import weights_line
    print(weights_line(model, amp), file=sys.stderr)
    caveat = model.source.caveat
    if caveat:
        kind = "WARNING" if model.random_init else "NOTE"
        print(f"{kind}: model {model.source.preset!r}: {caveat.text} (use it for tests and smoke runs only).",
              file=sys.stderr)


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
    from ..imageio import DEFAULT_MAX_PIXELS
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
    from ..imageio import scan_images
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
    from ..csvio import write_csv
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
