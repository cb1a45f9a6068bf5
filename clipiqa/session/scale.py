"""Rating scales: numbered levels with names (ACR ``1 bad .. 5 excellent`` by default), their range and the
mapping of a score to [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Scale:
    """A rating scale: numbered levels with names, e.g. ACR ``1 bad .. 5 excellent``.

    ``range`` (lowest, highest value) is what ``read_labels(score_range=...)`` needs; higher values are better
    unless ``higher_better`` is False.
    """

    name: str
    levels: tuple[tuple[float, str], ...]
    higher_better: bool = True

    def __post_init__(self) -> None:
        levels = tuple((float(v), str(n)) for v, n in self.levels)
        if len(levels) < 2:
            raise ValueError(f"Scale {self.name!r} needs at least two levels; got {levels}")
        values = [v for v, _ in levels]
        if len(set(values)) != len(values):
            raise ValueError(f"Scale {self.name!r} has repeated level values: {values}")
        object.__setattr__(self, "levels", tuple(sorted(levels)))

    @property
    def range(self) -> tuple[float, float]:
        return self.levels[0][0], self.levels[-1][0]

    @property
    def values(self) -> list[float]:
        return [v for v, _ in self.levels]

    def label(self, value: float) -> str:
        """``"4 good"`` for a named level, the plain number otherwise."""
        for v, n in self.levels:
            if v == float(value):
                return f"{number_text(v)} {n}"
        return number_text(float(value))

    def q(self, value: float) -> float:
        """The score mapped to [0, 1], higher = better (same mapping as ``read_labels``)."""
        lo, hi = self.range
        q = (float(value) - lo) / (hi - lo)
        return q if self.higher_better else 1.0 - q

    def check(self, value: float) -> float:
        value = float(value)
        lo, hi = self.range
        if not np.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"score {value!r} is outside the {self.name} scale ({number_text(lo)}.."
                             f"{number_text(hi)}); levels: {', '.join(self.label(v) for v in self.values)}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "levels": [[v, n] for v, n in self.levels], "higher_better": self.higher_better}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Scale":
        return cls(d["name"], tuple((v, n) for v, n in d["levels"]), bool(d.get("higher_better", True)))


def number_text(v: float) -> str:
    """A level value as people write it: ``4`` for 4.0, ``2.5`` otherwise."""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


ACR = Scale("ACR", ((1, "bad"), (2, "poor"), (3, "fair"), (4, "good"), (5, "excellent")))


def as_scale(scale: Scale | Mapping | Sequence[str] | None) -> Scale:
    """A ``Scale`` from a Scale, a ``{value: name}`` dict, a list of names (values 1..n) or None (ACR)."""
    if scale is None:
        return ACR
    if isinstance(scale, Scale):
        return scale
    if isinstance(scale, Mapping):
        if "levels" in scale:
            return Scale.from_dict(scale)
        return Scale("custom", tuple((float(v), str(n)) for v, n in scale.items()))
    names = list(scale)
    return Scale("custom", tuple((float(i + 1), str(n)) for i, n in enumerate(names)))


def check_fits_scale(scale: Scale, scores: Sequence[tuple[str, float]]) -> None:
    """Refuse stored ``(path, score)`` ratings that lie outside ``scale`` (a session opened with another scale)."""
    lo, hi = scale.range
    bad = [p for p, s in scores if not lo <= s <= hi]
    if bad:
        raise ValueError(f"{len(bad)} stored rating(s) lie outside the {scale.name} scale "
                         f"({number_text(lo)}..{number_text(hi)}), e.g. {bad[0]}; open the session with its own "
                         "scale")
