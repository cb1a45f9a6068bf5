"""Short notebook messages for errors a user can act on.

Errors a user can act on are shown in a notebook as one short message instead of a stack.

Some failures are not bugs but a state of the user's machine or data: no weights and no model hub, a checkpoint
made for another backbone, an unreadable image, a label file in the wrong format, too few labels. Their message
already says what to do; the 30-line traceback IPython prints above it only hides that message. IPython asks an
exception for ``_render_traceback_()`` before formatting a stack (``InteractiveShell.showtraceback``); once
:func:`short_errors` has run, :class:`UserError` and the classes in :data:`USER_ERRORS` answer with two lines: the
message and how to see the full traceback.

The switch is explicit: importing clipiqa (or any of its modules) changes no exception class; every notebook's
parameters cell calls :func:`short_errors`, so a notebook says what it changes in IPython's error display, and
a user's own kernel keeps IPython's tracebacks until it asks.

* :func:`short_errors`: the switch (``short_errors(False)``: full tracebacks again);
* :class:`UserError`: a mixin for such errors (``class MyError(UserError, ValueError)``);
* :func:`full_traceback`: prints the full traceback of the last error in this kernel;
* ``CLIPIQA_TRACEBACK=full`` in the environment: full tracebacks even after :func:`short_errors`.

Outside IPython nothing changes: Python's own traceback printing never calls ``_render_traceback_``.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Iterable

__all__ = ["HINT", "USER_ERRORS", "UserError", "full_traceback", "install", "set_short_errors", "short_errors",
           "short_traceback"]

USER_ERRORS = (
    "clipiqa.weights:WeightsUnavailableError",
    "clipiqa.zoo:UnsupportedModelError",
    "clipiqa.zoo:UnknownModelError",
    "clipiqa.checkpoint:CheckpointMismatchError",
    "clipiqa.checkpoint:CheckpointCorruptError",
    "clipiqa.imageio:ImageLoadError",
    "clipiqa.data.readers:DatasetFormatError",
    "clipiqa.labelstore:LabelNotSaved",
    "clipiqa.clip_iqa_rn50:FrozenOnlyError",
    "clipiqa.extras:MissingExtraError",
    "clipiqa.lesson:StaleWeightsError",
)
"""``module:Class`` of the clipiqa errors whose message is the whole story (subclasses included)."""

HINT = "full traceback: clipiqa.notebook.full_traceback()"
_short = {"on": os.environ.get("CLIPIQA_TRACEBACK", "").lower() != "full"}


def set_short_errors(on: bool) -> None:
    """Short messages (True, the default) or IPython's full tracebacks (False) for user errors."""
    _short["on"] = bool(on)


def short_traceback(exc: BaseException) -> list[str]:
    """What a notebook shows for a user error: ``Name: message`` (red name, every line of the message) and a
    dimmed hint line. With short errors off, the usual full traceback lines."""
    if not _short["on"]:
        return traceback.format_exception(type(exc), exc, exc.__traceback__)
    message = str(exc).splitlines() or [""]
    lines = [f"\x1b[1;31m{type(exc).__name__}\x1b[0m: {message[0]}", *message[1:]]
    return lines + [f"\x1b[2m({HINT})\x1b[0m"]


def _render(self) -> list[str]:
    return short_traceback(self)


class UserError(Exception):
    """Mixin: an error whose message tells the user what to do; after :func:`short_errors`, notebooks show only
    that message."""


def install(names: Iterable[str] = USER_ERRORS) -> list[type]:
    """Give :class:`UserError` and each ``module:Class`` in ``names`` the short notebook rendering; returns the
    classes done (what :func:`short_errors` calls). A module that cannot be imported is left out (its error cannot
    occur then)."""
    done = [UserError]
    UserError._render_traceback_ = _render
    for name in names:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue
        if "_render_traceback_" not in cls.__dict__:
            cls._render_traceback_ = _render
        done.append(cls)
    return done


def short_errors(on: bool = True) -> None:
    """What every notebook's parameters cell calls: clipiqa's user errors (no weights, a model name that does not
    exist, a bad image, too few labels, ...) show as one short message from the first cell on (``on=False``: full
    tracebacks). Explicit, so that a notebook says what it changes in IPython's error display: importing clipiqa
    changes no exception class."""
    install()
    set_short_errors(on)


def full_traceback(exc: BaseException | None = None) -> None:
    """Print the full traceback of ``exc`` (default: the last error raised in this IPython kernel)."""
    exc = exc if exc is not None else getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if exc is None:
        print("no error so far in this kernel")
        return
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stdout)
