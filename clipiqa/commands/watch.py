"""``clipiqa watch FOLDER --session S``: the line monitor (see :mod:`clipiqa.pilot.watch`).

Scores the images in FOLDER that the session's line log has not seen (by the SHA-256 of their bytes), logs each
with its decision (with ``--gate``) and the model version, tests drift, and queues label requests. ``--once`` makes
one pass; without it the folder is polled every ``--interval`` seconds until Ctrl-C (every image is committed as
it is scored, so a restart resumes). ``--json`` prints each pass's summary as one JSON line.

The model is the session's active model (its checkpoint), unless ``--model``/``--prompts`` name another.
Exit codes: 0 every file scored, 1 usage error, 2 some files failed (they are logged as error rows).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import EXIT_OK, EXIT_PARTIAL, UsageError, add_model_args, command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="the folder the line writes images into (searched recursively)")
    p.add_argument("--session", required=True, help="the labelling session folder whose database keeps the line log")
    p.add_argument("--gate", default=None, help="a gate.json (clipiqa gate fit) to decide pass / reject")
    p.add_argument("--once", action="store_true", help="one pass, then exit (default: poll until Ctrl-C)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between passes (default 10)")
    p.add_argument("--json", action="store_true", help="print each pass's summary as a JSON line")
    p.add_argument("--reference", type=int, default=50, help="images in the drift reference window (default 50)")
    p.add_argument("--window", type=int, default=50, help="images in the recent drift window (default 50)")
    p.add_argument("--alpha", type=float, default=0.01, help="drift test significance level (default 0.01)")
    add_model_args(p)


def session_model_args(args: argparse.Namespace, session: Path) -> None:
    """Fill --model/--weights/--prompts from the session's settings (its active checkpoint) when not given."""
    if args.model or args.prompts:
        return
    settings_file = session / "settings.json"
    try:
        settings = json.loads(settings_file.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{settings_file} cannot be read ({e}); give --model/--prompts, or the right --session") \
            from e
    args.model = settings.get("model_name")
    args.weights = args.weights or settings.get("weights")
    if settings.get("checkpoint"):
        args.prompts = str(session / "checkpoints" / settings["checkpoint"])


@command("watch", "line monitor: score new images in a folder once each, log decisions, test drift")(_configure)
def cmd_watch(args: argparse.Namespace) -> int:
    from ..imageio import list_images
    from ..pilot.gate import Gate, model_identity
    from ..pilot.watch import LineLog, model_version, watch_once
    from .common import load_model_from_args, random_init_warning
    session = Path(args.session)
    folder = Path(args.folder)
    if not session.is_dir():
        raise UsageError(f"session folder {session} does not exist; create it by labelling (notebook 02) first")
    if not folder.is_dir():
        raise UsageError(f"image folder {folder} does not exist or is not a folder")
    if args.interval <= 0 or min(args.reference, args.window) < 1 or not 0 < args.alpha < 1:
        raise UsageError("--interval must be > 0, --reference and --window >= 1, --alpha in (0, 1)")
    session_model_args(args, session)
    model = load_model_from_args(args)
    random_init_warning(model)
    identity = model_identity(model, args.prompts)
    version = model_version(identity)
    gate = None
    if args.gate:
        try:
            gate = Gate.load(args.gate)
            gate.check_model(identity, args.gate)
        except (OSError, ValueError) as e:  # a mismatched model is a GateMismatchError (a ValueError)
            raise UsageError(str(e)) from e
    from ..labelstore import DB_NAME
    try:
        log = LineLog(session / DB_NAME)
    except OSError as e:
        raise UsageError(str(e)) from e
    failed_any = False
    try:
        while True:
            result = watch_once(model, list_images([str(folder)]), log, version, gate=gate,
                                reference=args.reference, window=args.window, alpha=args.alpha)
            failed_any |= result.failed > 0
            summary = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "model_version": version, **result.to_dict()}
            if args.json:
                print(json.dumps(summary), flush=True)
            else:
                drift = result.drift.reason if result.drift else ""
                print(f"scored {result.scored} new ({result.failed} failed, {result.known} already logged); "
                      f"{result.decisions or ''} {drift}".rstrip(), flush=True)
            if args.once:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:  # every scored image is already committed: a restart resumes
        print("stopped; restart the same command to resume", file=sys.stderr)
    finally:
        log.close()
    return EXIT_PARTIAL if failed_any else EXIT_OK
