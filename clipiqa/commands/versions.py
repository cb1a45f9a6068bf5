"""``clipiqa versions | promote | rollback | cycle SESSION``: a line's model versions and their audit trail.

``versions S`` lists every version (lineage, labels used, audit-set metrics, status) and with ``--events`` the
audit trail; ``--label-history F`` writes every rating and undo to a CSV. ``promote S NAME`` activates a version
(a rejected one only with ``--override REASON``, which is recorded); ``rollback S`` re-activates the previous
one; ``cycle S`` adapts a candidate on the new labels and promotes it only if it is not worse on the audit set.
See :mod:`clipiqa.pilot.versions`.
"""
from __future__ import annotations

import argparse
import json

from .common import EXIT_OK, UsageError, command


def _session_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="the session folder")


def _open(folder: str):
    from ..session import Session
    try:
        return Session.open(folder)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from e


def _configure_versions(p: argparse.ArgumentParser) -> None:
    _session_arg(p)
    p.add_argument("--events", action="store_true", help="also print the audit trail (every promotion, rollback)")
    p.add_argument("--label-history", default=None, help="write every rating and undo (rater, time) to this CSV")


@command("versions", "list a session's model versions with lineage and audit metrics")(_configure_versions)
def cmd_versions(args: argparse.Namespace) -> int:
    import pandas as pd
    from ..csvio import write_csv
    from ..pilot.versions import VersionLog, label_history
    session = _open(args.session)
    log = VersionLog(session.database_path)
    try:
        table = log.table()
        with pd.option_context("display.width", 160, "display.max_columns", 12, "display.max_colwidth", 40):
            shown = table[["name", "status", "parent", "n_labels", "created", "who"]].copy()
            shown["audit_srcc"] = [json.loads(a)["candidate"]["srcc"] if isinstance(a, str) else None
                                   for a in table["audit"]]
            print(shown.to_string(index=False) if len(shown) else "no versions yet (clipiqa cycle makes one)")
            print(f"active: {session.active_checkpoint or 'zero-shot'}")
            if args.events:
                print(log.events().to_string(index=False))
        if args.label_history:
            from .common import check_out_file
            write_csv(label_history(session), check_out_file(args.label_history, "--label-history"))
    finally:
        log.close()
    return EXIT_OK


def _configure_promote(p: argparse.ArgumentParser) -> None:
    _session_arg(p)
    p.add_argument("version", help="the version (checkpoint name) to activate; 'zero-shot' for none")
    p.add_argument("--override", default=None, help="a reason, needed to promote a version the cycle rejected")


@command("promote", "activate a model version of a session (recorded in its audit trail)")(_configure_promote)
def cmd_promote(args: argparse.Namespace) -> int:
    from ..pilot.versions import VersionLog, promote
    session = _open(args.session)
    log = VersionLog(session.database_path)
    try:
        name = None if args.version == "zero-shot" else args.version
        status = log.table().set_index("name")["status"].get(name) if name else None
        if status == "rejected" and not args.override:
            raise UsageError(f"version {name} was rejected by the audit comparison; give --override REASON to "
                             "promote it anyway (the reason is recorded)")
        try:
            promote(session, log, name, f"override: {args.override}" if args.override else "manual promotion")
        except FileNotFoundError as e:
            raise UsageError(str(e)) from e
        print(f"active: {args.version}")
    finally:
        log.close()
    return EXIT_OK


@command("rollback", "re-activate a session's previous model version")(_session_arg)
def cmd_rollback(args: argparse.Namespace) -> int:
    from ..pilot.versions import VersionLog, rollback
    session = _open(args.session)
    log = VersionLog(session.database_path)
    try:
        print(f"active: {rollback(session, log)}")
    except ValueError as e:
        raise UsageError(str(e)) from e
    finally:
        log.close()
    return EXIT_OK


def _configure_cycle(p: argparse.ArgumentParser) -> None:
    _session_arg(p)
    p.add_argument("--epochs", type=int, default=None, help="adaptation epochs (default the recipe's)")
    p.add_argument("--trainable", default=None, help="trainable set (default last-blocks)")
    p.add_argument("--gate", default=None, help="also compare the gate's error rates on the audit set")
    p.add_argument("--override", default=None, help="promote even if worse, with this recorded reason")
    p.add_argument("--device", default=None, help="device (default the session's)")


@command("cycle", "re-labelling cycle: adapt on the session's labels, promote only if not worse on the audit "
                  "set")(_configure_cycle)
def cmd_cycle(args: argparse.Namespace) -> int:
    from ..finetune import AdaptConfig
    from ..pilot.gate import Gate
    from ..pilot.versions import relabel_cycle
    session = _open(args.session)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("trainable", args.trainable)) if v is not None}
    try:
        config = AdaptConfig(**overrides)
        gate = Gate.load(args.gate) if args.gate else None
        result = relabel_cycle(session, config, gate=gate, override=args.override, device=args.device)
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from e
    print(json.dumps(result, indent=2, default=str))
    return EXIT_OK
