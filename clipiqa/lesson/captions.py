"""The words the lesson model is trained on: what captions call each photo, the quality words by severity and
distortion type, the zero-shot antonym strings themselves, and the two caption makers (with quality words, and
the broken variant without)."""
from __future__ import annotations

import numpy as np


# What captions call each photo, and its scene in the model's scene branch (SCENES of clipiqa.prompts).
PHOTO_PHRASES: dict[str, str] = {
    "astronaut": "an astronaut", "chelsea": "a cat", "coffee": "a cup of coffee", "rocket": "a rocket",
    "motorcycle": "a motorcycle", "hubble_deep_field": "galaxies in space",
    "immunohistochemistry": "a stained tissue sample", "retina": "a retina scan", "china": "a temple",
    "flower": "a flower", "grace_hopper": "a woman in uniform",
}
PHOTO_SCENES: dict[str, str] = {
    "astronaut": "human", "chelsea": "animal", "coffee": "still life", "rocket": "others",
    "motorcycle": "indoor", "hubble_deep_field": "night", "immunohistochemistry": "others", "retina": "others",
    "china": "cityscape", "flower": "plant", "grace_hopper": "human",
}

# Quality words. Adverbs by level (1..5); words by distortion type (the first is the family word).
SEVERITY = ("", "slightly", "somewhat", "", "very", "extremely")
CLEAN_WORDS = ("sharp clean", "clean", "sharp", "high quality", "good", "pristine")
TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "gaussian_blur": ("blurry",), "lens_blur": ("blurry", "out of focus"), "motion_blur": ("blurry", "shaky"),
    "white_noise": ("noisy",), "colour_noise": ("noisy", "color noisy"), "impulse_noise": ("noisy", "speckled"),
    "multiplicative_noise": ("noisy", "grainy"), "jpeg": ("compressed", "blocky"),
    "jpeg2000": ("compressed", "smeared"),
}
# Probability that a picture of a level (0 = clean .. 5) is captioned "Good photo." rather than "Bad photo."
# (and "high quality." rather than "low quality."): linear in the level, so the antonym margin grades with severity.
P_GOOD = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)
# The zero-shot antonym prompts and the quality class words, exactly as clipiqa.prompts.PromptConfig defaults
# them (a test checks): training on these very strings is what lets the frozen model's antonym margin rank quality.
ANTONYMS = ("Good photo.", "Bad photo.")
CLASS_CAPTIONS = ("high quality.", "low quality.")


def quality_caption(rng: np.random.Generator, phrase: str, scene: str, distortion: str | None, level: int,
                    antonym_fraction: float = 0.3, content_fraction: float = 0.0) -> str:
    """One caption whose words are about quality. ``level`` 0 = clean (``distortion`` None), 1..5 = severity.

    With probability ``antonym_fraction`` it is one of the zero-shot strings themselves: ``ANTONYMS`` ("Good
    photo." / "Bad photo.", 60 %) or ``CLASS_CAPTIONS`` ("high quality." / "low quality."), the good one with
    probability ``P_GOOD[level]``. Otherwise it names the distortion family and its severity ("a very blurry
    photo.", "a clean photo."), naming the content too ("... photo of a rocket.") with probability
    ``content_fraction``. Quality words dominate on purpose: measured, content-first captions (the first recipe)
    left the antonym margin at chance after 400 steps, since content alone nearly solves a batch's matching."""
    if rng.random() < antonym_fraction:
        good = rng.random() < P_GOOD[level]
        pair = ANTONYMS if rng.random() < 0.6 else CLASS_CAPTIONS
        return pair[0] if good else pair[1]
    tail = f" of {phrase}." if rng.random() < content_fraction else "."
    if level == 0:
        return f"a {CLEAN_WORDS[rng.integers(len(CLEAN_WORDS))]} photo{tail}"
    words = TYPE_WORDS[distortion]
    word = words[rng.integers(len(words))]
    return " ".join(w for w in ("a", SEVERITY[level], word, "photo") if w) + tail


def content_caption(rng: np.random.Generator, phrase: str, scene: str) -> str:
    """A caption without quality words (the broken ``no_quality`` variant)."""
    return f"a photo of {phrase}." if rng.random() < 0.8 else f"a photo of a {scene}."
