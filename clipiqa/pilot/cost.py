"""The cost side of a pilot, in numbers: how long a label takes here, what the advised labels cost in hours, and
what the gate's mistakes cost per 1,000 images.

Labelling time comes from the label store's own timestamps: per rater, the gaps between consecutive ratings,
leaving out pauses longer than ``max_gap`` seconds (a coffee break is not labelling time). Its median is robust
to the odd long look at a hard image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

MAX_GAP_S = 300.0


def seconds_per_label(ratings: pd.DataFrame, max_gap: float = MAX_GAP_S) -> tuple[float, int]:
    """Median seconds between consecutive ratings of one rater (pauses over ``max_gap`` left out), and how many
    gaps it rests on. ``ratings``: ``Session.ratings()`` (``rater``, ``time``)."""
    if ratings is None or len(ratings) < 2:
        return math.nan, 0
    times = pd.to_datetime(ratings["time"], utc=True, format="mixed")
    gaps = []
    for _, group in ratings.assign(_t=times).sort_values("_t").groupby("rater"):
        d = group["_t"].diff().dt.total_seconds().dropna().to_numpy()
        gaps.extend(d[(d > 0) & (d <= max_gap)])
    return (float(np.median(gaps)) if gaps else math.nan), len(gaps)


@dataclass(frozen=True)
class PilotCost:
    """Labelling time per image, the hours the advised labels take, and the gate's cost per 1,000 images."""

    seconds_per_label: float
    n_gaps: int
    labels_now: int
    labels_advised: int | None
    hours_for_advised: float | None
    gate_cost_per_1000: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = []
        if math.isfinite(self.seconds_per_label):
            out.append(f"labelling takes {self.seconds_per_label:.1f} s per image here (median of {self.n_gaps} "
                       f"gaps between ratings, pauses over {MAX_GAP_S:.0f} s left out)")
        else:
            out.append("labelling time unknown yet (needs two ratings in a row by one rater)")
        if self.labels_advised is not None and self.hours_for_advised is not None:
            more = max(0, self.labels_advised - self.labels_now)
            out.append(f"the verdict advises {self.labels_advised} labels in all ({more} more than now): about "
                       f"{self.hours_for_advised:.1f} h of labelling")
        if self.gate_cost_per_1000 is not None:
            out.append(f"the gate's expected cost of mistakes: {self.gate_cost_per_1000:.1f} per 1,000 images "
                       "(in the unit of its costs)")
        return out


def pilot_cost(ratings: pd.DataFrame, labels_now: int, labels_advised: int | None = None, gate=None,
               max_gap: float = MAX_GAP_S) -> PilotCost:
    """Put the pilot's costs together (see the module docstring)."""
    sec, n = seconds_per_label(ratings, max_gap)
    hours = None
    if labels_advised is not None and math.isfinite(sec):
        hours = max(0, labels_advised - labels_now) * sec / 3600
    return PilotCost(sec, n, int(labels_now), labels_advised, hours,
                     None if gate is None else float(gate.expected_cost_per_1000))
