"""Pilot costs from the label store's timestamps (hand-made times)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from clipiqa.pilot.cost import pilot_cost, seconds_per_label


def ratings(times, raters):
    return pd.DataFrame({"rater": raters, "time": times})


def test_median_gap_per_rater_leaves_out_breaks():
    t = ["2026-01-01T10:00:00+00:00", "2026-01-01T10:00:06+00:00", "2026-01-01T10:00:14+00:00",
         "2026-01-01T11:00:00+00:00",  # an hour's break: not labelling time
         "2026-01-01T11:00:10+00:00"]
    sec, n = seconds_per_label(ratings(t, ["a"] * 5))
    assert (sec, n) == (8.0, 3)  # gaps 6, 8, 10
    # two raters working at once: gaps are taken within each rater, never across
    both = ratings(["2026-01-01T10:00:00+00:00", "2026-01-01T10:00:01+00:00", "2026-01-01T10:00:20+00:00",
                    "2026-01-01T10:00:21+00:00"], ["a", "b", "a", "b"])
    assert seconds_per_label(both) == (20.0, 2)
    assert math.isnan(seconds_per_label(ratings(t[:1], ["a"]))[0])


def test_hours_for_the_advised_labels_and_gate_cost():
    t = [f"2026-01-01T10:00:{s:02d}+00:00" for s in range(0, 60, 12)]  # 12 s per label
    class Gate:
        expected_cost_per_1000 = 42.0
    cost = pilot_cost(ratings(t, ["a"] * 5), labels_now=30, labels_advised=330, gate=Gate())
    assert cost.seconds_per_label == 12.0
    assert cost.hours_for_advised == pytest.approx(300 * 12 / 3600)
    text = "\n".join(cost.lines())
    assert "12.0 s per image" in text and "300 more" in text and "42.0 per 1,000" in text
    assert pilot_cost(ratings(t, ["a"] * 5), 30).hours_for_advised is None
