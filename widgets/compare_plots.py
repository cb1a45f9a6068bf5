"""The compare panel's two figures, drawn from a :class:`~clipiqa.widgets.compare.CompareResult` on a bare matplotlib
``Figure``: test SRCC per split and arm beside the paired QGR on - off difference, and the gradient-cosine traces.
"""
from __future__ import annotations

from typing import Sequence

import seaborn as sns

from clipiqa.palette import CHANCE, HUMAN_CEILING, arm_colour

from ._common import integer_ticks

__all__ = ["draw_srcc", "draw_traces", "arm_colours"]


def arm_colours(result, arms: Sequence[str]) -> dict[str, str]:
    """Each arm in the colour of the protocol method it runs (``QGR off`` is ``coop+vpt`` or ``ft``, ...), so the
    panel's colours are those of every other chart (:mod:`clipiqa.palette`)."""
    methods = getattr(result, "methods", None) or {}
    return {arm: arm_colour(methods.get(arm, arm)) for arm in arms}


def _legend_below(fig, ax) -> None:
    """The legend under the figure (constrained layout makes room), never over the data."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:  # seaborn may have put one on the axes
        ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)


def draw_srcc(fig, result, arms: Sequence[str], tie_label: str) -> None:
    """Left: test SRCC per split and arm (``arms`` in order; lines join a split), with the chance band and the human
    ceiling when the result has one. Right: QGR on - QGR off per split, or ``tie_label`` when the two arms are
    identical on every split."""
    df = result.per_split[result.per_split["complete"] & (result.per_split["status"] == "ok")]
    k = len(result.complete_splits)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    colours = arm_colours(result, arms)
    if len(df):
        band = float(df["chance_band"].mean())
        ax1.axhspan(-band, band, color=CHANCE, alpha=0.15, label=f"chance band (±{band:.2f})")
        c = result.ceiling
        if c is not None and c.available:
            ax1.axhspan(c.split_half_lo, c.split_half_hi, color=HUMAN_CEILING, alpha=0.15)
            ax1.axhline(c.split_half, color=HUMAN_CEILING, lw=1.5, label=f"human ceiling ({c.split_half:.2f})")
        for _, sub in df.groupby("split"):
            sub = sub.set_index("arm").reindex([a for a in arms if a in set(sub["arm"])])
            ax1.plot(range(len(sub)), sub["srcc"].to_numpy(), color="#bbbbbb", lw=0.8, zorder=1)
        sns.stripplot(data=df, x="arm", y="srcc", hue="arm", order=list(arms), ax=ax1, size=6, legend=False,
                      jitter=False, zorder=2, palette=colours)
        sns.pointplot(data=df, x="arm", y="srcc", order=list(arms), ax=ax1, color="black", markers="_",
                      linestyles="none", errorbar="sd")
        _legend_below(fig, ax1)
    paired = result.paired
    if paired and paired["identical"]:
        ax2.text(0.5, 0.5, f"{tie_label}\n(equal on all {paired['splits']} splits)", ha="center", va="center",
                 fontsize=9, transform=ax2.transAxes)
        ax2.set_xticks([])
    elif paired:
        diff = paired["diff"]
        bars = ax2.bar([str(s) for s in diff], list(diff.values()),  # in the colour of the arm that won the split
                       color=[colours.get("QGR on") if d > 0 else colours.get("QGR off") if d < 0 else "#999999"
                              for d in diff.values()])
        ax2.bar_label(bars, fmt="%+.3f", fontsize=8)  # an equal split reads "+0.000", not as a missing bar
        lim = max(0.05, 1.3 * max(abs(d) for d in diff.values()))
        ax2.set_ylim(-lim, lim)
        ax2.axhline(0, color="black", lw=0.8)
        ax2.set_xlabel("split")
    else:
        ax2.text(0.5, 0.5, "no split finished by every arm", ha="center", va="center", fontsize=9,
                 transform=ax2.transAxes)
    ax1.set_ylim(-1.05, 1.05)
    ax1.set_ylabel("test SRCC")
    ax1.set_xlabel("")
    ax1.set_title(f"test SRCC per split, {k} split{'s' if k != 1 else ''} per arm (lines join a split)",
                  fontsize=10)
    ax2.set_title("QGR on - QGR off per split (winner's colour)", fontsize=10)
    ax2.set_ylabel("SRCC difference")
    if result.caveat:
        fig.suptitle(result.caveat, color="#a15c00", fontsize=10)


def draw_traces(fig, result) -> None:
    """Per step of every complete split: cosine(quality gradient, semantic gradient) and the share of tensors QGR
    projected, for both adapted arms; says so when no semantic gradient reaches the trainable set."""
    ax1, ax2 = fig.subplots(1, 2)
    colours = arm_colours(result, ("QGR off", "QGR on"))
    drawn, no_semantic = False, False
    for (split, arm), history in sorted(result.histories.items()):
        if split not in result.complete_splits:
            continue
        steps = history.steps_frame()
        if not len(steps) or "cosine" not in steps:
            continue
        if steps["cosine"].isna().all():  # g_s = 0 on every step: the scene loss does not reach these tensors
            no_semantic = True
            continue
        label = arm if split == result.complete_splits[0] else None
        ax1.plot(steps["step"], steps["cosine"], color=colours[arm], alpha=0.7, lw=1, label=label)
        if "frac_projected" in steps:
            ax2.plot(steps["step"], steps["frac_projected"], color=colours[arm], alpha=0.7, lw=1, label=label)
        drawn = True
    if not drawn:
        why = ("no semantic gradient reaches this trainable set:\nQGR has nothing to project" if no_semantic
               else "no per-step gradient records in this result")
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=9, transform=ax.transAxes)
    ax1.axhline(0, color="black", lw=0.6)
    ax1.set_title("cosine(quality gradient, semantic gradient)", fontsize=10)
    ax1.set_ylabel("cosine")
    ax2.set_title("share of tensors projected by QGR", fontsize=10)
    ax2.set_ylabel("share")
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        integer_ticks(ax)
    if drawn:
        _legend_below(fig, ax1)  # one legend for both panels, under them
    if result.caveat:
        fig.suptitle(result.caveat, color="#a15c00", fontsize=10)
