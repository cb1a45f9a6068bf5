"""The lessons' computed takeaways (clipiqa.lesson_views) on hand-made numbers, and the adapt panel's held-out test
set with its zero-shot reference line (Session.adapt(test=...), AdaptPanel(test=..., zero_shot=...))."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clipiqa.caveats import TOY
from clipiqa.finetune import AdaptConfig
from clipiqa.lesson_views import (compare_takeaway, gain_takeaway, paired_gain, semantic_loss_text, takeaway,
                                  types_takeaway)
from clipiqa.session import Session


def test_paired_gain_is_adapted_minus_zero_shot_with_a_ci_on_the_same_images():
    rng = np.random.default_rng(0)
    target = np.repeat(np.linspace(0, 1, 6), 10)
    adapted = target + rng.normal(0, 0.2, len(target))
    zero = rng.normal(0, 1, len(target))
    g = paired_gain(zero, adapted, target)
    assert g["n"] == 60 and g["gain"] == pytest.approx(g["adapted"] - g["zero"])
    assert 0 < g["lo"] < g["gain"] < g["hi"]
    line = gain_takeaway(g, "60 labels", TOY)
    assert line.startswith("Takeaway (toy model") and "above zero" in line
    same = paired_gain(adapted, adapted, target)
    assert same["gain"] == 0 and same["lo"] == same["hi"] == 0
    assert "includes zero: no clear gain" in gain_takeaway(same, "60 labels")
    with pytest.raises(ValueError, match="same test images"):
        paired_gain(zero[:5], adapted, target)


def _types(srcc: dict[str, float], trained=("gaussian_blur", "white_noise")) -> pd.DataFrame:
    return pd.DataFrame([{"type": t, "group": "trained" if t in trained else "held out", "srcc": s, "n": 66,
                          "band": 0.24, "above_band": s > 0.24} for t, s in srcc.items()])


def test_types_takeaway_says_whether_zero_shot_carries_only_what_was_trained():
    works = types_takeaway(_types({"gaussian_blur": 0.66, "white_noise": 0.58, "jpeg": 0.27, "pixelate": -0.02}),
                           TOY)
    assert "toy model" in works and "all above the band" in works and "all below the weakest trained type (0.58)" \
        in works and "1 of 2 inside the band" in works
    mixed = types_takeaway(_types({"gaussian_blur": 0.66, "white_noise": 0.18, "jpeg": 0.7}))
    assert mixed.startswith("Takeaway: ") and "NOT all above the band" in mixed and "not all below" in mixed


def _splits(diffs: list[float]) -> pd.DataFrame:
    rows = []
    for split, d in enumerate(diffs):
        rows += [{"split": split, "method": "ft", "srcc": 0.5, "status": "ok"},
                 {"split": split, "method": "ft+qgr", "srcc": 0.5 + d, "status": "ok"}]
    return pd.DataFrame(rows)


def test_compare_takeaway_concludes_only_when_the_sign_test_does():
    assert "ft+qgr beats ft" in compare_takeaway(_splits([0.1] * 8), "ft+qgr", "ft", TOY)
    assert "ft+qgr loses to ft" in compare_takeaway(_splits([-0.1] * 8), "ft+qgr", "ft", TOY)
    few = compare_takeaway(_splits([0.1, 0.2]), "ft+qgr", "ft", TOY)
    assert "inconclusive" in few and "better on 2, worse on 0" in few and "fewer than 6 splits" in few
    mixed = compare_takeaway(_splits([0.1, -0.1] * 5), "ft+qgr", "ft", TOY)
    assert "inconclusive" in mixed and "fewer than" not in mixed and mixed.startswith("Takeaway (toy model")


def test_semantic_loss_text_explains_a_rise_from_the_run_records():
    steps = pd.DataFrame({"loss_semantic": [1.7, 2.5, 3.9], "cosine": [0.2, -0.1, 0.3],
                          "frac_projected": [0.5, 0.0, 0.5]})
    text = semantic_loss_text(steps, lam=5.0)
    assert "rose from 1.70 to 3.90" in text and "67% of steps" in text and "lam 5 > 1" in text
    assert "QGR off" in semantic_loss_text(steps, lam=None)
    assert "about level" in semantic_loss_text(steps.assign(loss_semantic=[1.0, 1.0, 1.01]), lam=None)
    assert takeaway("x") == "Takeaway: x"


@pytest.fixture
def lesson_session(tmp_path):
    """A session on the lesson toy with 12 labelled images of four photos and a test table of two other photos."""
    from clipiqa.lesson import write_lesson_set
    train = write_lesson_set(tmp_path / "train", photos=["astronaut", "rocket"], types=["motion_blur"])
    test = write_lesson_set(tmp_path / "test", photos=["chelsea", "coffee"], types=["motion_blur"])
    session = Session(tmp_path / "sess", images=train, model_name="lesson", device="cpu")
    for path, q in zip(train["path"], train["q"]):
        session.label(path, 1 + round(4 * q))
    return session, test


def test_adapt_measures_on_a_given_test_set_and_the_panel_draws_zero_shot(lesson_session):
    from clipiqa.widgets import AdaptPanel
    session, test = lesson_session
    panel = AdaptPanel(session, epochs=2, lr=1e-2, trainable="text", device="cpu", n_views=1, test=test,
                       zero_shot=0.25, redraw_every=0.0)
    history = panel.run(block=True)
    assert [e["epoch"] for e in history.evals] == [1, 2] and "srcc_test" in history.evals[-1]
    import clipiqa
    card = clipiqa.read_checkpoint(session.checkpoints().iloc[-1]["path"]).card
    assert card["data"]["n_labels"] == 12 and card["data"]["n_test"] == len(test) == 12
    assert panel.curves.value  # drawn with the reference line (legend: "zero-shot, no labels (0.25)")
    with pytest.raises(ValueError, match="also training labels"):
        session.adapt(AdaptConfig(trainable="text", epochs=1, n_views=1), test=session.labelled_table().head(4))
