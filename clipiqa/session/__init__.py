"""A labelling-and-adaptation session persisted in one folder (docs/design.md, 'Labels and sessions').

``Session(folder, images)`` holds an image set, the labels given so far, the settings, the model (loaded
lazily) and the checkpoints made from the labels. Everything lives under ``folder/``::

    labels.sqlite        the images and every rating (image, rater, score, scale, time, repeat flag), skips and
                         each rater's position: SQLite in WAL mode, one transaction per rating (clipiqa.labelstore)
    labels.csv           the export, per image: path, mos, mos_std, n_ratings, content_id (read it with
                         clipiqa.data.read_labels(csv, score_range=...)); rewritten after every rating
    settings.json        rating scale, model preset/weights/device, active checkpoint, repeat_share
    checkpoints/<name>/  adapter.safetensors + card.json + history.json, one per adaptation

Any number of Sessions, kernels and processes may rate one folder at once and lose nothing: a rating is a row
inserted in its own transaction, never a rewrite of a file from one object's memory, and every view of a Session
(images, labels, counts, next unlabelled image, labelled table) is read from the database. Files are written
atomically (temporary file, fsync, ``os.replace``). ``Session.open(folder)`` resumes ratings, position and
settings; a format-1 folder (``labels.csv`` as ``path,score,content_id`` with ``state.json``) is migrated on first
use without losing a label (its labels.csv is kept as ``labels-format1.csv``).

Several raters: each Session rates as its :attr:`Session.rater` (the label panel asks for the name once). A
rater's label of an image is their latest rating of it; the MOS is the mean over raters. ``advance`` mixes in
blind repeats (``repeat_share``, default 0.1) for test-retest; ``Session.agreement()`` gives the human ceiling
(:mod:`clipiqa.agreement`). Undo takes back only what this Session object did (its rater's last rating or
skip); another tab or process rating under the same name keeps its ratings.

What to label next (``suggest_next``), documented because it decides which labels you spend time on:

1. **diversity first**: while fewer than ``diverse_until`` (default 10) images are labelled, pick by
   farthest-point sampling on the L2-normalised zero-shot CLIP image embeddings: the unlabelled image whose
   largest cosine similarity to any labelled (or already suggested) image is smallest. With nothing labelled,
   the first pick is the image closest to the mean embedding (a typical image).
2. **then uncertainty**: once an adapted checkpoint is active, the images where the adapted score and the
   zero-shot score disagree most; before that, the images whose zero-shot score is closest to 0.5 (where
   CLIP's good/bad prompts are least decided).

With random-init weights (the ``tiny`` preset) embeddings and scores are meaningless, so the suggestions are an
arbitrary but deterministic order; the machinery is the same.

The package: :mod:`.facade` (``Session``, the one entry, composed of the parts below), its parts
:mod:`.state` (the folder, label store, settings and rater they share), :mod:`.navigator` (the image list and
where this object is in it), :mod:`.ratings` (labels, counts, agreement; label, skip, undo), :mod:`.models` (the
model, scoring, checkpoints) and :mod:`.suggestions` (what to label next), and the plain functions they use:
:mod:`.scale` (rating scales), :mod:`.files` (the folder's files, settings, rater checks), :mod:`.migrate`
(format 1 -> database), :mod:`.recover` (a lost database rebuilt from labels.csv), :mod:`.view` (one rater's
view of the database), :mod:`.suggest` (the suggestion rules, blind repeats) and :mod:`.checkpoints`
(adaptation checkpoints).
"""
from __future__ import annotations

from ..labelstore import LabelNotSaved, LabelStoreUnusable
from .checkpoints import NotEnoughLabelsError
from .facade import Session
from .recover import RECOVERED_RATER, LabelsRecovered
from .scale import ACR, Scale, as_scale
from .files import DEFAULT_RATER, REPEAT_SHARE, atomic_write_text, check_rater
from .suggest import DIVERSE_UNTIL, REPEAT_GAP, pick_repeat

__all__ = ["Session", "Scale", "ACR", "as_scale", "atomic_write_text", "DIVERSE_UNTIL",
           "DEFAULT_RATER", "REPEAT_SHARE", "REPEAT_GAP", "check_rater", "pick_repeat", "LabelNotSaved",
           "LabelStoreUnusable", "LabelsRecovered", "RECOVERED_RATER", "NotEnoughLabelsError"]
