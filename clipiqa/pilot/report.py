"""One self-contained HTML file to take to a meeting: where the pilot stands, in numbers with their uncertainty.

Sections: the feasibility verdict with its CI and learning curve (from a per-split table of ``clipiqa bench --out``
or notebook 07, when given), the human ceiling (rater agreement), the site threshold and its error rates, the
costs, the model versions with their audit metrics, and the line's recent drift tests. Figures are embedded as
PNG data, so the file opens anywhere with no other file beside it. Numbers from a random-init or toy model are
labelled on top of the report.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import sqlite3
from typing import Any

import pandas as pd

from ..caveats import caveat_of
from ..csvio import atomic_write
from .cost import pilot_cost


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="t", na_rep="", float_format=lambda x: f"{x:.3f}")


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _curve_figure(curve: pd.DataFrame) -> str:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for method, m in curve.sort_values("n_train").groupby("method"):
        ax.errorbar(m["n_train"], m["srcc"], yerr=[m["srcc"] - m["lo"], m["hi"] - m["srcc"]], marker="o",
                    capsize=3, label=method)
    if "band" in curve:
        band = float(curve["band"].max())
        ax.axhspan(-band, band, color="0.85", label=f"chance band (±{band:.2f})")
    ax.set_xlabel("labelled images used for training")
    ax.set_ylabel("SRCC on held-out images (95% CI)")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _roc_figure(gate) -> str:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    fpr = [p[1] for p in gate.roc]
    tpr = [p[2] for p in gate.roc]
    ax.plot(fpr, tpr, marker=".")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--")
    ax.scatter([gate.false_accept_rate], [1 - gate.false_reject_rate], color="red", zorder=3,
               label="chosen threshold")
    ax.set_xlabel("false-accept rate")
    ax.set_ylabel("true-accept rate")
    ax.set_title(f"ROC, AUC {gate.auc:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _drift_rows(database: str) -> pd.DataFrame:
    if not os.path.isfile(database):
        return pd.DataFrame()
    con = sqlite3.connect(database)
    try:
        return pd.read_sql_query("SELECT time, model_version, n_reference, n_recent, ks_pvalue, mmd_pvalue, reason "
                                 "FROM drift_log ORDER BY id DESC LIMIT 10", con)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError):
        return pd.DataFrame()
    finally:
        con.close()


def build_report(session, *, per_split: pd.DataFrame | None = None, method: str | None = None, gate=None,
                 title: str = "clipiqa pilot report") -> str:
    """The report's HTML (see the module docstring). ``per_split``: ``run_protocol(...).per_split`` rows of every
    label count (``clipiqa bench --out`` writes them); ``method``: the arm the verdict judges."""
    from ..feasibility import learning_curve, verdict
    from .versions import VersionLog
    parts: list[str] = []
    caveat = caveat_of(session).then("every number below shows the machinery, never feasibility")
    if caveat:
        parts.append(f'<p class="warn">{html.escape(caveat)}</p>')
    ratings = session.ratings()
    labelled = len(session.labels)
    parts.append(f"<h2>Labels</h2>{_p(f'{labelled} images labelled by {len(session.raters)} rater(s) in {session.folder}')}")
    ceiling = session.agreement(n_boot=300)
    if ceiling.n_raters >= 2 and not math.isnan(ceiling.split_half):
        parts.append(_p(f"human ceiling: raters agree at SRCC {ceiling.split_half:.2f} (95% CI "
                        f"{ceiling.split_half_lo:.2f} to {ceiling.split_half_hi:.2f}; split-half, Spearman-Brown)"))
    else:
        parts.append(_p("no human ceiling yet: it needs two or more raters on the same images"))
    advised = None
    parts.append("<h2>Feasibility</h2>")
    if per_split is not None and len(per_split):
        methods = [m for m in per_split["method"].unique() if m not in ("zero-shot", "classical-ridge")]
        method = method or (methods[0] if methods else per_split["method"].iloc[0])
        v = verdict(per_split, method, ceiling=ceiling if ceiling.n_raters >= 2 else None,
                    random_init=session.random_init)
        advised = v.recommended_labels
        parts.extend(_p(line) for line in v.lines)
        parts.append(_curve_figure(learning_curve(per_split)))
    else:
        parts.append(_p("no feasibility run given: run notebook 07 or `clipiqa bench ... --out DIR` and pass its "
                        "per-split table (--feasibility DIR/per_split.csv)"))
    parts.append("<h2>Site threshold</h2>")
    if gate is not None:
        from .gate import describe_gate
        parts.extend(_p(line) for line in describe_gate(gate).splitlines())
        parts.append(_roc_figure(gate))
        parts.append(_table(pd.DataFrame([gate.confusion])))
    else:
        parts.append(_p("no gate given (clipiqa gate fit makes one)"))
    parts.append("<h2>Costs</h2>")
    parts.extend(_p(line) for line in pilot_cost(ratings, labelled, advised, gate).lines())
    parts.append("<h2>Model versions</h2>")
    log = VersionLog(session.database_path)
    try:
        versions = log.table()
        if len(versions):
            audit = [json.loads(a)["candidate"] if isinstance(a, str) else {} for a in versions["audit"]]
            shown = versions[["name", "status", "parent", "n_labels", "created", "who"]].assign(
                audit_srcc=[a.get("srcc") for a in audit], audit_n=[a.get("n") for a in audit])
            parts.append(_table(shown))
            parts.append(_table(log.events()[["time", "name", "action", "reason", "who"]].tail(15)))
        else:
            parts.append(_p("no versions yet (clipiqa cycle makes them)"))
    finally:
        log.close()
    parts.append(_p(f"active: {session.active_checkpoint or 'zero-shot'}"))
    drift = _drift_rows(str(session.database_path))
    parts.append("<h2>Line drift (latest tests)</h2>")
    parts.append(_table(drift) if len(drift) else _p("no line monitor passes yet (clipiqa watch)"))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             ".warn{background:#fff3cd;padding:.6em;border:1px solid #e0c97f}"
             "table.t{border-collapse:collapse;font-size:90%}table.t td,table.t th{padding:2px 8px;"
             "border-bottom:1px solid #ddd}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>")


def write_report(session, out: str | os.PathLike, **kwargs: Any) -> str:
    """Write :func:`build_report` to ``out`` atomically; returns the path."""
    text = build_report(session, **kwargs)
    with atomic_write(out) as f:
        f.write(text)
    return os.fspath(out)
