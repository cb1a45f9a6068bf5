"""Claims over several seeds: per-seed means, their spread, paired wins and the sign test, on hand-made tables."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from clipiqa.protocol.seeds import over_seeds, paired_verdict, paired_wins


def table(rows):
    return pd.DataFrame(rows, columns=["seed", "split", "method", "srcc", "status"])


def test_seed_means_and_their_spread():
    rows = [(0, 0, "ft", 0.2, "ok"), (0, 1, "ft", 0.4, "ok"), (1, 0, "ft", 0.6, "ok"), (1, 1, "ft", 0.8, "ok"),
            (1, 2, "ft", float("nan"), "error")]
    got = over_seeds(table(rows)).set_index("method").loc["ft"]
    assert got["n_seeds"] == 2 and got["n_splits"] == 4
    assert got["srcc_mean"] == pytest.approx(0.5) and got["srcc_seed_mean"] == pytest.approx(0.5)
    assert got["srcc_seed_std"] == pytest.approx(math.sqrt(2) * 0.2)  # std of (0.3, 0.7), ddof 1


def test_paired_wins_count_per_seed_and_split_and_test_the_sign():
    rows = []
    for seed in range(3):
        for split in range(4):
            rows.append((seed, split, "a", 0.5, "ok"))
            rows.append((seed, split, "b", 0.4 if split < 3 else 0.5, "ok"))  # a wins 9, ties 3
    w = paired_wins(table(rows), "a", "b")
    assert (w["n"], w["wins"], w["losses"], w["ties"]) == (12, 9, 0, 3)
    assert w["p_sign"] == pytest.approx(2 * 0.5 ** 9)
    assert paired_verdict(w).startswith("a beats b")
    flipped = paired_wins(table(rows), "b", "a")
    assert paired_verdict(flipped).startswith("b loses to a")


def test_a_split_seen_by_one_arm_only_is_left_out_and_few_wins_are_inconclusive():
    rows = [(0, 0, "a", 0.6, "ok"), (0, 0, "b", 0.5, "ok"), (0, 1, "a", 0.4, "ok"), (0, 1, "b", 0.5, "ok"),
            (0, 2, "a", 0.9, "ok")]
    w = paired_wins(table(rows), "a", "b")
    assert (w["n"], w["wins"], w["losses"]) == (2, 1, 1) and w["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert "inconclusive" in paired_verdict(w)
    assert "no split" in paired_verdict(paired_wins(table(rows), "a", "c"))
