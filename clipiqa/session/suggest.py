"""Which image a rater sees next: farthest-point picks on zero-shot CLIP embeddings while few images are
labelled, then the most uncertain ones (rules in the :mod:`clipiqa.session` docstring), and the blind repeats
mixed in for test-retest."""
from __future__ import annotations

import random
from typing import Callable, Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..imageio import ImageLoadError, load_image
from ..inference import autocast_for, evaluating, predict_features

DIVERSE_UNTIL = 10
REPEAT_GAP = 10  # a blind repeat is of an image labelled at least this many labels ago
STRATEGIES = ("auto", "diverse", "uncertain")


def pick_repeat(rated: Sequence[str], repeated: Collection[str], n_ratings: int, share: float, rater: str,
                gap: int = REPEAT_GAP) -> str | None:
    """The image to re-show blind now, or None (test-retest).

    rated: the images the rater has labelled, oldest label first; repeated: those already repeated;
    n_ratings: how many ratings the rater has given (repeats included). A draw seeded by ``(rater,
    n_ratings)`` (so the same history gives the same answer) says yes with probability ``share``; then one of
    the images labelled at least ``gap`` labels ago and not repeated yet is picked (a repeat must not be
    recognisable from the last few images).
    """
    if share <= 0 or len(rated) <= gap:
        return None
    rng = random.Random(f"{rater}\0{n_ratings}")
    if rng.random() >= share:
        return None
    eligible = [p for p in rated[:len(rated) - gap] if p not in repeated]
    return rng.choice(eligible) if eligible else None


def encode_zero_shot(model, paths: Sequence[str], features: dict[str, np.ndarray], zero_shot: dict[str, float],
                     bad_images: dict[str, str], batch_size: int = 32) -> None:
    """Fill the caches of zero-shot normalised features (``features``) and zero-shot logit margins
    (``zero_shot``) for ``paths``; an image that does not load goes to ``bad_images`` with the reason."""
    todo = [p for p in paths if p not in features and p not in bad_images]
    if not todo:
        return
    with model.adapters_off():  # zero-shot: the backbone's own preprocessing
        preprocess = model.preprocess
    for i in range(0, len(todo), batch_size):
        chunk, batch = [], []
        for p in todo[i:i + batch_size]:
            try:
                batch.append(preprocess(load_image(p)))
                chunk.append(p)
            except (ImageLoadError, OSError, ValueError) as e:
                bad_images[p] = str(e)
        if not batch:
            continue
        with evaluating(model), model.adapters_off():
            with autocast_for(model.device):
                feats = model.encode_image(torch.stack(batch).to(model.device))
            margins = predict_features(model, feats).margin.cpu().tolist()
            feats = F.normalize(feats.float(), dim=-1).cpu().numpy()
        for p, f, m in zip(chunk, feats, margins):
            features[p] = f
            zero_shot[p] = float(m)  # zero-shot logit margin (0 = undecided)


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not allowed; use 'auto', 'diverse' or 'uncertain'")


def n_diverse(k: int, n_labelled: int, diverse_until: int, strategy: str) -> int:
    """How many of ``k`` picks are diverse: all (``"diverse"``), none (``"uncertain"``), or (``"auto"``) as many
    as bring the labels up to ``diverse_until``."""
    return k if strategy == "diverse" else 0 if strategy == "uncertain" else \
        max(0, min(k, diverse_until - n_labelled))


def suggest(candidates: list[str], labelled: list[str], features: dict[str, np.ndarray],
            zero_shot: dict[str, float], order: Sequence[str], k: int, diverse_until: int, strategy: str,
            adapted_scores: Callable[[list[str]], dict[str, float]] | None = None) -> list[str]:
    """Up to ``k`` of ``candidates`` (images with cached features only), best first: diverse picks, then the
    most uncertain. ``adapted_scores``: the adapted model's margins of a list of images, or None before any
    adaptation; ``order`` (the session's image list) breaks ties."""
    candidates = [p for p in candidates if p in features]
    picks: list[str] = []
    n = n_diverse(k, len(labelled), diverse_until, strategy)
    if n:
        picks += farthest_points(features, candidates, [p for p in labelled if p in features], n)
    rest = [p for p in candidates if p not in picks]
    if len(picks) < k and rest:
        adapted = adapted_scores(rest) if adapted_scores is not None else None
        picks += most_uncertain(rest, k - len(picks), zero_shot, order, adapted)
    return picks


def farthest_points(features: dict[str, np.ndarray], candidates: list[str], anchors: list[str], n: int
                    ) -> list[str]:
    """``n`` candidates by farthest-point sampling on normalised features: each the one whose largest cosine
    similarity to the anchors and earlier picks is smallest; with no anchors the first is the most typical."""
    feats = np.stack([features[p] for p in candidates])
    picks: list[int] = []
    if anchors:
        best_sim = (feats @ np.stack([features[p] for p in anchors]).T).max(axis=1)
    else:
        centre = feats.mean(axis=0)
        first = int(np.argmax(feats @ centre))
        picks.append(first)
        best_sim = feats @ feats[first]
    while len(picks) < min(n, len(candidates)):
        masked = best_sim.copy()
        masked[picks] = np.inf
        nxt = int(np.argmin(masked))
        picks.append(nxt)
        best_sim = np.maximum(best_sim, feats @ feats[nxt])
    return [candidates[i] for i in picks[:n]]


def most_uncertain(candidates: list[str], n: int, zero_shot: dict[str, float], order: Sequence[str],
                   adapted: dict[str, float] | None = None) -> list[str]:
    """The ``n`` candidates where the adapted and zero-shot margins disagree most (``adapted`` given), else
    those whose zero-shot margin is closest to 0; ties in ``order``."""
    if adapted is not None:
        key = {p: -abs(adapted.get(p, zero_shot[p]) - zero_shot[p]) for p in candidates}
    else:
        key = {p: abs(zero_shot[p]) for p in candidates}  # margin closest to 0 = p_high closest to 0.5
    order = list(order)
    return sorted(candidates, key=lambda p: (key[p], order.index(p)))[:n]
