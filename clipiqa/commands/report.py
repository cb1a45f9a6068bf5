"""``clipiqa report SESSION --out report.html``: the pilot's state in one self-contained HTML file for a meeting
(verdict with CI and learning curve, human ceiling, threshold and error rates, costs, versions, drift); see
:mod:`clipiqa.pilot.report`.
"""
from __future__ import annotations

import argparse

from .common import EXIT_OK, UsageError, check_out_file, command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="the session folder")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--gate", default=None, help="the site threshold (gate.json) to report")
    p.add_argument("--feasibility", default=None,
                   help="a per-split table of a feasibility run (clipiqa bench --out DIR writes DIR/per_split.csv)")
    p.add_argument("--method", default=None, help="the arm the verdict judges (default the first adapted arm)")


@command("report", "write a self-contained HTML report of a pilot for a meeting")(_configure)
def cmd_report(args: argparse.Namespace) -> int:
    from ..csvio import read_csv
    from ..pilot.gate import Gate
    from ..pilot.report import write_report
    from ..session import Session
    out = check_out_file(args.out)
    try:
        session = Session.open(args.session)
        gate = Gate.load(args.gate) if args.gate else None
        per_split = read_csv(args.feasibility, text_columns=("method",)) if args.feasibility else None
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from e
    print(f"wrote {write_report(session, out, per_split=per_split, method=args.method, gate=gate)}")
    return EXIT_OK
