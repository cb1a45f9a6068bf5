"""Where a Session object is in its image list: the current image, moving through the list (``goto``, ``step``,
``advance``) and the blind repeat ``advance`` chose. Each rater's position is saved in the database for
resuming."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..labelstore import LabelNotSaved
from .state import SessionState
from .suggest import pick_repeat
from .view import next_not_done


class Navigator:
    """The image list and this object's place in it. ``suggest(k)`` gives the images to label next (the
    Session's :class:`~clipiqa.session.suggestions.Suggestions`), for ``advance(strategy="suggest")``."""

    def __init__(self, state: SessionState, suggest: Callable[[int], list[str]]):
        self.state = state
        self._suggest = suggest
        view = state.view()
        where = view.positions.get(state.rater)
        self._current = where if where in view.index else view.images[0]
        self._repeat_pending: str | None = None

    @property
    def images(self) -> list[str]:
        """The session's images in order (read-only: add images with ``Session(folder, images=[...])``)."""
        return self.state.view().images

    @property
    def content_ids(self) -> dict[str, str]:
        """Per image, its content group (images of the same scene share one; splits keep a group together)."""
        return self.state.view().content_ids

    @property
    def current(self) -> str | None:
        """The image shown now."""
        return self._current

    @property
    def position(self) -> int:
        """The index of the current image in :attr:`images`."""
        return self.state.view().index[self._current]

    @property
    def repeat_pending(self) -> str | None:
        """The image :meth:`advance` chose as a blind repeat (its next rating is stored as a repeat)."""
        return self._repeat_pending if self._repeat_pending == self._current else None

    def forget_repeat(self) -> None:
        """Drop the pending blind repeat (it was rated, skipped, or the rater changed)."""
        self._repeat_pending = None

    def resolve(self, path: str | os.PathLike | None) -> str:
        """The session's name of ``path`` (None: the current image); a KeyError when it is not one of its images."""
        if path is None:
            return self._current
        p = os.fspath(path)
        cached = self.state.cached_view()
        if cached is not None and p in cached.index:  # images are only ever added: a cached hit stays valid
            return p
        index = self.state.view().index
        if p in index:
            return p
        absolute = os.path.abspath(p)
        if absolute not in index:
            raise KeyError(f"{p} is not one of this session's {len(index)} images; add it with "
                           "Session(folder, images=[...])")
        return absolute

    def go(self, path: str, repeat: bool = False) -> str:
        """Make ``path`` current (a blind repeat when ``repeat``) and save the rater's position."""
        self._current = path
        self._repeat_pending = path if repeat else None
        try:  # where this rater is, for resuming; best effort (a full disk must not stop browsing)
            self.state.store.set_position(self.state.rater, path)
        except LabelNotSaved:
            pass
        return path

    def goto(self, where: int | str | os.PathLike) -> str:
        """Make an image current (by index or path); returns its path. The position is saved."""
        with self.state.lock:
            if isinstance(where, (int, np.integer)):
                images = self.images
                if not 0 <= int(where) < len(images):
                    raise IndexError(f"image index {where} outside 0..{len(images) - 1}")
                return self.go(images[int(where)])
            return self.go(self.resolve(where))

    def step(self, delta: int) -> str:
        """Move ``delta`` images forward (negative: back), clamped to the ends."""
        return self.goto(min(max(self.position + delta, 0), len(self.images) - 1))

    def is_done(self, path: str) -> bool:
        """True when this rater labelled or skipped ``path``."""
        return path in self.state.view().done

    def next_unlabelled(self, after: int | None = None) -> str | None:
        """The first image after ``after`` (default: the current one), wrapping around, that this rater has
        neither labelled nor skipped (other writers' ratings count as soon as they are committed); None when
        every image is done."""
        return next_not_done(self.state.view(), self.position if after is None else after)

    def advance(self, strategy: str = "next") -> str | None:
        """Go to what this rater should rate next; returns it, or None (and stays) when every image is done.

        Usually the next unlabelled image (``strategy="next"``: list order; ``"suggest"``: the first of
        :meth:`suggest_next`). With probability :attr:`repeat_share` it is instead a **blind repeat**: an image
        the rater labelled at least ``REPEAT_GAP`` labels ago (:func:`pick_repeat`); its rating is stored as a
        repeat (test-retest) and never enters the MOS. The label panel shows a repeat like a new image.
        """
        if strategy not in ("next", "suggest"):
            raise ValueError(f"strategy={strategy!r} is not allowed; use 'next' or 'suggest'")
        with self.state.lock:
            target = self.next_unlabelled()
            if target is None:
                return None
            v = self.state.view()
            repeat = pick_repeat(v.my_order, v.my_repeats, v.n_my_ratings, self.state.repeat_share, self.state.rater)
            if repeat is not None:
                return self.go(repeat, repeat=True)
            if strategy == "suggest":
                target = (self._suggest(1) or [target])[0]
            return self.go(target)


__all__ = ["Navigator"]
