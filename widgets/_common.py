"""Small helpers shared by the panels: the random-init banner, image thumbnails and figure rendering.

Figures are drawn with ``matplotlib.figure.Figure`` (no pyplot, no global backend state) and shipped to the
browser as PNG bytes in an ``ipywidgets.Image``. Setting a widget's ``value`` is a trait update, which syncs
from any thread; printing or ``display`` into an ``Output`` widget from a training thread does not route
reliably with ipykernel 7 (ipywidgets issue #4001), so the panels never do that.
"""
from __future__ import annotations

import html
import io
import os
import threading
from typing import Callable

import ipywidgets as w
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from clipiqa.caveats import RANDOM_INIT, TOY, caveat_for, caveat_of
from clipiqa.imageio import ImageLoadError, load_image

from ._events import wait_serving_events



def caveat_text(random_init: bool, toy: bool = False) -> str:
    """What every panel and figure made with this model must say: random init, toy, or '' (real weights);
    :func:`clipiqa.caveats.caveat_for`'s text."""
    return caveat_for(random_init, toy).text


def model_caveat(model) -> str:
    """:func:`caveat_text` of a loaded model (``IQAModel``: ``random_init`` and ``source.toy``)."""
    return caveat_of(model).text

NOTE_STYLE = "padding:4px 8px;margin:2px 0;border-radius:4px;"


def banner(random_init: bool, extra: str = "", toy: bool = False) -> w.HTML:
    """A visible warning when the model has random-init weights or is the lesson toy (empty otherwise)."""
    b = w.HTML()
    set_banner(b, random_init, extra, toy)
    return b


def set_banner(widget: w.HTML, random_init: bool, extra: str = "", toy: bool = False) -> None:
    tail = f" {html.escape(extra)}" if extra else ""
    if toy and not random_init:
        widget.value = (f'<div class="clipiqa-toy" style="{NOTE_STYLE}background:#eef4fb;border:1px solid #31708f;'
                        f'color:#1f4e6b"><b>&#9888; {html.escape(TOY.text)}</b>.{tail}</div>')
        return
    if not random_init:
        widget.value = ""
        return
    widget.value = (f'<div class="clipiqa-random-init" style="{NOTE_STYLE}background:#fff3cd;'
                    f'border:1px solid #d39e00;color:#6b4f00"><b>&#9888; {html.escape(RANDOM_INIT.text)}</b>'
                    f' (the <code>tiny</code> smoke-test model: it shows that the machinery runs, never that '
                    f'a method works).{tail}</div>')


def note(text: str, kind: str = "info") -> str:
    """An HTML note; ``kind`` is info, ok, warn or error."""
    colours = {"info": ("#eef4fb", "#31708f"), "ok": ("#e9f6ec", "#276738"),
               "warn": ("#fff3cd", "#6b4f00"), "error": ("#fbeaea", "#a12a2a")}
    bg, fg = colours.get(kind, colours["info"])
    return f'<div style="{NOTE_STYLE}background:{bg};color:{fg}">{html.escape(text)}</div>'


def thumbnail_bytes(path: str | os.PathLike, max_side: int = 480) -> tuple[bytes, str]:
    """JPEG bytes of a downscaled copy of an image file (EXIF-rotated, RGB); a file that cannot be read gives
    a grey placeholder. Returns ``(bytes, error_message)``."""
    try:
        im = load_image(path, max_side=max_side)
        err = ""
    except (ImageLoadError, OSError) as e:
        im, err = Image.new("RGB", (max_side, max_side * 3 // 4), (200, 200, 200)), str(e)
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=88)
    return buf.getvalue(), err


LOSSLESS_UP_TO = 8_000_000
"""Zoomed views of images up to this many shown pixels are sent as PNG (every pixel as it is); larger ones as JPEG
at quality 95 (a 12 MP photo as PNG would be tens of MB through the kernel's websocket)."""


def zoomed_bytes(path: str | os.PathLike, factor: int = 1) -> tuple[bytes, str, tuple[int, int], str]:
    """The image at ``factor`` x its native pixels (nearest neighbour, so each pixel stays a crisp square).
    Returns ``(bytes, format, (width, height) shown, error_message)``; an unreadable file gives a placeholder."""
    try:
        im = load_image(path, max_side=None)
        err = ""
    except (ImageLoadError, OSError) as e:
        im, err = Image.new("RGB", (320, 240), (200, 200, 200)), str(e)
    if factor != 1:
        im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    fmt = "png" if im.width * im.height <= LOSSLESS_UP_TO else "jpeg"
    im.save(buf, format=fmt.upper(), **({"quality": 95} if fmt == "jpeg" else {}))
    return buf.getvalue(), fmt, im.size, err


def array_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def figure_png(draw: Callable, figsize=(8, 3), dpi: int = 80) -> bytes:
    """Render ``draw(fig)`` on a fresh Agg figure and return PNG bytes (thread-safe: no pyplot)."""
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def integer_ticks(*axes, axis: str = "x") -> None:
    """Ticks at whole numbers only on an axis that counts something (steps, epochs, splits, levels)."""
    for ax in axes:
        getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def table_html(df, float_format: str = "{:.3f}", caption: str = "") -> str:
    """A DataFrame as a compact HTML table."""
    styled = df.to_html(index=False, float_format=float_format.format, border=0, classes="clipiqa-table",
                        na_rep="")
    cap = f"<div style='font-size:90%;color:#555'>{html.escape(caption)}</div>" if caption else ""
    css = ("<style>.clipiqa-table td,.clipiqa-table th{padding:2px 8px;text-align:right}"
           ".clipiqa-table{border-collapse:collapse}.clipiqa-table tr:nth-child(even){background:#f6f6f6}</style>")
    return css + styled + cap


class BackgroundRun:
    """Mixin for panels that work in a background thread: the thread, its status text, ``running``.

    The thread only updates widget values (trait updates sync from any thread); it never prints into an Output
    widget, whose routing from threads changed in ipykernel 7 (ipywidgets #4001)."""

    _status: str = "idle"
    _thread = None

    @property
    def status(self) -> str:
        return self._status

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _launch(self, work: Callable, name: str, block: bool, *args):
        """Run ``work(*args)`` on a daemon thread; with ``block``, wait for it and raise the error it recorded
        (``self.error``) or return ``self.wait()``'s result. A blocking wait inside a notebook keeps serving the
        panel's buttons (Stop works during Run All; see ``_events``)."""
        self._thread = threading.Thread(target=work, args=args, daemon=True, name=name)
        self._thread.start()
        if not block:
            return None
        wait_serving_events(lambda: not self.running, self._join)
        result = self.wait()
        if self.error is not None:
            raise self.error
        return result

    def _join(self, timeout: float | None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
