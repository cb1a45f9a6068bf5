"""What the guided notebooks share beyond the API, one job per module:

* :mod:`.errors`: errors a user can act on shown as one short message (:func:`short_errors`, the explicit switch
  every notebook's parameters cell calls; :class:`UserError`; :func:`full_traceback`);
* :mod:`.parameters`: what the ``SMOKE`` switch of a parameters cell implies (:func:`settings`), the stand-in rater
  of smoke mode (:func:`stand_in`) and the image folder check (:func:`image_folder`);
* :mod:`.printouts`: what a notebook prints about its model (:func:`say_model`, :func:`say_if_random_init`,
  :func:`caveat`, the words from :mod:`clipiqa.caveats`);
* :mod:`.meta_figures`: notebook 06's figure and words (:func:`plot_meta_history`, :func:`meta_selection_text`).

Notebooks import every name from here: ``from clipiqa.notebook import settings, short_errors, say_model``.
"""
from __future__ import annotations

from .errors import (HINT, USER_ERRORS, UserError, full_traceback, install, set_short_errors, short_errors,
                     short_traceback)
from .meta_figures import meta_selection_text, plot_meta_history
from .parameters import DEMO_TYPES, STAND_IN, Settings, image_folder, settings, stand_in
from .printouts import caveat, say_if_random_init, say_model

__all__ = ["UserError", "USER_ERRORS", "HINT", "install", "short_errors", "short_traceback", "full_traceback",
           "set_short_errors", "plot_meta_history", "meta_selection_text", "caveat", "say_if_random_init",
           "Settings", "settings", "DEMO_TYPES", "say_model", "STAND_IN", "stand_in", "image_folder"]
