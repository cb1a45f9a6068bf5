"""``python -m clipiqa.lesson build [--out FILE]`` trains and writes the lesson weights (by default over the
committed ``clipiqa/presets/lesson.safetensors``); ``python -m clipiqa.lesson hash`` prints the config hash."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from ..presets import get_preset
from .recipe import LessonRecipe, config_hash
from .storage import build_weights, committed_path, tqdm_progress


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipiqa.lesson", description="Build the lesson model's weights.")
    p.add_argument("command", choices=["build", "hash"])
    p.add_argument("--out", default=None, help=f"file to write (default: the committed {committed_path()})")
    args = p.parse_args(argv)
    preset = get_preset("lesson")
    recipe = LessonRecipe.from_dict(preset.lesson)
    if args.command == "hash":
        print(config_hash(preset.model_cfg, recipe))
        return 0
    out = Path(args.out) if args.out else committed_path()
    t0, c0 = time.perf_counter(), time.process_time()
    build_weights(out, preset.model_cfg, recipe, preset.arch, tqdm_progress("training the lesson model"))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
