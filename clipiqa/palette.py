"""One colour per arm, the same in every chart (notebooks 04, 06 and 07, the compare panel, ``clipiqa bench``).

A method keeps its colour whichever chart it is in, so that "the orange one" means the same arm on every figure.
The compare panel's arms ``QGR off`` / ``QGR on`` are the ``ft`` / ``ft+qgr`` pair by default and share their
colours. The reference lines that are not arms have fixed colours too: the chance band and the human ceiling.

* :func:`arm_colour`: the colour of one method (an unknown name gets a stable colour from its name);
* :func:`arm_palette`: ``{name: colour}`` for several (what seaborn's ``palette=`` takes).
"""
from __future__ import annotations

import zlib
from typing import Iterable

__all__ = ["ARM_COLOURS", "CHANCE", "HUMAN_CEILING", "arm_colour", "arm_palette"]

ARM_COLOURS = {
    "zero-shot": "#7f7f7f",        # grey: no labels used, a reference
    "classical-ridge": "#8c564b",  # brown
    "ridge-probe": "#bcbd22",      # olive
    "coop": "#17becf",             # cyan
    "coop+qgr": "#0b6e78",         # dark cyan
    "coop+vpt": "#9467bd",         # purple
    "coop+vpt+qgr": "#393b79",     # dark indigo
    "ft": "#ff7f0e",               # orange
    "ft+qgr": "#1f77b4",           # blue
    "meta+ft": "#e377c2",          # pink
    "meta+ft+qgr": "#d62728",      # red
    "ft+qgr-auto": "#6baed6",      # light blue
    "meta+ft+qgr-auto": "#ff9896",  # light red
    "QGR off": "#ff7f0e",          # the compare panel's arms: as ft / ft+qgr
    "QGR on": "#1f77b4",
}
"""Method or arm name -> colour (matplotlib hex)."""

CHANCE = "grey"
"""The chance band around 0."""
HUMAN_CEILING = "#2ca02c"
"""The human ceiling (inter-rater agreement): green, used by no arm."""

_SPARE = ("#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1")


def arm_colour(name: str) -> str:
    """The colour of the method or arm ``name``; a name not in :data:`ARM_COLOURS` (a registered method of
    your own) gets one of a few spare colours chosen from its name, the same in every chart and every run."""
    name = str(name)
    if name in ARM_COLOURS:
        return ARM_COLOURS[name]
    return _SPARE[zlib.crc32(name.encode()) % len(_SPARE)]


def arm_palette(names: Iterable[str]) -> dict[str, str]:
    """``{name: colour}`` for ``names`` (e.g. ``sns.stripplot(..., hue="arm", palette=arm_palette(arms))``)."""
    return {str(n): arm_colour(n) for n in names}
