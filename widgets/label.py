"""LabelPanel: rate images on a named scale, with autosave, skip, undo, navigation and suggestions.

Every rating is committed to the session's database (``<session>/labels.sqlite``, one transaction per rating;
``labels.csv`` is its export, rewritten at once) before the panel moves on, so closing the browser or restarting
the kernel loses nothing, and several panels (tabs, kernels, people) may rate one session at the same time; a new
panel on ``Session.open(folder)`` resumes where you were.

Who rates: the **Rater** box asks for a name once (it is remembered by the session object; each rating is stored
under it). A rating needs a deliberate choice: on an image you have not rated, the slider starts at
"not rated" and *Save + next* refuses until you pick a level (or type one in the Keys box), so an image can never
be saved with the previous image's value. Now and then (``Session.repeat_share``, default one in ten) the panel
re-shows an image you rated a while ago, looking like a new one: that blind repeat measures how consistently
you rate (test-retest) and never changes the image's label.

Keyboard (what works in JupyterLab 4 with stock ipywidgets 8; each point is exercised by
``tests/test_browser.py`` in JupyterLab 4.6 / Chromium):

* the **"Keys" text box**: click it once, then type a level number and press Enter to rate (``4`` Enter =
  "4 good" on the ACR scale); ``s`` Enter skips, ``u`` Enter undoes, ``p`` Enter goes to the previous image,
  ``n`` Enter to the next one. The box is cleared after each command and keeps the focus, so a series of images
  can be rated without the mouse. The notebook's own command-mode shortcuts do not fire while the focus is in
  the box.
* the **rating slider**: when its handle has the focus (click it or Tab to it), the arrow keys move it (its
  leftmost position is "not rated").
* **buttons**: Tab moves the focus from one to the next, and Space or Enter presses the focused one.

What else the panel shows: the scale's words under the slider's stops (``1 bad`` ... ``5 excellent`` on ACR); a
**Zoom** choice (*fit*: scaled down to the panel; *100 %*: the image's own pixels, scrollable, to judge fine
detail such as noise or slight blur; *200 %*: each pixel as a 2 x 2 square); a progress bar of the images this
rater has rated out of all images of the session. :func:`clipiqa.widgets.review_grid` shows your labels afterwards.

Stock ipywidgets 8 buttons have no access keys, and a panel cannot capture key presses outside its own inputs
without a custom front-end extension, so single-key shortcuts without the text box are not offered.
"""
from __future__ import annotations

import html
import os

import ipywidgets as w

from clipiqa.session import DEFAULT_RATER, Session

from ._common import banner, note, thumbnail_bytes, zoomed_bytes

NOT_RATED = "not rated"
"""The slider's value before a level is chosen (its leftmost position)."""
ZOOMS = (("fit", "fit"), ("100 %", 1), ("200 %", 2))
"""The Zoom choices: scaled down to fit the panel, or the image's own pixels x 1 or x 2 (scrollable)."""
SLIDER_LABEL_PX, READOUT_PX = 56, 110  # fixed, so that the words under the slider line up with its stops


def _two_lines(label: str) -> str:
    """ "5 excellent" as the number over its word (narrow enough for neighbouring stops)."""
    number, _, word = label.partition(" ")
    return html.escape(number) + (f"<br>{html.escape(word)}" if word else "")


def slider_ticks(scale) -> str:
    """HTML of the scale's words placed under the rating slider's stops (its first stop is "not rated"), with the
    style that fixes the slider's label and readout widths (the readout would otherwise resize the track)."""
    n = len(scale.values)  # stops: not rated + n levels, evenly spaced over the track
    ticks = "".join(
        f'<span style="position:absolute;left:{100 * (i + 1) / n:.3f}%;transform:translateX(-50%);'
        f'text-align:center;white-space:nowrap;line-height:1.25"><span style="display:block;width:1px;height:5px;'
        f'margin:0 auto;background:#888"></span>{_two_lines(scale.label(v))}</span>'
        for i, v in enumerate(scale.values))
    edge = "(var(--jp-widgets-slider-handle-size) / 2 - 2 * var(--jp-widgets-slider-border-width))"
    style = (f"<style>.clipiqa-rating-slider .widget-readout{{flex:0 0 {READOUT_PX}px;min-width:{READOUT_PX}px;"
             f"max-width:{READOUT_PX}px}}</style>")
    return (f'{style}<div class="clipiqa-slider-ticks" style="position:relative;height:3.3em;font-size:90%;'
            f'color:#555;margin-left:calc({SLIDER_LABEL_PX}px + 2 * var(--jp-widgets-inline-margin) + {edge});'
            f'margin-right:calc({READOUT_PX}px + var(--jp-widgets-inline-margin) + {edge})">{ticks}</div>')


class LabelPanel(w.VBox):
    """Label the images of a :class:`~clipiqa.session.Session` one by one.

    Methods used from code and tests (the buttons call the same ones): ``rate(score)``, ``skip()``,
    ``undo()``, ``next()``, ``previous()``, ``suggest()``, ``goto(image)``, ``command(text)`` and the
    ``current_path`` property. ``rater_box`` sets ``session.rater`` (Enter); ``slider`` starts at :data:`NOT_RATED`.

    advance: after a rating, go to the next unlabelled image in list order (``"next"``) or to the next
        suggestion of ``Session.suggest_next`` (``"suggest"``).
    """

    def __init__(self, session: Session, max_side: int = 480, advance: str = "next"):
        if advance not in ("next", "suggest"):
            raise ValueError(f"advance={advance!r} is not allowed; use 'next' or 'suggest'")
        self.session = session
        self.max_side = max_side
        self.advance = advance
        scale = session.scale
        self.banner = banner(session.random_init, toy=session.toy)
        self.title = w.HTML()
        self.image = w.Image(format="jpeg", layout=w.Layout(max_width=f"{max_side}px", border="1px solid #ccc"))
        self.viewer = w.Box([self.image])  # scrolls at 100 % / 200 %
        self.zoom = w.ToggleButtons(options=ZOOMS, value="fit",
                                    tooltips=["scaled down to fit the panel", "the image's own pixels (scroll)",
                                              "each pixel as a 2 x 2 square (scroll)"],
                                    style={"button_width": "64px"})
        self.zoom.observe(lambda _: self._safely(self.refresh), names="value")
        options = [(f"- {NOT_RATED} -", NOT_RATED)] + [(scale.label(v), v) for v in scale.values]
        width = f"{max(max_side + 120, 560)}px"  # room for the words under the stops
        self.slider = w.SelectionSlider(options=options, value=NOT_RATED,
                                        description="Rating", continuous_update=False, layout=w.Layout(width=width),
                                        style={"description_width": f"{SLIDER_LABEL_PX}px"})
        self.slider.add_class("clipiqa-rating-slider")
        self.ticks = w.HTML(slider_ticks(scale), layout=w.Layout(width=width))
        self.rater_box = w.Text(value="" if session.rater == DEFAULT_RATER else session.rater,
                                placeholder="your name (asked once)", description="Rater",
                                continuous_update=False, layout=w.Layout(width="260px"))
        self.rater_box.observe(self._on_rater, names="value")
        self.save_button = w.Button(description="Save + next", button_style="primary", icon="check",
                                    tooltip="save the rating (stored at once) and go on")
        self.skip_button = w.Button(description="Skip", icon="forward", tooltip="skip this image")
        self.undo_button = w.Button(description="Undo", icon="undo", tooltip="undo the last rating or skip")
        self.prev_button = w.Button(description="Previous", icon="arrow-left")
        self.next_button = w.Button(description="Next", icon="arrow-right")
        self.suggest_button = w.Button(description="Suggest next", icon="lightbulb-o",
                                       tooltip="jump to the image that helps most: diverse first, then uncertain")
        for b in (self.save_button, self.skip_button, self.undo_button, self.prev_button, self.next_button,
                  self.suggest_button):
            b.layout = w.Layout(width="auto")
        self.save_button.on_click(lambda _: self._safely(self.rate))
        self.skip_button.on_click(lambda _: self._safely(self.skip))
        self.undo_button.on_click(lambda _: self._safely(self.undo))
        self.prev_button.on_click(lambda _: self._safely(self.previous))
        self.next_button.on_click(lambda _: self._safely(self.next))
        self.suggest_button.on_click(lambda _: self._safely(self.suggest))
        levels = ", ".join(f"{v:g}" for v in scale.values)
        self.key_box = w.Text(placeholder=f"keys: {levels} + Enter rates; s skip, u undo, p previous, n next",
                              description="Keys", continuous_update=False,
                              layout=w.Layout(width=f"{max(max_side, 360)}px"))
        self.key_box.observe(self._on_key, names="value")
        self.show_name = w.ToggleButton(value=False, description="show file name", icon="eye",
                                        tooltip="file names can give the answer away (e.g. 'blur_5'), so they "
                                                "are hidden until you have rated the image")
        self.show_name.observe(lambda _: self.refresh(), names="value")
        self.progress = w.IntProgress(min=0, max=max(len(session.images), 1), description="Rated",
                                      bar_style="success", layout=w.Layout(width="220px"),
                                      style={"description_width": "initial"})
        self.count = w.Label()
        self.message = w.HTML()
        self._pending_rater: str | None = None
        self.confirm_rater = w.Button(description="Start as a new rater", icon="user-plus", button_style="warning",
                                      layout=w.Layout(width="auto", display="none"))
        self.confirm_rater.on_click(lambda _: self._safely(lambda: self._set_rater(self._pending_rater)))
        super().__init__(children=[
            self.banner, w.HBox([self.rater_box, self.confirm_rater]), self.title, self.viewer,
            w.HBox([w.Label("Zoom", layout=w.Layout(width=f"{SLIDER_LABEL_PX}px")), self.zoom]),
            self.slider, self.ticks,
            w.HBox([self.save_button, self.skip_button, self.undo_button, self.prev_button, self.next_button,
                    self.suggest_button]),
            self.key_box, w.HBox([self.progress, self.count, self.show_name]), self.message])
        self.add_class("clipiqa-label-panel")
        self.refresh()

    # ------------------------------------------------------------------ actions (buttons, keys and tests)
    @property
    def current_path(self) -> str | None:
        return self.session.current

    def rate(self, score: float | None = None) -> bool:
        """Label the current image (``score`` or the slider's value), save it, and move on. Refused (False, a
        message, nothing written) while the slider is at "not rated", or when several named people rate this
        session and no rater name was given."""
        path = self.session.current
        if score is None and self.slider.value == NOT_RATED:
            self._say("choose a rating first: move the slider to a level, or type one in the Keys box", "warn")
            return False
        if self._needs_name():
            self._say("several people rate this session: type your name in the Rater box first", "warn")
            return False
        score = self.slider.value if score is None else score
        self.session.label(path, score)
        self._say(f"saved {os.path.basename(path)}: {self.session.scale.label(score)}", "ok")
        self._advance()
        return True

    def skip(self) -> None:
        path = self.session.current
        if self._needs_name():
            self._say("several people rate this session: type your name in the Rater box first", "warn")
            return
        self.session.skip(path)
        self._say(f"skipped {os.path.basename(path)}")
        self._advance()

    def undo(self) -> None:
        path = self.session.undo()
        self._say(f"undid the last action on {os.path.basename(path)}" if path else "nothing to undo")
        self.refresh()

    def next(self) -> None:
        self.session.step(+1)
        self.refresh()

    def previous(self) -> None:
        self.session.step(-1)
        self.refresh()

    def suggest(self) -> None:
        """Go to the image ``Session.suggest_next`` ranks first."""
        picks = self.session.suggest_next(1)
        if picks:
            self.session.goto(picks[0])
            self._say(f"suggested: {os.path.basename(picks[0])}")
        else:
            self._say("nothing left to suggest: every image is labelled or skipped")
        self.refresh()

    def goto(self, where: int | str | os.PathLike) -> None:
        """Show an image again (to re-rate it: the latest rating counts): a position (0 = the first), a path, or a
        file name as :func:`clipiqa.widgets.review_grid` shows it."""
        if isinstance(where, str) and os.sep not in where:
            named = [p for p in self.session.images if os.path.basename(p) == where]
            where = named[0] if len(named) == 1 else where
        self.session.goto(where)
        self.refresh()

    def command(self, text: str) -> bool:
        """Run a keyboard command (what the keys box does); returns False for an unknown one."""
        text = text.strip().lower()
        if not text:
            return True
        actions = {"s": self.skip, "u": self.undo, "p": self.previous, "n": self.next, "?": self.suggest}
        if text in actions:
            actions[text]()
            return True
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and value in self.session.scale.values:
            self.rate(value)
            return True
        self._say(f"unknown key {text!r}: type a level ({', '.join(f'{v:g}' for v in self.session.scale.values)}),"
                  " s, u, p or n, then Enter", "warn")
        return False

    # ------------------------------------------------------------------ display
    def refresh(self) -> None:
        """Show the current image; the slider shows this rater's label of it, else "not rated" (also on a blind
        repeat, which looks like an image not rated yet)."""
        s = self.session
        path = s.current
        size, err = self._show_image(path)
        blind = s.repeat_pending == path
        mine = None if blind else s.my_labels.get(path)
        state = (f"labelled <b>{html.escape(s.scale.label(mine))}</b>" if mine is not None
                 else "skipped" if path in s.skipped else "not labelled yet")
        # the name only once this rater has rated the image, or on request: names often say the answer
        name = (f"<b>{html.escape(os.path.basename(path))}</b> &nbsp; " if mine is not None or self.show_name.value
                else "")
        zoom = f" &middot; {size[0]} x {size[1]} px, shown at {self.zoom.label}" if size else ""
        self.title.value = f"{name}image {s.position + 1} of {len(s.images)} &middot; {state}{zoom}"
        self.slider.value = mine if mine is not None and mine in s.scale.values else NOT_RATED
        c = s.counts()
        self.progress.max, self.progress.value = max(c["total"], 1), c["labelled"]
        self.progress.description = f"Rated {c['labelled']} of {c['total']}"
        self.count.value = s.progress_text()
        if err:
            self._say(err, "error")

    def _show_image(self, path: str) -> tuple[tuple[int, int] | None, str]:
        """Put the image in the viewer at the chosen zoom; returns (its own size in pixels when zoomed, else None;
        an error message for an unreadable file)."""
        if self.zoom.value == "fit":
            data, err = thumbnail_bytes(path, self.max_side)
            self.viewer.layout = w.Layout()
            self.image.layout = w.Layout(max_width=f"{self.max_side}px", border="1px solid #ccc")
            self.image.format, self.image.value = "jpeg", data
            return None, err
        data, fmt, (width, height), err = zoomed_bytes(path, self.zoom.value)
        side = f"{max(self.max_side, 360)}px"
        self.viewer.layout = w.Layout(overflow="auto", max_width=side, max_height=side, border="1px solid #ccc")
        self.image.layout = w.Layout(width=f"{width}px", height=f"{height}px", max_width="none", flex="0 0 auto")
        self.image.format, self.image.value = fmt, data
        return (width // self.zoom.value, height // self.zoom.value), err

    def _needs_name(self) -> bool:
        s = self.session
        return s.rater == DEFAULT_RATER and any(r != DEFAULT_RATER for r in s.raters)

    def _advance(self) -> None:
        s = self.session
        target = s.advance("suggest" if self.advance == "suggest" else "next")
        if target is None:
            self._say("every image is labelled or skipped: well done. Labels are in " + str(s.labels_path), "ok")
        self.refresh()

    def _on_rater(self, change) -> None:
        name = change["new"].strip()
        if not name:
            return
        known = [r for r in self.session.raters if r != DEFAULT_RATER]
        if known and name not in known:
            # a new name where others rate: often a typo, or a name typed after the prefilled one
            self._pending_rater = name
            self.confirm_rater.layout.display = None
            self._say(f"{name!r} has not rated here yet (raters: {', '.join(known)}): click 'Start as a new "
                      "rater' (everything to rate), or correct the name", "warn")
            return
        self._set_rater(name)

    def _set_rater(self, name: str | None) -> None:
        if not name:
            return
        self._pending_rater = None
        self.confirm_rater.layout.display = "none"
        try:
            self.session.rater = name
        except ValueError as e:
            self._say(str(e), "error")
            return
        self._say(f"rating as {name}", "ok")
        self.refresh()

    def _say(self, text: str, kind: str = "info") -> None:
        self.message.value = note(text, kind)

    def _safely(self, action) -> None:
        try:
            action()
        except Exception as e:  # a failed write or a bad file must show up in the panel, not vanish
            self._say(f"{type(e).__name__}: {e}", "error")

    def _on_key(self, change) -> None:
        text = change["new"]
        if not text:
            return
        self._safely(lambda: self.command(text))
        self.key_box.value = ""
