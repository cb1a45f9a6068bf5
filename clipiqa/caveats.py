"""What every output made with random-init weights or the lesson toy says about them: the one source of those
words (docs/design.md, 'The lesson toy').

A model whose numbers mean nothing (random-init weights: the ``tiny`` preset, smoke runs) or little (the
``lesson`` toy, trained by clipiqa on synthetic distortions) must say so wherever its numbers are shown: CLI lines,
notebook printouts, figures, widget banners, result tables, checkpoint cards and ONNX scorers. Each place asks
:func:`caveat_of` (or :func:`caveat_for` with the two flags) and shows one of the :class:`Caveat`'s two forms:

* ``label``, the short form, in brackets after a model's name or at the end of a line:
  ``tiny [random init: meaningless]``;
* ``text``, the sentence under numbers, in banners and on figures:
  ``random-init weights: scores are meaningless``.

:meth:`Caveat.then` adds what follows for one output (``random-init weights: scores are meaningless; the numbers
show that the pipeline runs, not that a method works``), so that the caveat's own words stay the same everywhere.
Real weights give :data:`NO_CAVEAT`, which is falsy and shows as "".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Caveat:
    """What outputs made with a model must say about its weights ("" for real pretrained weights)."""

    kind: str
    """``"random-init"``, ``"toy"`` or ``""`` (real weights)."""
    label: str
    """The short form, for brackets after a model's name: ``random init: meaningless``."""
    text: str
    """The sentence under numbers, in banners and on figures: ``random-init weights: scores are meaningless``."""

    def __bool__(self) -> bool:
        return bool(self.kind)

    def __str__(self) -> str:
        return self.text

    def then(self, consequence: str) -> str:
        """The caveat's text and what follows from it for one output ("" for real weights)."""
        return f"{self.text}; {consequence}" if self else ""

    def bracket(self) -> str:
        """`` [label]`` to append to a model's name or a line ("" for real weights)."""
        return f" [{self.label}]" if self else ""


RANDOM_INIT = Caveat("random-init", "random init: meaningless", "random-init weights: scores are meaningless")
TOY = Caveat("toy", "toy model trained on synthetic distortions",
             "toy model trained on synthetic distortions (lesson): it shows that the machinery learns, never how "
             "real CLIP behaves")
NO_CAVEAT = Caveat("", "", "")


def caveat_for(random_init: bool, toy: bool = False) -> Caveat:
    """The caveat of weights that are random-init (first) or the lesson toy, else :data:`NO_CAVEAT`."""
    return RANDOM_INIT if random_init else TOY if toy else NO_CAVEAT


class CaveatOfWeights:
    """Mixin of records that say ``random_init`` and ``toy`` about their weights (a ``Preset``, a ``ModelSource``):
    their :attr:`caveat` and its short :attr:`label` ('' for real pretrained weights)."""

    random_init: bool
    toy: bool

    @property
    def caveat(self) -> Caveat:
        """What every output made with these weights must say: random init, toy, or nothing (real weights)."""
        return caveat_for(self.random_init, self.toy)

    @property
    def label(self) -> str:
        """The short form of :attr:`caveat` ('' for real pretrained weights)."""
        return self.caveat.label


def caveat_of(obj: Any) -> Caveat:
    """The caveat of ``obj``: anything that says ``random_init`` and ``toy`` about its weights, itself or through
    its ``source`` (an ``IQAModel`` and its ``ModelSource``, a ``Session``, a ``Preset``, a result); None gives
    :data:`NO_CAVEAT`."""
    if obj is None:
        return NO_CAVEAT
    if isinstance(obj, Caveat):
        return obj
    source = getattr(obj, "source", None)
    random_init = getattr(obj, "random_init", None)
    if random_init is None:
        random_init = getattr(source, "random_init", False)
    toy = getattr(obj, "toy", None)
    if toy is None:
        toy = getattr(source, "toy", False)
    return caveat_for(bool(random_init), bool(toy))


def caveat_from_text(text: str) -> Caveat:
    """The caveat a shown text (its ``text`` or ``label``) stands for, e.g. a table's ``note`` column read back;
    :data:`NO_CAVEAT` for anything else."""
    for caveat in (RANDOM_INIT, TOY):
        if text in (caveat.text, caveat.label):
            return caveat
    return NO_CAVEAT


__all__ = ["Caveat", "NO_CAVEAT", "RANDOM_INIT", "TOY", "caveat_for", "caveat_from_text", "caveat_of"]
