"""The ratings of a Session: what the database holds (everyone's labels and their MOS, this rater's labels and
skips, counts, every rating and the human ceiling they give) and what this object adds to it: a rating, a skip,
and the undo of its own."""
from __future__ import annotations

import os

import pandas as pd

from ..agreement import human_ceiling
from ..data import read_labels
from .navigator import Navigator
from .state import SessionState
from .view import counts_of, progress_line

EMPTY_COLUMNS = ["path", "mos", "q", "mos_std", "content_id", "distortion", "level"]


class Ratings:
    """Reads and writes the ratings of the Session's rater; moves the :class:`Navigator` on an undo."""

    def __init__(self, state: SessionState, navigator: Navigator):
        self.state = state
        self.navigator = navigator
        self._undoable: dict[str, list[tuple[str, int]]] = {}  # per rater: this object's ratings and skips

    # ------------------------------------------------------------------ what the database says now
    @property
    def labels(self) -> dict[str, dict]:
        """Per labelled image, over all raters: ``score`` (the MOS), ``mos_std`` (None for one rater),
        ``n_ratings``, ``content_id``."""
        return self.state.view().labels

    @property
    def my_labels(self) -> dict[str, float]:
        """This rater's label (latest non-repeat rating) per image they rated."""
        return self.state.view().mine

    @property
    def skipped(self) -> list[str]:
        """The images this rater skipped (and has not labelled since), in skip order."""
        return self.state.view().skipped

    @property
    def raters(self) -> list[str]:
        """Everyone who rated or skipped in this session."""
        return self.state.view().raters

    def counts(self) -> dict[str, int]:
        """This rater's ``labelled``, ``skipped``, ``to_go`` and the ``total`` of images; over all raters:
        ``rated_images``, ``ratings`` (repeats included) and ``raters``; this rater's ``repeats``."""
        return counts_of(self.state.view())

    def progress_text(self) -> str:
        """``"3 labelled, 1 skipped, 6 to go"``, with the totals over all raters when others rated too."""
        return progress_line(self.counts(), self.raters, self.state.rater)

    def ratings(self, include_undone: bool = False) -> pd.DataFrame:
        """Every rating, oldest first: ``id, image, rater, score, scale, time, is_repeat, undone``."""
        return self.state.store.ratings_table(include_undone)

    def agreement(self, n_boot: int = 1000, seed: int = 0):
        """The human ceiling of these ratings (inter-rater split-half SRCC with Spearman-Brown, test-retest
        SRCC of the blind repeats, bootstrap CIs): a :class:`clipiqa.agreement.Ceiling`."""
        return human_ceiling(self.ratings(), n_boot=n_boot, seed=seed)

    def labelled_table(self) -> pd.DataFrame:
        """The labels as the common table (``path, mos, q, mos_std, content_id, ...``): the labels.csv export,
        rewritten from the database now and read back with ``clipiqa.data.read_labels`` on this session's
        scale (so what is on disk is what trains). ``mos`` is the mean over raters."""
        scale = self.state.scale
        if not self.labels:
            df = pd.DataFrame(columns=EMPTY_COLUMNS)
            df.attrs.update(score_range=scale.range, dataset="custom")
            return df
        self.state.store.export()
        df = read_labels(self.state.labels_path, score_range=scale.range, higher_better=scale.higher_better)
        df.attrs["scale"] = scale.name
        return df

    # ------------------------------------------------------------------ what this object adds
    def label(self, path: str | os.PathLike | None, score: float, *, repeat: bool | None = None) -> None:
        """Rate ``path`` (None = the current image) with ``score`` on the session's scale, as :attr:`rater`.

        The rating is committed to the database (and the labels.csv export rewritten) when this returns; if the
        write fails nothing is stored and the error (:class:`~clipiqa.labelstore.LabelNotSaved`) propagates.
        repeat: store it as a blind repeat (default: when ``path`` is the repeat :meth:`advance` chose).
        """
        state, nav = self.state, self.navigator
        score = state.scale.check(score)
        with state.lock:
            p = nav.resolve(path)
            is_repeat = (p == nav.repeat_pending) if repeat is None else bool(repeat)
            if is_repeat and p not in self.my_labels:
                raise ValueError(f"{os.path.basename(p)} has no earlier rating by {state.rater!r} to repeat")
            row = state.store.add_rating(p, state.rater, score, state.scale.name, repeat=is_repeat)
            self._undoable.setdefault(state.rater, []).append(("rating", row))
            if is_repeat:
                nav.forget_repeat()

    def skip(self, path: str | os.PathLike | None = None) -> None:
        """Mark ``path`` (None = the current image) as skipped by this rater: not labelled, not suggested
        again. Skipping a blind repeat just passes it over."""
        state, nav = self.state, self.navigator
        with state.lock:
            p = nav.resolve(path)
            if p == nav.repeat_pending:
                nav.forget_repeat()
                return
            if p in self.skipped:
                return
            row = state.store.add_skip(p, state.rater)
            self._undoable.setdefault(state.rater, []).append(("skip", row))

    def undo(self) -> str | None:
        """Take back the last rating or skip made through this object as :attr:`rater` (a tombstone in the
        database); returns its image (now current) or None when there is nothing to undo.

        Only this object's own: another Session object, tab, kernel or process rating under the same name
        keeps its ratings, and a Session opened anew starts with nothing to undo."""
        with self.state.lock:
            mine, done = self._undoable.get(self.state.rater, []), None
            while mine and done is None:
                kind, row = mine[-1]
                done = self.state.store.undo(kind, row)
                mine.pop()  # after the undo committed (a failed one raises and keeps it)
            if done is None:
                return None
            return self.navigator.go(done.path, repeat=done.is_repeat)


__all__ = ["Ratings"]
