"""``clipiqa gate``: fit a site threshold on the logit margin from labels and one model's scores, or show one.

``clipiqa gate fit --labels labels.csv --scores scores.csv --prompts CKPT --pass-at 3 --cost-false-accept 5
--out gate.json`` reads a session's ``labels.csv`` (``path, mos``; ACR 1-5) and the ``clipiqa score`` output of the
same images by the model of ``--prompts`` (or ``--model`` for a zero-shot gate), and writes ``gate.json`` with the
threshold, its error rates with CIs, the ROC curve and the model version it holds for. ``clipiqa gate show
gate.json`` prints it. ``clipiqa score ... --gate gate.json`` then adds a ``decision`` column.
"""
from __future__ import annotations

import argparse
import os
import sys

from .common import EXIT_OK, UsageError, add_model_args, check_out_file, command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("fit", "show"), help="fit a gate, or show a gate file")
    p.add_argument("gate", nargs="?", help="with show: the gate.json to print")
    p.add_argument("--labels", help="labels CSV with path and mos columns (a session's labels.csv)")
    p.add_argument("--scores", help="clipiqa score output for the same images (path, logit_margin, status)")
    p.add_argument("--pass-at", type=float, default=3.0,
                   help="MOS at or above which an image is acceptable (default 3 = 'fair' on ACR 1-5)")
    p.add_argument("--cost-false-accept", type=float, default=1.0,
                   help="cost of passing an unacceptable image (default 1; any unit, e.g. minutes or money)")
    p.add_argument("--cost-false-reject", type=float, default=1.0,
                   help="cost of stopping an acceptable image (default 1, same unit)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--out", help="with fit: the gate file to write (e.g. gate.json)")
    add_model_args(p)


def _keyed(frame, base: str):
    """``frame`` with ``path`` made absolute (relative paths taken from ``base``), so files written from different
    folders join."""
    frame = frame.copy()
    frame["path"] = [os.path.realpath(p if os.path.isabs(p) else os.path.join(base, p)) for p in frame["path"]]
    return frame


@command("gate", "fit a site threshold (pass/reject) on a model's scores from labels and error costs, or show "
                 "one")(_configure)
def cmd_gate(args: argparse.Namespace) -> int:
    from ..pilot.gate import Gate, describe_gate
    if args.action == "show":
        if not args.gate:
            raise UsageError("give the gate file to show: clipiqa gate show gate.json")
        try:
            print(describe_gate(Gate.load(args.gate)))
        except (OSError, ValueError) as e:
            raise UsageError(str(e)) from e
        return EXIT_OK
    missing = [f for f, v in (("--labels", args.labels), ("--scores", args.scores), ("--out", args.out)) if not v]
    if missing:
        raise UsageError(f"gate fit needs {', '.join(missing)}")
    if not (args.prompts or args.model):
        raise UsageError("name the model that made --scores: --prompts CKPT (an adapted model) or --model NAME "
                         "(zero-shot); the gate holds for that model version only")
    out = check_out_file(args.out)
    return _fit(args, out)


def _fit(args: argparse.Namespace, out) -> int:
    from ..csvio import read_csv
    from ..pilot.gate import describe_gate, fit_gate, model_identity
    from .common import load_model_from_args
    tables = {}
    for flag, path in (("--labels", args.labels), ("--scores", args.scores)):
        try:
            tables[flag] = read_csv(path)
        except (OSError, ValueError) as e:
            raise UsageError(f"{flag} {path} cannot be read: {e}") from e
    labels = _keyed(tables["--labels"], os.path.dirname(os.path.abspath(args.labels)))
    scores = _keyed(tables["--scores"], os.getcwd())
    if not set(labels["path"]) & set(scores["path"]):
        raise UsageError(f"no image of {args.labels} has a row in {args.scores} (paths compared as absolute paths, "
                         f"e.g. {labels['path'].iloc[0]!r} vs {scores['path'].iloc[0]!r}); score the labelled "
                         "images with clipiqa score and give that output")
    model = load_model_from_args(args)
    try:
        gate = fit_gate(labels, scores, pass_at=args.pass_at, cost_false_accept=args.cost_false_accept,
                        cost_false_reject=args.cost_false_reject, n_boot=args.bootstrap,
                        model=model_identity(model, args.prompts))
    except ValueError as e:
        raise UsageError(str(e)) from e
    gate.save(out)
    print(describe_gate(gate))
    if model.source.label:
        print(f"NOTE: fitted on a {model.source.label} model: this threshold says nothing about real CLIP",
              file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK
