"""What users of quality tools expect after a score (a gallery in score order, prediction against label,
the worst misses), computed in clipiqa.review and drawn by clipiqa.plots, on hand-made tables; and one colour per
arm in every chart (clipiqa.palette)."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipiqa.palette import ARM_COLOURS, arm_colour, arm_palette
from clipiqa.plots import plot_fit, plot_gallery, plot_learning_curve, plot_levels, plot_worst
from clipiqa.review import fit_summary, gallery_picks, level_summary, worst_predictions

matplotlib.use("Agg")


@pytest.fixture
def pictures(tmp_path):
    """Ten small images with a score and a label: i-th image scores i / 10; labels agree except two swapped."""
    paths = []
    for i in range(10):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 30), (25 * i, 100, 200)).save(path)
        paths.append(str(path))
    label = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    label[1], label[8] = label[8], label[1]  # image 1 is good but scored low, image 8 the other way round
    return pd.DataFrame({"path": paths, "score": [i / 10 for i in range(10)], "q": label})


def test_gallery_picks_spread_over_the_score_order_worst_first(pictures):
    shuffled = pictures.sample(frac=1, random_state=3)
    picks = gallery_picks(shuffled, k=4)
    assert list(picks["score"]) == [0.0, 0.3, 0.6, 0.9] and list(picks["rank"]) == [1, 4, 7, 10]
    assert (picks["n"] == 10).all()
    assert len(gallery_picks(pictures, k=50)) == 10  # never more than there are
    with_gap = pictures.assign(score=pictures["score"].where(pictures.index != 0))
    assert gallery_picks(with_gap, k=3)["rank"].tolist() == [1, 5, 9] and gallery_picks(with_gap)["n"].iloc[0] == 9


def test_fit_summary_gives_srcc_n_and_chance_band(pictures):
    fit = fit_summary(pictures["score"], pictures["q"])
    assert fit.n == 10 and fit.srcc == pytest.approx(pd.Series(pictures["score"]).corr(pictures["q"], "spearman"))
    assert fit.title() == f"SRCC {fit.srcc:.2f} (n = 10; chance band ±{fit.band:.2f})" and fit.band == \
        pytest.approx(1.96 / 3, abs=1e-3)
    assert fit_summary([1, 2, np.nan, 4], [1, 2, 3, np.nan]).n == 2


def test_worst_predictions_are_the_largest_rank_errors(pictures):
    worst = worst_predictions(pictures, pred="score", label="q", k=2)
    assert list(worst["path"].str[-8:]) == ["img1.png", "img8.png"]  # the swapped pair, 7 places off each
    assert list(worst["rank_error"]) == [-7, 7] and list(worst["label_rank"]) == [9, 2]
    assert (worst["n"] == 10).all()


def test_level_summary_counts_every_point():
    table = pd.DataFrame({"distortion": ["blur"] * 3 + ["noise"] * 2, "level": [1, 1, 2, 1, 1],
                          "score": [0.8, 0.6, 0.3, 0.5, 0.7]})
    out = level_summary(table)
    assert out[["distortion", "level", "n"]].values.tolist() == [["blur", 1, 2], ["blur", 2, 1], ["noise", 1, 2]]
    assert out["mean"].tolist() == pytest.approx([0.7, 0.3, 0.6]) and np.isnan(out["sd"].iloc[1])


def test_plots_caption_what_they_show(pictures):
    fig = plot_gallery(gallery_picks(pictures, k=4), label="q", caveat="toy model")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "#1 of 10\nscore 0.00, label 0.00" and len(titles) == 4
    assert "worst" in fig._suptitle.get_text() and "toy model" in fig._suptitle.get_text()
    fit = fit_summary(pictures["score"], pictures["q"])
    ax = plot_fit(pictures["score"], pictures["q"], fit, what="coop+vpt").axes[0]
    assert ax.get_title() == f"coop+vpt: {fit.title()}" and len(ax.collections[0].get_offsets()) == 10
    worst = plot_worst(worst_predictions(pictures, pred="score", k=2), pred="score")
    assert "label 0.80 (#9)\npred 0.10 (#2)\nranked 7 places too low" in [a.get_title() for a in worst.axes]
    summary = level_summary(pd.DataFrame({"distortion": ["blur"] * 3, "level": [1, 1, 2], "score": [.8, .6, .3]}))
    levels = plot_levels(summary).axes[0]
    assert [t.get_text() for t in levels.texts] == ["2", "1"]  # n under every point
    assert "n (1 to 2)" in levels.get_title() and "SD" in levels.get_title()


def _curve(splits=1, n_test=4, ceiling_at=None):
    rows = [{"method": m, "n_train": n, "srcc": s, "lo": s - 0.1, "hi": min(1.0, s + 0.1), "band": 1.13,
             "n_test": n_test, "n_pool": 14, "n_splits": splits}
            for m, s in (("zero-shot", 0.3), ("coop+vpt", 0.9), ("classical-ridge", 0.5)) for n in (10, 14)]
    return pd.DataFrame(rows)


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_learning_curve_says_what_it_shows():
    """The learning curve says "one split" (not a mean) for one split, draws zero-shot as one no-labels level, keeps a
    ceiling at 1.00 inside the frame (it vanished on the frame though in the legend), and comments a CI from 4 images."""
    from types import SimpleNamespace
    from clipiqa.feasibility import small_n_note
    ceiling = SimpleNamespace(available=True, split_half=1.0, split_half_lo=1.0, split_half_hi=1.0)
    curve = _curve()
    ax = plot_learning_curve(curve, ceiling=ceiling, note=small_n_note(curve)).axes[0]
    assert "one split" in ax.get_ylabel() and "mean" not in ax.get_ylabel()
    assert "mean over 3 splits" in plot_learning_curve(_curve(splits=3)).axes[0].get_ylabel()
    zero = [line for line in ax.get_lines() if line.get_label().startswith("zero-shot")]
    assert len(zero) == 1 and zero[0].get_label() == "zero-shot, no labels (0.30)"
    assert np.ptp(zero[0].get_ydata()) == 0  # one level, not a curve over label counts
    ceiling_line = next(line for line in ax.get_lines() if line.get_label().startswith("human ceiling"))
    assert "human ceiling (1.00)" in _legend(ax)
    assert ax.get_ylim()[1] - ceiling_line.get_ydata()[0] > 0.03  # inside the frame, not on it
    assert any("n = 4 held-out images" in t.get_text() and "±1.13" in t.get_text() for t in ax.texts)
    unavailable = SimpleNamespace(available=False, split_half=float("nan"))
    assert not any("ceiling" in t for t in _legend(plot_learning_curve(curve, ceiling=unavailable).axes[0]))
    colours = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in ax.get_lines()}
    assert arm_colour("coop+vpt") in {matplotlib.colors.to_hex(c.lines[0].get_color()) for c in ax.containers}
    assert colours["zero-shot, no labels (0.30)"] == arm_colour("zero-shot")


def test_one_colour_per_arm_everywhere():
    from clipiqa.protocol import METHODS
    assert set(METHODS) <= set(ARM_COLOURS)  # every registered arm has its own colour
    assert arm_colour("ft") == arm_colour("QGR off") and arm_colour("ft+qgr") == arm_colour("QGR on")
    named = [n for n in ARM_COLOURS if not n.startswith("QGR")]
    assert len({ARM_COLOURS[n] for n in named}) == len(named)  # no two methods alike
    assert arm_colour("my-own-arm") == arm_colour("my-own-arm")  # an unknown name: stable
    assert arm_palette(["zero-shot", "ft"]) == {"zero-shot": ARM_COLOURS["zero-shot"], "ft": ARM_COLOURS["ft"]}
