"""What each lesson notebook must show in smoke mode (the lesson toy), read from its printed output as a user
reads it: the computed takeaway lines exist, say "toy model", and the mechanism each lesson is about holds. The
toy's numbers change when it is retrained, so the checks compare numbers with each other (SRCC against the
chance band, adapted against zero-shot, a verdict against its own sign test), never with typed values.

``LESSON_CHECKS[notebook file name](shown_text)`` raises AssertionError with the lines it read.
"""
from __future__ import annotations

import re

NUMBER = r"[-+]?\d+(?:\.\d+)?"


def takeaways(shown: str) -> list[str]:
    """The notebook's takeaway lines; each must name the toy."""
    lines = re.findall(r"Takeaway \([^\n]*|Takeaway: [^\n]*", shown)
    assert lines, "no 'Takeaway ...' line in the output"
    assert all("toy model" in ln for ln in lines), lines
    return lines


def _pairs(text: str) -> dict[str, float]:
    return {name: float(v) for name, v in re.findall(rf"(\w+) ({NUMBER})", text)}


def check_01(shown: str) -> None:
    """Zero-shot ranks the trained types above the chance band on contents it never saw, and every held-out weak
    type below the weakest trained type."""
    line = next(ln for ln in takeaways(shown) if "trained types" in ln)
    band = float(re.search(rf"chance band ±({NUMBER})", line).group(1))
    n = int(re.search(r"n = (\d+) images per type", line).group(1))
    trained = _pairs(line.split("trained types", 1)[1].split(";", 1)[0])
    held = _pairs(line.split("held-out types", 1)[1].split(" all ", 1)[0].split(" not ", 1)[0])
    assert n >= 40 and len(trained) == 2 and len(held) >= 2, line
    assert min(trained.values()) > band, line
    assert max(held.values()) < min(trained.values()), line


def check_03(shown: str) -> None:
    """Adaptation on a held-out weak type beats zero-shot on >= 40 held-out images (gain > 0, CI above zero), and
    training is what raised it (the held-out SRCC rose from the first epoch to the last: the random start of the
    learned text context alone scores above the toy's antonym prompts on some types); the semantic loss's
    movement is explained."""
    line = next(ln for ln in takeaways(shown) if "gain" in ln)
    n = int(re.search(r"SRCC on (\d+) held-out images", line).group(1))
    gain = float(re.search(rf"gain ({NUMBER})", line).group(1))
    lo, hi = (float(v) for v in re.search(rf"CI \[({NUMBER}), ({NUMBER})\]", line).groups())
    assert n >= 40 and gain > 0 and lo > 0 and lo <= gain <= hi, line
    curve = re.search(rf"held-out SRCC after epoch 1: ({NUMBER}), after epoch \d+: ({NUMBER})", shown)
    assert curve, "no first/last held-out SRCC line"
    first, last = (float(v) for v in curve.groups())
    assert last - first > 0.05, f"training did not move held-out SRCC: {curve.group(0)}"
    assert "The semantic loss (KL of the scene predictions" in shown


def _verdicts(shown: str) -> list[tuple[str, int, int, int, float]]:
    out = []
    for line in takeaways(shown):
        m = re.search(rf"better on (\d+), worse on (\d+), equal on \d+ of (\d+) splits \(sign test p = ({NUMBER}"
                      rf"(?:e-?\d+)?)\)", line)
        if m:
            out.append((line, *(int(v) for v in m.groups()[:3]), float(m.group(4))))
    assert out, "no paired verdict with its numbers"
    return out


def _check_verdicts(shown: str, min_splits: int) -> None:
    """Each verdict says 'beats'/'loses to' exactly when its own sign test is below 0.05, else 'inconclusive',
    and rests on enough splits for a sign test to be able to conclude."""
    for line, wins, losses, n, p in _verdicts(shown):
        assert n >= min_splits, line
        concluded = " beats " in line or " loses to " in line
        assert concluded == (p < 0.05), line
        assert concluded or "inconclusive" in line, line


def check_04(shown: str) -> None:
    _check_verdicts(shown, min_splits=6)
    assert any("ft+qgr" in v[0] and " ft" in v[0] for v in _verdicts(shown)), "no QGR on/off verdict"


def check_06(shown: str) -> None:
    """Meta pre-training moved its parameters by at least 1 % of their norm, the selection says what it kept, and
    the meta-vs-default few-shot verdict is computed on several splits."""
    moved = float(re.search(rf"the meta parameters moved ({NUMBER}) % of their norm", shown).group(1))
    assert moved >= 1.0, f"meta parameters moved {moved} %"
    assert "run note:" in shown
    _check_verdicts(shown, min_splits=6)
    assert any("meta+ft" in v[0] for v in _verdicts(shown))


LESSON_CHECKS = {"01_zero_shot.ipynb": check_01, "03_adapt_on_gpu.ipynb": check_03, "04_qgr_compare.ipynb": check_04,
                 "06_meta_prompt_pretraining.ipynb": check_06}
