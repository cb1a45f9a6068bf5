"""Command line: ``clipiqa score``, ``clipiqa models`` and the other verbs.

Exit codes: 0 success, 1 usage or setup error (bad arguments, missing weights), 2 some inputs failed.
"""
from __future__ import annotations

import argparse
import sys
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


def add_model_args(p: argparse.ArgumentParser, default: str = "vitb16-openai") -> None:
    p.add_argument("--model", default=default, help=f"backbone preset (default {default}); see `clipiqa models`")
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


def random_init_warning(model) -> None:
    if model.random_init:
        print(f"WARNING: model {model.source.preset!r} has random-init weights: its scores are meaningless "
              "(use it for tests and smoke runs only).", file=sys.stderr)


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
    p.add_argument("--out", default=None, help="CSV to write (default: print CSV to stdout)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for image decoding")


@command("score", "score images: zero-shot CLIP, or an adapted model with --prompts CKPT")(_configure_score)
def cmd_score(args: argparse.Namespace) -> int:
    from .imageio import list_images
    from .scoring import score_files_sharded
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} is not allowed; use a positive integer")
    paths = list_images(args.paths)
    if not paths:
        raise UsageError(f"no images found in {', '.join(args.paths)}")
    from . import distributed
    distributed.init_distributed(device=args.device)  # under torchrun: shard the inputs by rank
    args.device = distributed.device_for_rank(args.device)
    model = load_model_from_args(args)
    main_rank = distributed.is_main()
    if main_rank:
        random_init_warning(model)
    table = score_files_sharded(model, paths, batch_size=args.batch_size, num_workers=args.workers,
                                progress=tqdm_progress("scoring") if main_rank else None)
    distributed.cleanup()
    if not main_rank:
        return EXIT_PARTIAL if (table["status"] != "ok").any() else EXIT_OK
    table["model"] = model.source.preset + (" [random init: meaningless]" if model.random_init else "")
    if args.out:
        table.to_csv(args.out, index=False)
    else:
        table.to_csv(sys.stdout, index=False)
    failed = int((table["status"] != "ok").sum())
    print(f"scored {len(table) - failed} of {len(table)} files" + (f"; {failed} failed:" if failed else ""),
          file=sys.stderr)
    for _, row in table[table["status"] != "ok"].iterrows():
        print(f"  {row['error']}", file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK


# ---------------------------------------------------------------------------------------------- models
@command("models", "list backbone presets and where their weights come from")(lambda p: None)
def cmd_models(args: argparse.Namespace) -> int:
    from .presets import PRESETS
    for preset in PRESETS.values():
        print(f"{preset.name:15s} {preset.arch:10s} {preset.description}\n{'':15s} weights: {preset.weights_source}")
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
    for module in ("clipiqa.commands",):
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
