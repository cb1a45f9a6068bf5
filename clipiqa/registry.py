"""One registry for everything chosen by name: evaluation arms (:data:`clipiqa.protocol.METHODS`) and attribution
methods (:data:`clipiqa.explain.ATTRIBUTION_METHODS`).

A :class:`Registry` is a plain ``dict`` of name -> entry (so ``name in R``, ``R[name]``, ``R.values()`` work as
usual) that refuses to register a name twice by accident and whose :meth:`Registry.get_or_explain` names every
choice when a name is unknown.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """Named entries of one kind; ``kind`` ("method", "attribution method") words the error messages."""

    def __init__(self, kind: str, describe: Callable[[T], str] | None = None):
        super().__init__()
        self.kind = kind
        self._describe = describe

    def add(self, name: str, entry: T, replace: bool = False) -> T:
        """Register ``entry`` under ``name``; a second entry of the same name needs ``replace=True``."""
        if name in self and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to redefine it")
        self[name] = entry
        return entry

    def listing(self) -> str:
        if self._describe is None:
            return ", ".join(self)
        return "; ".join(f"{name}: {self._describe(entry)}" for name, entry in self.items())

    def get_or_explain(self, name: str) -> T:
        """The entry called ``name``, or a ``ValueError`` that lists every registered choice."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; use one of: {self.listing()}")
        return self[name]

    def unknown(self, names) -> list[str]:
        """The names of ``names`` that are not registered, in order."""
        return [n for n in names if n not in self]
