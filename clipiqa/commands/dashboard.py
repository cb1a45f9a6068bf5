"""``clipiqa dashboard SESSION [--folder F] [--gate G]``: the line dashboard as a Voila web app.

Writes a one-cell notebook (``SESSION/dashboard/line_dashboard.ipynb``) that shows
:class:`clipiqa.widgets.LineDashboard` and refreshes it every ``--interval`` seconds, then serves it with Voila
(code hidden: an operator sees scores, rejects, drift and the label queue, nothing to edit). With ``--folder``
the dashboard also scores the images that arrive there (it is then the line monitor); without it, it shows what
``clipiqa watch`` logs. Stop with Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ..extras import require
from .common import EXIT_OK, UsageError, command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="the session folder (its line log and active model version)")
    p.add_argument("--folder", default=None, help="score images arriving in this folder (else only show the log)")
    p.add_argument("--gate", default=None, help="gate.json for pass / reject decisions")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (default 5)")
    p.add_argument("--port", type=int, default=8866, help="port to serve on (default 8866, Voila's)")
    p.add_argument("--ip", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")


def dashboard_notebook(session: Path, folder: Path | None, gate: Path | None, interval: float) -> dict:
    """The one-cell notebook Voila serves (nbformat 4 as a dict)."""
    code = ("from clipiqa.widgets import LineDashboard\n"
            f"board = LineDashboard({str(session)!r}, folder={None if folder is None else str(folder)!r}, "
            f"gate={None if gate is None else str(gate)!r})\n"
            f"board.start(interval={float(interval)!r})\n"
            "board")
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3",
                                                                           "display_name": "Python 3",
                                                                           "language": "python"}},
            "cells": [{"cell_type": "code", "id": "dashboard", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": code}]}


@command("dashboard", "serve the line dashboard (scores, reject rate, drift alarm, label queue) with "
                      "Voila")(_configure)
def cmd_dashboard(args: argparse.Namespace) -> int:
    require("voila", "pilot", "clipiqa dashboard")
    session = Path(args.session).resolve()
    if not (session / "settings.json").is_file():
        raise UsageError(f"{session} is not a clipiqa session (no settings.json); label some images first "
                         "(notebook 02) or give the right folder")
    folder = Path(args.folder).resolve() if args.folder else None
    if folder is not None and not folder.is_dir():
        raise UsageError(f"--folder {args.folder} does not exist or is not a folder")
    gate = Path(args.gate).resolve() if args.gate else None
    if gate is not None and not gate.is_file():
        raise UsageError(f"--gate {args.gate} does not exist")
    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval} is not allowed; use a positive number of seconds")
    voila = shutil.which("voila", path=str(Path(sys.executable).parent)) or shutil.which("voila")
    if voila is None:
        raise UsageError("the voila command is not on PATH although the voila package is installed; reinstall "
                         "clipiqa's 'pilot' extra (pip install 'clipiqa[pilot]')")
    target = session / "dashboard" / "line_dashboard.ipynb"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(dashboard_notebook(session, folder, gate, args.interval), indent=1))
    cmd = [voila, str(target), f"--port={args.port}", f"--Voila.ip={args.ip}",
           "--ServerApp.port_retries=0"] + (["--no-browser"] if args.no_browser else [])
    print(f"serving the line dashboard at http://{args.ip}:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
    try:
        return subprocess.call(cmd) or EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
