"""clipiqa.agreement: MOS, inter-rater (split-half + Spearman-Brown) and test-retest agreement against hand
computations on a made-up rating table."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clipiqa.agreement import (current_labels, human_ceiling, mos_table, rater_splits, retest_pairs,
                               spearman_brown, split_half, test_retest)

# Three raters, five images, every rater rates every image. Rater A first gave i3 a 5, then corrected it to 3
# (the latest counts). Blind repeats (is_repeat) follow; they never enter the MOS or the split-half.
LABELS = {"A": [1, 2, 3, 4, 5], "B": [2, 1, 3, 5, 4], "C": [1, 3, 2, 4, 5]}
REPEATS = [("A", "i2", 2), ("A", "i4", 5), ("B", "i1", 2), ("B", "i5", 3), ("C", "i3", 1)]


def _table() -> pd.DataFrame:
    rows = [("i3", "A", 5, False)]
    for rater, scores in LABELS.items():
        rows += [(f"i{k + 1}", rater, s, False) for k, s in enumerate(scores)]
    rows += [(image, rater, s, True) for rater, image, s in REPEATS]
    return pd.DataFrame(rows, columns=["image", "rater", "score", "is_repeat"])


def test_current_labels_keep_the_latest_non_repeat_rating():
    labels = current_labels(_table())
    assert len(labels) == 15
    assert labels.set_index(["image", "rater"]).loc[("i3", "A"), "score"] == 3


def test_mos_table_by_hand():
    mos = mos_table(current_labels(_table())).set_index("image")
    # i1: A 1, B 2, C 1 -> mean 4/3; deviations -1/3, 2/3, -1/3 -> sample variance (1/9 + 4/9 + 1/9) / 2 = 1/3
    assert mos.loc["i1", "mos"] == pytest.approx(4 / 3)
    assert mos.loc["i1", "mos_std"] == pytest.approx(math.sqrt(1 / 3))
    # i4: 4, 5, 4 -> 13/3, same spread
    assert mos.loc["i4", "mos"] == pytest.approx(13 / 3) and mos.loc["i4", "n_ratings"] == 3
    single = mos_table(pd.DataFrame({"image": ["x"], "rater": ["A"], "score": [4.0]}))
    assert single["mos"].tolist() == [4.0] and np.isnan(single["mos_std"][0])


def test_spearman_brown_by_hand():
    assert spearman_brown(0.5) == pytest.approx(2 * 0.5 / 1.5)
    assert spearman_brown(0.8) == pytest.approx(1.6 / 1.8)
    assert spearman_brown(1.0) == 1.0 and np.isnan(spearman_brown(float("nan")))
    assert spearman_brown(-0.9) == -1.0  # kept in [-1, 1]


def test_rater_splits_enumerate_distinct_halves():
    assert rater_splits(["A", "B"]) == [(("A",), ("B",))]
    three = rater_splits(["C", "A", "B"])
    assert three == [(("A",), ("B", "C")), (("B",), ("A", "C")), (("C",), ("A", "B"))]
    four = rater_splits(list("ABCD"))  # (AB|CD), (AC|BD), (AD|BC): each unordered split once
    assert four == [(("A", "B"), ("C", "D")), (("A", "C"), ("B", "D")), (("A", "D"), ("B", "C"))]
    assert len(rater_splits(list("ABCDEF"))) == math.comb(5, 2)
    sampled = rater_splits([f"r{i:02d}" for i in range(20)], max_splits=30, seed=1)
    assert len(sampled) == 30 and len(set(sampled)) == 30
    assert sampled == rater_splits([f"r{i:02d}" for i in range(20)], max_splits=30, seed=1)
    assert rater_splits(["A"]) == []


def test_split_half_by_hand():
    """Each split: SRCC = Pearson correlation of the ranks (ties share their mean rank)."""
    # A | B,C:  A = 1 2 3 4 5 (ranks 1..5);  mean(B,C) = 1.5 2 2.5 4.5 4.5 -> ranks 1 2 3 4.5 4.5
    #   deviations from 3: (-2 -1 0 1 2), (-2 -1 0 1.5 1.5): sum of products 9.5, squares 10 and 9.5
    r1 = 9.5 / math.sqrt(10 * 9.5)
    # B | A,C:  B = 2 1 3 5 4 (ranks the same);  mean(A,C) = 1 2.5 2.5 4 5 -> ranks 1 2.5 2.5 4 5
    #   (-1 -2 0 2 1), (-2 -0.5 -0.5 1 2): products 2 + 1 + 0 + 2 + 2 = 7, squares 10 and 9.5
    r2 = 7 / math.sqrt(10 * 9.5)
    # C | A,B:  C = 1 3 2 4 5;  mean(A,B) = 1.5 1.5 3 4.5 4.5 -> ranks 1.5 1.5 3 4.5 4.5
    #   (-2 0 -1 1 2), (-1.5 -1.5 0 1.5 1.5): products 3 + 0 + 0 + 1.5 + 3 = 7.5, squares 10 and 9
    r3 = 7.5 / math.sqrt(10 * 9)
    raw = (r1 + r2 + r3) / 3
    got = split_half(_table())
    assert got["raw"] == pytest.approx(raw, abs=1e-12)
    assert got["srcc"] == pytest.approx(2 * raw / (1 + raw), abs=1e-12)  # 0.9058
    assert got["n_splits"] == 3 and got["n_raters"] == 3 and got["n_images"] == 5


def test_split_half_with_two_raters_and_an_incomplete_design():
    # A and B share i1..i4 (i5 only A): the SRCC runs over the shared images
    t = pd.DataFrame({"image": ["i1", "i2", "i3", "i4", "i5", "i1", "i2", "i3", "i4"],
                      "rater": ["A"] * 5 + ["B"] * 4, "score": [1, 2, 3, 4, 5, 1, 3, 2, 4]})
    # ranks A 1 2 3 4, B 1 3 2 4: d = 0 -1 1 0 -> 1 - 6 * 2 / (4 * 15) = 0.8
    got = split_half(t)
    assert got["raw"] == pytest.approx(0.8) and got["srcc"] == pytest.approx(1.6 / 1.8)
    assert got["n_images"] == 4
    alone = split_half(t[t["rater"] == "A"])
    assert np.isnan(alone["srcc"]) and alone["n_raters"] == 1


def test_test_retest_by_hand():
    pairs = retest_pairs(_table()).sort_values(["rater", "image"])
    assert list(zip(pairs["first"], pairs["repeat"])) == [(2, 2), (4, 5), (2, 2), (4, 3), (2, 1)]
    # first 2 4 2 4 2 -> ranks 2 4.5 2 4.5 2; repeat 2 5 2 3 1 -> ranks 2.5 5 2.5 4 1
    # deviations from 3: (-1 1.5 -1 1.5 -1), (-0.5 2 -0.5 1 -2): products 7.5, squares 7.5 and 9.5
    expected = 7.5 / math.sqrt(7.5 * 9.5)
    got = test_retest(_table())
    assert got["srcc"] == pytest.approx(expected) and got["n_pairs"] == 5


def test_human_ceiling_combines_both_with_seeded_cis():
    c = human_ceiling(_table(), n_boot=300, seed=3)
    assert c.split_half == pytest.approx(split_half(_table())["srcc"])
    assert c.test_retest == pytest.approx(test_retest(_table())["srcc"])
    assert c.n_raters == 3 and c.n_images == 5 and c.n_repeats == 5 and c.n_ratings == 21 and c.available
    assert -1 <= c.split_half_lo <= c.split_half_hi <= 1 and -1 <= c.test_retest_lo <= c.test_retest_hi <= 1
    assert c == human_ceiling(_table(), n_boot=300, seed=3)  # deterministic
    assert "raters agree with each other at SRCC 0.91" in c.text() and "5 repeats" in c.text()
    none = human_ceiling(_table()[lambda t: t["rater"] == "A"], n_boot=50)
    assert not none.available and np.isnan(none.split_half_lo) and "No inter-rater agreement yet" in none.text()


def test_bootstrap_ci_narrows_with_more_images():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=200)
    rows = [(f"i{k}", f"r{j}", truth[k] + rng.normal(scale=0.5), False) for k in range(200) for j in range(4)]
    big = pd.DataFrame(rows, columns=["image", "rater", "score", "is_repeat"])
    small = big[big["image"].isin([f"i{k}" for k in range(20)])]
    wide, narrow = human_ceiling(small, n_boot=200), human_ceiling(big, n_boot=200)
    assert narrow.split_half_hi - narrow.split_half_lo < wide.split_half_hi - wide.split_half_lo
    assert narrow.split_half_lo < narrow.split_half < narrow.split_half_hi
    # 4 raters with noise sd 0.5 around sd 1: a half's mean has reliability 1 / (1 + 0.25 / 2) = 0.889; two
    # halves correlate at about 0.889 and Spearman-Brown gives 4 raters' reliability 1 / (1 + 0.25 / 4) = 0.94
    assert narrow.split_half == pytest.approx(0.94, abs=0.03)
