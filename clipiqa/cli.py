"""Command line: ``clipiqa score``, ``clipiqa models`` and the other verbs (one module each in
:mod:`clipiqa.commands`, registered with ``@command``).

Exit codes: 0 success, 1 usage or setup error (bad arguments, missing weights), 2 some inputs failed.
"""
from __future__ import annotations

import argparse
import sys

from . import commands  # noqa: F401  (every command module registers itself on import)
from ._version import __version__
from .extras import MissingExtraError
from .commands.common import (COMMANDS, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UsageError, _Parser, add_model_args,
                              check_out_file, check_out_folder, command, load_model_from_args, random_init_warning)

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "UsageError", "command",
           "add_model_args", "check_out_file", "check_out_folder", "load_model_from_args", "random_init_warning"]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clipiqa", description="Few-shot blind image quality assessment with CLIP.")
    parser.add_argument("--version", action="version", version=f"clipiqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (configure, _, help_text) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, run, _ = COMMANDS[args.command]
    try:
        return run(args)
    except (UsageError, MissingExtraError) as e:
        print(f"clipiqa {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
