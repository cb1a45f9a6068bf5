"""A review grid of one rater's labels: thumbnails grouped by rating, best level first, each with its file name
(shown now that rating is done) so that a slip (a blurred photo rated "5 excellent") stands out."""
from __future__ import annotations

import base64
import html
import os

import ipywidgets as w
import pandas as pd

from clipiqa.session import DEFAULT_RATER, Session

from ._common import note, thumbnail_bytes


def rater_labels(session: Session, rater: str | None = None) -> dict[str, float]:
    """``{image path: score}`` of one rater (default: the session's current rater): each image's latest rating
    that is not a blind repeat, as the session counts labels."""
    if rater is None or rater == session.rater:
        return dict(session.my_labels)
    table = session.ratings()
    table = table[(table["rater"] == rater) & ~table["is_repeat"]]
    return {str(p): float(s) for p, s in table.groupby("image", sort=False)["score"].last().items()}


def review_table(session: Session, rater: str | None = None) -> pd.DataFrame:
    """One row per image the rater labelled: ``path, name, score, level`` (the scale's words), best level first,
    then in session order."""
    labels = rater_labels(session, rater)
    order = {p: i for i, p in enumerate(session.images)}
    rows = [{"path": p, "name": os.path.basename(p), "score": s, "level": session.scale.label(s),
             "position": order.get(p, len(order))} for p, s in labels.items()]
    table = pd.DataFrame(rows, columns=["path", "name", "score", "level", "position"])
    best_first = not session.scale.higher_better
    table = table.sort_values(["score", "position"], ascending=[best_first, True], kind="stable")
    return table.drop(columns="position").reset_index(drop=True)


def _tile(path: str, thumb: int) -> str:
    data, _ = thumbnail_bytes(path, thumb)
    src = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    name = html.escape(os.path.basename(path))
    return (f'<figure class="clipiqa-review-tile" style="margin:0 6px 6px 0;width:{thumb}px">'
            f'<img src="{src}" alt="{name}" style="max-width:{thumb}px;max-height:{thumb}px;display:block;'
            f'border:1px solid #ccc"><figcaption style="font-size:80%;overflow-wrap:anywhere">{name}'
            f'</figcaption></figure>')


def review_grid(session: Session, rater: str | None = None, thumb: int = 112) -> w.HTML:
    """Thumbnails of the images ``rater`` (default: the session's current rater) labelled, one row of tiles per
    rating level, best level first, each tile with its file name. Skipped images are counted, not shown."""
    who = rater or session.rater
    table = review_table(session, rater)
    if table.empty:
        by = "you" if who == DEFAULT_RATER else who
        return w.HTML(note(f"no labels by {by} yet: rate images in the labelling panel, then run this cell again"))
    by = "you (no name typed in the Rater box)" if who == DEFAULT_RATER else who
    parts = [f"<div><b>Labels by {html.escape(by)}</b>: {len(table)} of {len(session.images)} images"
             + (f", {len(session.skipped)} skipped" if who == session.rater and session.skipped else "") + "</div>"]
    for level, group in table.groupby("level", sort=False):
        tiles = "".join(_tile(p, thumb) for p in group["path"])
        parts.append(f'<div class="clipiqa-review-level" style="margin-top:6px"><b>{html.escape(level)}</b> '
                     f'({len(group)})<div style="display:flex;flex-wrap:wrap;align-items:flex-start">{tiles}'
                     f"</div></div>")
    grid = w.HTML("".join(parts))
    grid.add_class("clipiqa-review-grid")
    return grid
