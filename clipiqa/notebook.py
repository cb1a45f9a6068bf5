"""What the guided notebooks need beyond the API: short messages for user errors, and the lesson figures that
would otherwise be plotting code in a notebook cell.

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

Lesson figures: :func:`plot_meta_history` and :func:`meta_selection_text` (notebook 06).

What every notebook shares instead of pasting it: :func:`settings`, what the ``SMOKE`` switch of a parameters
cell implies (model, weights, device, sizes, work folder), and :func:`say_if_random_init`, the caveat line under
numbers from random-init weights or the lesson toy.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Iterable, Mapping, NamedTuple

from .caveats import RANDOM_INIT, caveat_for, caveat_of

__all__ = ["UserError", "USER_ERRORS", "install", "short_errors", "short_traceback", "full_traceback", "set_short_errors",
           "plot_meta_history", "meta_selection_text", "caveat", "say_if_random_init", "Settings", "settings",
           "DEMO_TYPES", "say_model", "STAND_IN", "stand_in", "image_folder"]

USER_ERRORS = (
    "clipiqa.weights:WeightsUnavailableError",
    "clipiqa.zoo:UnsupportedModelError",
    "clipiqa.zoo:UnknownModelError",
    "clipiqa.checkpoint:CheckpointMismatchError",
    "clipiqa.checkpoint:CheckpointCorruptError",
    "clipiqa.imageio:ImageLoadError",
    "clipiqa.data.readers:DatasetFormatError",
    "clipiqa.labelstore:LabelNotSaved",
    "clipiqa.zeroshot:ZeroShotOnlyError",
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


# --------------------------------------------------------------------------------------------- what it is
def caveat(obj) -> str:
    """What a figure or printout made with ``obj`` (an ``IQAModel`` or a ``Session``) must say: the random-init
    warning, the lesson toy's caveat, or '' for real weights (:func:`clipiqa.caveats.caveat_of`, its text)."""
    return caveat_of(obj).text


def say_if_random_init(model) -> None:
    """Print the caveat of ``model`` (an ``IQAModel`` or a ``Session``) under a notebook cell's numbers: random-init
    weights or the lesson toy, and how to get real numbers; nothing for real weights."""
    if caveat(model):
        print(f"⚠ {caveat(model)}. Set SMOKE = False for real numbers.")


def say_model(model) -> None:
    """Print the weights line of ``model`` (which model, weights file or hub repository, fingerprint, device,
    precision; :func:`clipiqa.weights.weights_line`) and its caveat: what a notebook shows once its model is
    loaded, in smoke and in real mode alike."""
    from .weights import weights_line
    print(weights_line(model))
    say_if_random_init(model)


# --------------------------------------------------------------------------------------------- parameters cell
DEMO_TYPES = ["gaussian_blur", "white_noise", "jpeg"]
"""The distortions of the embedded demo set the notebooks use."""


class Settings(NamedTuple):
    """What a notebook's ``SMOKE`` switch implies, in the order its parameters cell unpacks them."""

    rehearsal: bool
    """CI's dress rehearsal of the real path (``CLIPIQA_REHEARSAL=1``, real mode only): small sizes."""
    model: str
    """``lesson`` in smoke mode, else ``$CLIPIQA_MODEL`` or ``DEFAULT_MODEL`` (``vitb16-openai``) (any model: ``clipiqa models``)."""
    weights: str | None
    """Real runs without model-hub access: a local weights file/folder (or set ``CLIPIQA_WEIGHTS``); None here."""
    device: str
    """``$CLIPIQA_DEVICE``, else ``cpu`` in smoke mode and ``auto`` (CUDA when present, else CPU) in real mode."""
    demo_limit: int | None
    """CI rehearsal: at most this many demo images per table; None otherwise."""
    work: str
    """Sessions and results, next to the notebook: ``clipiqa-work/smoke`` in smoke mode, else ``clipiqa-work``."""
    demo_types: list[str]
    """Distortions of the embedded demo set."""
    size: int
    """Side of the demo images in pixels: 64 in smoke mode (the lesson model sees 64 px), else 224."""


def settings(smoke: bool, environ: Mapping[str, str] | None = None) -> Settings:
    """What follows from a notebook's ``SMOKE`` switch (``True``: the lesson toy model and the embedded demo photos
    at 64 px on the CPU; ``False``: real weights on a GPU when there is one), reading ``CLIPIQA_REHEARSAL``,
    ``CLIPIQA_MODEL`` and ``CLIPIQA_DEVICE`` from ``environ`` (default ``os.environ``)."""
    from .presets import DEFAULT_MODEL  # here: clipiqa.session imports this module, and presets reads package files
    env = os.environ if environ is None else environ
    smoke = bool(smoke)
    rehearsal = not smoke and env.get("CLIPIQA_REHEARSAL") == "1"
    return Settings(
        rehearsal=rehearsal,
        model="lesson" if smoke else env.get("CLIPIQA_MODEL", DEFAULT_MODEL),
        weights=None,
        device=env.get("CLIPIQA_DEVICE") or ("cpu" if smoke else "auto"),
        demo_limit=16 if rehearsal else None,
        work="clipiqa-work/smoke" if smoke else "clipiqa-work",
        demo_types=list(DEMO_TYPES),
        size=64 if smoke else 224,
    )


STAND_IN = "stand-in"
"""The rater name of smoke mode's stand-in ratings (synthetic severity): never a person's name, so a person who
skips the Rater box does not find its ratings as their own."""


@contextmanager
def stand_in(session):
    """Rate as :data:`STAND_IN` inside the block (``session.rater`` is restored after): what the notebooks' stand-in
    rater cells use."""
    previous = session.rater
    session.rater = STAND_IN
    try:
        yield STAND_IN
    finally:
        session.rater = previous


def image_folder(path):
    """A parameters cell's image folder, checked where it is typed: None stays None (the demo photos); a folder
    that does not exist, or holds no image, is refused by name (``~`` expanded), so a typo fails here and not as
    a one-image session three cells later. Returns the absolute folder."""
    if path is None:
        return None
    from .session.files import image_rows
    image_rows(path)  # the Session's own rules: missing -> FileNotFoundError, no image -> ValueError
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


# --------------------------------------------------------------------------------------------- lesson figures
def meta_selection_text(history) -> str:
    """What the selection of a meta pre-training run means, in words (epoch 0 is the starting point), ending with
    the run's own note when the selected init is the untouched start or moved less than 1 % from it (the same
    words as ``clipiqa pretrain`` prints and the best/ card holds)."""
    from .meta.loop import selection_note  # torch: this helper runs after the notebook has trained anyway
    epoch, score = history.best_epoch, history.best_score
    if epoch is None or score is None:
        return "no held-out evaluation gave a finite SRCC: best/ is the last state"
    text = f"best/ = the parameters after epoch {epoch} (held-out SRCC {score:.3f})"
    if epoch == 0:
        text = (f"best/ = the starting parameters (epoch 0 is the evaluation before any meta step; held-out SRCC "
                f"{score:.3f}): no meta epoch scored higher on the held-out tasks, so the selected init is the "
                "initial one. The run's last state is in last/")
    if history.rel_move is not None:
        text += f"; the meta parameters moved {100 * history.rel_move:.3g} % of their norm over the run"
    step = getattr(history, "best_meta_step", None)
    selected = [row.get("rel_move") for row in history.evals
                if row.get("epoch") == epoch and step in (None, row.get("meta_step"))]
    note = selection_note(epoch, selected[-1] if selected else None)
    return f"{text}. NOTE: {note}" if note else text


def plot_meta_history(history, random_init: bool = False, fig=None, model=None):
    """Held-out SRCC per epoch (at the meta init and after the inner adaptation steps, mean over the held-out
    tasks, epoch 0 = before any meta step, the selected epoch marked) and, when the records have it, how far the
    meta parameters moved (``rel_move``, per meta step, in % on an axis from 0 to at least 1 %: a 0.1 % move looks
    as small as it is). Draws on ``fig`` (e.g. ``plt.figure()`` in a notebook, so that it shows inline), else on a
    new bare ``matplotlib.figure.Figure``; returns the figure. ``model``: its :func:`caveat` (toy, random init)
    goes on the figure; without it, ``random_init`` marks random-init weights."""
    # imported here: clipiqa.session imports this module for the error rendering, and matplotlib alone took
    # 1.3 s to import on the 2-core CI machine; only notebook 06 draws this figure
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    evals = pd.DataFrame(history.evals)
    steps = pd.DataFrame(history.steps)
    has_move = "rel_move" in steps and steps["rel_move"].notna().any()
    if fig is None:
        fig = Figure(figsize=(10 if has_move else 6, 3.4), layout="constrained")
    axes = fig.subplots(1, 2 if has_move else 1, squeeze=False)[0]
    ax = axes[0]
    names = {"srcc_init": "at the meta init (no adaptation)", "srcc_adapted": "after the inner steps"}
    if len(evals):
        by_epoch = evals.groupby("epoch")[[c for c in names if c in evals]].mean()
        for column, label in names.items():
            if column in by_epoch:
                ax.plot(by_epoch.index, by_epoch[column], marker="o", label=label)
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch, color="grey", ls="--", lw=1, label=f"selected (epoch {history.best_epoch})")
        ax.legend(fontsize=8, loc="best")
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("epoch (0 = before any meta step)")
    ax.set_ylabel("held-out SRCC (mean over tasks)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("held-out source tasks", fontsize=10)
    if has_move:
        ax2 = axes[1]
        x = steps["meta_step"] if "meta_step" in steps else range(1, len(steps) + 1)
        moved = 100 * steps["rel_move"]
        ax2.plot(x, moved, marker="o" if len(steps) < 30 else None)
        ax2.set_ylim(0, max(1.0, 1.15 * float(moved.max())))  # from 0: the axis does not blow up a small move
        ax2.annotate(f"{float(moved.iloc[-1]):.2g} %", (list(x)[-1], float(moved.iloc[-1])), xytext=(0, 5),
                     textcoords="offset points", ha="center", fontsize=8)
        ax2.set_xlabel("meta step")
        ax2.set_ylabel("|θ - θ0| / |θ0|  (%)")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_title("how far the meta parameters moved", fontsize=10)
    note = caveat_of(model) if model is not None else caveat_for(random_init)
    if note:
        fig.suptitle(note.text, color="red" if note == RANDOM_INIT else "#a15c00", fontsize=9)
    return fig
