"""What one rater sees of the label database: labels (the MOS over raters), their own labels, skips and
repeats, derived from one :class:`~clipiqa.labelstore.Snapshot`, and the questions asked of it (counts, the
next image not done)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..agreement import mos_by_image
from ..labelstore import Snapshot


@dataclass(frozen=True)
class View:
    """What one rater sees, derived from a :class:`~clipiqa.labelstore.Snapshot` (cached per database state)."""

    images: list[str]
    index: dict[str, int]
    content_ids: dict[str, str]
    labels: dict[str, dict[str, Any]]  # per image, over all raters
    mine: dict[str, float]  # this rater's labels
    my_order: list[str]  # images this rater labelled, oldest label first
    my_repeats: frozenset[str]
    n_my_ratings: int  # repeats and superseded ratings included (seeds the repeat draw)
    n_my_repeats: int
    skipped: list[str]  # this rater's skips (not labelled since), in skip order
    done: frozenset[str]  # labelled or skipped by this rater
    raters: list[str]
    n_ratings: int
    positions: dict[str, str]


def view_of(snap: Snapshot, rater: str) -> View:
    labels_by: dict[tuple[str, str], Any] = {}
    for r in snap.ratings:  # in seq order: the latest non-repeat rating wins
        if not r.is_repeat:
            labels_by.pop((r.path, r.rater), None)
            labels_by[(r.path, r.rater)] = r
    mine_rows = [r for (p, who), r in labels_by.items() if who == rater]
    mine = {r.path: r.score for r in mine_rows}
    stats = mos_by_image((r.path, r.score) for r in labels_by.values())
    labels: dict[str, dict[str, Any]] = {}
    for p in snap.images:
        if p in stats:
            mos, std, n = stats[p]
            labels[p] = {"score": mos, "mos_std": std if np.isfinite(std) else None, "n_ratings": n,
                         "content_id": snap.content_ids.get(p, "")}
    skipped: list[str] = []
    for s in snap.skips:
        if s.rater == rater and s.path not in mine and s.path not in skipped:
            skipped.append(s.path)
    mine_ratings = [r for r in snap.ratings if r.rater == rater]
    raters = sorted({r.rater for r in snap.ratings} | {s.rater for s in snap.skips})
    return View(images=list(snap.images), index={p: i for i, p in enumerate(snap.images)},
                content_ids=dict(snap.content_ids), labels=labels, mine=mine,
                my_order=[r.path for r in mine_rows], n_my_ratings=len(mine_ratings),
                my_repeats=frozenset(r.path for r in mine_ratings if r.is_repeat),
                n_my_repeats=sum(r.is_repeat for r in mine_ratings), skipped=skipped,
                done=frozenset(mine) | frozenset(skipped),
                raters=raters, n_ratings=len(snap.ratings), positions=dict(snap.positions))


def next_not_done(v: View, start: int) -> str | None:
    """The first image after index ``start``, wrapping around, that the rater has neither labelled nor
    skipped; None when every image is done."""
    n = len(v.images)
    for k in range(1, n + 1):
        p = v.images[(start + k) % n]
        if p not in v.done:
            return p
    return None


def counts_of(v: View) -> dict[str, int]:
    """The rater's ``labelled``, ``skipped``, ``to_go`` and the ``total`` of images; over all raters:
    ``rated_images``, ``ratings`` (repeats included) and ``raters``; the rater's ``repeats``."""
    n_l, n_s = len(v.mine), len(v.skipped)
    return {"labelled": n_l, "skipped": n_s, "to_go": len(v.images) - n_l - n_s, "total": len(v.images),
            "repeats": v.n_my_repeats,
            "rated_images": len(v.labels), "ratings": v.n_ratings, "raters": len(v.raters)}


def progress_line(c: dict[str, int], raters: list[str], rater: str) -> str:
    """``"3 labelled, 1 skipped, 6 to go"`` from :func:`counts_of`, plus the totals over all raters when others
    rated too."""
    text = f"{c['labelled']} labelled, {c['skipped']} skipped, {c['to_go']} to go"
    others = [r for r in raters if r != rater]
    if others:
        text += (f" (you: {rater}; all {c['raters']} raters: {c['rated_images']} images, "
                 f"{c['ratings']} ratings)")
    return text
