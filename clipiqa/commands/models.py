"""``clipiqa models``: the backbone presets, where their weights come from, and how to name any other model."""
from __future__ import annotations

import argparse

from .common import EXIT_OK, command


def _configure_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="also list every open_clip ARCH:TAG that clipiqa can wrap")


@command("models", "list backbone presets, where their weights come from, and how to name any other "
                   "model")(_configure_models)
def cmd_models(args: argparse.Namespace) -> int:
    from ..presets import PRESETS
    from ..zoo import how_to_name_models, supported_archs, supported_tags
    for preset in PRESETS.values():
        label = f" [{preset.label}]" if preset.label else ""
        only = " [zero-shot only: frozen, no adaptation]" if preset.frozen_only else ""
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
