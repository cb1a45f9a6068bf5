"""clipiqa.feasibility.verdict on hand-made learning curves: size first, the ceiling beside the model, trends
only where the CIs support them."""
from __future__ import annotations

import pandas as pd
import pytest

from clipiqa.agreement import Ceiling
from clipiqa.feasibility import learning_curve, verdict
from clipiqa.metrics import chance_band


def _curve(points, method="paper+qgr") -> pd.DataFrame:
    """Per-split rows as run_protocol writes them: (n_train, n_test, srcc, lo, hi) per point, one split."""
    return pd.DataFrame([{"method": method, "status": "ok", "split": 0, "n_train": n, "n_test": t,
                          "n_pool": 4 * t, "srcc": s, "srcc_ci_lo": lo, "srcc_ci_hi": hi,
                          "chance_band": chance_band(t)} for n, t, s, lo, hi in points])


def _ceiling(value=0.78, lo=0.70, hi=0.84) -> Ceiling:
    return Ceiling(n_images=60, n_raters=3, n_ratings=190, split_half=value, split_half_lo=lo, split_half_hi=hi,
                   split_half_raw=value / (2 - value), n_splits=3, n_shared_images=60, test_retest=0.85,
                   test_retest_lo=0.7, test_retest_hi=0.93, n_repeats=12)


def test_too_few_held_out_labels_to_judge():
    """Too few held-out labels is said as such: 6 test images (chance band ±0.88, CI -1.00..0.94) are no
    'flattened' curve."""
    v = verdict(_curve([(16, 6, 0.62, -0.95, 0.97), (24, 6, 0.60, -1.0, 0.94)]), "paper+qgr")
    assert v.too_few and v.grade is None and v.trend is None
    assert "Too few held-out labels to judge (n = 6; chance band ±0.88)" in v.text
    assert "flattened" not in v.text and "rising" not in v.text and "better than chance" not in v.text
    assert "Label about 100 images in all (≥ 20 held out)" in v.text  # at this split's 6 / (6 + 24) test share
    assert v.recommended_labels == 100  # what the pilot's cost turns into hours


def test_too_few_but_above_chance_says_so():
    v = verdict(_curve([(60, 15, 0.93, 0.80, 0.98)]), "paper+qgr")
    assert v.too_few and "does better than chance" in v.text and v.grade is None


def test_clearly_above_chance_is_graded_with_its_ci():
    v = verdict(_curve([(160, 40, 0.85, 0.74, 0.92)]), "paper+qgr")
    assert not v.too_few and v.grade == "strong"
    assert "reaches SRCC 0.85 (95% CI 0.74 to 0.92; chance band ±0.31; 40 held-out images): strong (the CI spans " \
           "good to strong)" in v.text
    chance = verdict(_curve([(160, 40, 0.20, -0.1, 0.45)]), "paper+qgr")
    assert chance.grade == "indistinguishable from chance"


def test_the_ceiling_is_put_beside_the_model():
    v = verdict(_curve([(160, 40, 0.71, 0.58, 0.80)]), "paper+qgr", ceiling=_ceiling())
    assert "The model reaches 0.71; your raters agree with each other at 0.78 (95% CI 0.70 to 0.84)" in v.text
    assert v.at_ceiling and "That is the human ceiling" in v.text
    assert "test-retest, 12 repeats" in v.text
    below = verdict(_curve([(160, 40, 0.50, 0.30, 0.65)]), "paper+qgr", ceiling=_ceiling())
    assert below.at_ceiling is False and "The gap to the ceiling (0.28)" in below.text


def test_without_a_ceiling_the_verdict_says_how_to_get_one():
    v = verdict(_curve([(160, 40, 0.71, 0.58, 0.80)]), "paper+qgr")
    assert v.at_ceiling is None and "No human ceiling yet" in v.text
    single_rater = _ceiling(float("nan"), float("nan"), float("nan"))
    assert "No human ceiling yet" in verdict(_curve([(160, 40, 0.7, 0.6, 0.8)]), "paper+qgr",
                                             ceiling=single_rater).text


@pytest.mark.parametrize("points, trend, words", [
    # 0.50 (0.45..0.55) -> 0.70 (0.65..0.75): step +0.20, interval about +0.13..+0.27: rising
    ([(40, 200, 0.50, 0.45, 0.55), (80, 200, 0.70, 0.65, 0.75)], "rising", "The curve is still rising"),
    # 0.80 (0.79..0.81) -> 0.79 (0.78..0.80): step -0.01, interval about -0.024..+0.004 < 0.03 per 10: flat
    ([(40, 400, 0.80, 0.79, 0.81), (80, 400, 0.79, 0.78, 0.80)], "flattened", "The curve has flattened"),
    # wide CIs: +0.05 with an interval of about -0.37..+0.47 allows both
    ([(40, 25, 0.50, 0.20, 0.80), (50, 25, 0.55, 0.25, 0.85)], "unclear", "Cannot tell yet"),
])
def test_trends_are_claimed_only_when_the_cis_support_them(points, trend, words):
    v = verdict(_curve(points), "paper+qgr")
    assert v.trend == trend and words in v.text
    assert v.recommended_labels == (2 * (points[-1][0] + points[-1][1]) if trend == "rising" else None)
    assert ("flattened" in v.text) == (trend == "flattened")


def test_a_small_previous_point_makes_the_trend_unreadable():
    v = verdict(_curve([(20, 8, 0.3, -0.4, 0.8), (80, 30, 0.7, 0.5, 0.85)]), "paper+qgr")
    assert not v.too_few and v.trend == "unclear" and "only 8 held-out images" in v.text


def test_baselines_caveats_and_aggregation_over_splits():
    rows = pd.concat([
        _curve([(80, 40, 0.60, 0.45, 0.72)]), _curve([(80, 40, 0.70, 0.55, 0.80)]).assign(split=1),
        _curve([(80, 40, 0.99, 0.9, 1.0)]).assign(split=2, status="error"),  # failed splits do not count
        _curve([(80, 40, 0.75, 0.62, 0.85)], method="classical-ridge"),
        _curve([(80, 40, 0.30, 0.05, 0.52)], method="zero-shot")])
    curve = learning_curve(rows)
    main = curve[curve["method"] == "paper+qgr"].iloc[0]
    assert main["srcc"] == pytest.approx(0.65) and main["n_splits"] == 2 and main["lo"] == pytest.approx(0.5)
    v = verdict(rows, "paper+qgr", random_init=True, synthetic=True)
    assert v.srcc == pytest.approx(0.65)
    assert v.lines[0].startswith("random-init weights: scores are meaningless; these numbers show that the check")
    assert "synthetic severities" in v.lines[1]
    assert "classical-ridge: SRCC 0.75 (95% CI 0.62 to 0.85) - as good or better" in v.text
    assert "zero-shot: SRCC 0.30" in v.text
    assert verdict(learning_curve(rows), "paper+qgr").text == verdict(rows, "paper+qgr").text  # either input


def test_no_curve_yet():
    v = verdict(pd.DataFrame(), "paper+qgr")
    assert "Not enough labels yet" in v.text and v.grade is None


def _point(labelled, n_test, s=0.9, lo=0.8, hi=1.0, n_train=None):
    """One split's row at the largest label count: ``labelled`` images split into ``n_test`` held out and a pool."""
    pool = labelled - n_test
    return {"method": "coop+vpt", "status": "ok", "split": 0, "n_train": n_train or int(0.8 * pool),
            "n_test": n_test, "n_pool": pool, "srcc": s, "srcc_ci_lo": lo, "srcc_ci_hi": hi,
            "chance_band": chance_band(n_test)}


def test_recommended_labels_do_not_jump_as_labels_are_added():
    """The advice is stable: 07 once advised 90, 100 and 200 labels in all at 18, 30 and 60 labels (held out: 4 of 18 by
    image rounding, 6 of 30, 6 of 60 when content groups fell unevenly). The advice follows the protocol's 20 %
    held-out share; the content groups' smaller share is said as 'up to', not as a new headline."""
    runs = {labelled: verdict(pd.DataFrame([_point(labelled, t)]), "coop+vpt")
            for labelled, t in ((18, 4), (30, 6), (60, 6))}
    assert {v.recommended_labels for v in runs.values()} == {100}
    assert all("Label about 100 images in all" in v.text for v in runs.values())
    assert runs[60].recommended_range == (100, 200) and "may take up to 200" in runs[60].text
    assert runs[18].recommended_range == (100, 100) and "up to" not in runs[18].text


def test_past_the_nominal_count_the_groups_decide_how_many():
    """With 150 labels of which only 15 held out (content groups), '100 in all' would be already done."""
    v = verdict(pd.DataFrame([_point(150, 15)]), "coop+vpt")
    assert v.too_few and v.recommended_labels == 200 and "Label about 200 images in all" in v.text


def test_a_figure_of_tiny_held_out_sets_says_it_says_nothing_yet():
    """A tiny held-out set is flagged: a CI of [0.816, 1.0] on n = 4 once stood beside a chance band of ±1.13 with no
    comment."""
    from clipiqa.feasibility import small_n_note
    curve = learning_curve(pd.DataFrame([_point(18, 4, n_train=10)]))
    note = small_n_note(curve)
    assert note.startswith("n = 4 held-out images") and "±1.13" in note and "wider than any SRCC" in note
    assert "this point says nothing yet" in note
    two = learning_curve(pd.DataFrame([_point(30, 6, n_train=10), _point(30, 6, n_train=20)]))
    assert "n = 6 held-out" in small_n_note(two) and "these points say" in small_n_note(two)
    assert small_n_note(learning_curve(pd.DataFrame([_point(200, 40)]))) == ""
