"""The ``lesson`` model: a small open_clip CLIP trained here, by our own code, on synthetic distortions.

It is a **toy**: it shows that the toolkit's machinery learns (zero-shot antonym prompts that rank distortion
levels, adaptation that helps), never how real CLIP behaves. Read top to bottom:

1. ``LessonRecipe`` (:mod:`.recipe`): the training recipe, stored in ``clipiqa/presets/lesson.json`` (with the
   held-out lists).
2. Contents (:mod:`.batches`): crops of the embedded demo photos and procedural images
   (``clipiqa.data.procedural``), made and distorted at the model's own input size (64 px, patch 8), so the
   tower sees blur and noise pixel for pixel.
3. Captions about quality first (:mod:`.captions`): the zero-shot strings themselves ("Good photo." / "Bad
   photo.", "high quality." / "low quality."), graded by severity, and "a very blurry photo." / "a slightly noisy
   photo." / "a clean photo."
4. ``train_lesson`` (:mod:`.training`): contrastive training with open_clip's own ``ClipLoss`` on batches
   generated on the fly. Each batch holds groups of variants of one crop (clean, slightly noisy, very blurry,
   ...), so captions that differ only in their quality words are each other's hard negatives. Deterministic
   from the seed.
5. Storage (:mod:`.storage`): only what training changed (every tensor but the untouched rows of the 49408-row
   token embedding, which stay the seeded init), in float16, with the SHA-256 of the whole assembled state.
   Committed as ``clipiqa/presets/lesson.safetensors``; when it is missing or stale (the recipe changed), built
   on first use into ``$CLIPIQA_CACHE/lesson-<config hash>/`` (default ``~/.cache/clipiqa``) under a file lock.
6. ``zero_shot_table``, ``scene_report`` and ``lesson_report`` (:mod:`.evaluation`): the frozen model's
   antonym-prompt margin on distorted held-out contents and its scene teacher on the demo set (what the tests,
   the README and the notebooks quote, computed).

``python -m clipiqa.lesson build [--out FILE]`` (:mod:`.__main__`) trains and writes the weights (to refresh the
committed file).
"""
from __future__ import annotations

from ..data.demo import PHOTOS
from ..data.distortions import DISTORTIONS
from .batches import Content, photo_contents, procedural_contents, random_crop, sample_batch
from .captions import (ANTONYMS, CLASS_CAPTIONS, CLEAN_WORDS, P_GOOD, PHOTO_PHRASES, PHOTO_SCENES, SEVERITY,
                       TYPE_WORDS, content_caption, quality_caption)
from .evaluation import (CONTENT_ETA2_BAR, ENTROPY_BAR, LEVEL_ETA2_BAR, VISIBLE, WEAK_HELD_OUT_TYPES, WEAK_SRCC,
                         eta_squared, held_out_images, lesson_image_size, lesson_report, model_image_size,
                         normalised_entropy, report_lines, scene_report, teacher_scene_logits, write_lesson_set,
                         zero_shot_by_type, zero_shot_margins, zero_shot_pooled, zero_shot_table)
from .recipe import CAPTION_MODES, FORMAT, LessonRecipe, config_hash
from .storage import (WEIGHTS_NAME, StaleWeightsError, apply_delta, build_weights, cache_path, cache_root,
                      committed_path, delta_tensors, load_lesson, read_weights, state_sha256, tqdm_progress,
                      write_weights)
from .training import (TOKEN_EMBEDDING, Progress, create_clip, deterministic_torch, round_to_store_dtype, to_batch,
                       train_lesson)

__all__ = [
    "PHOTOS", "DISTORTIONS",  # the content and distortion tables the recipe draws from (tests check its lists)
    "Content", "photo_contents", "procedural_contents", "random_crop", "sample_batch",
    "ANTONYMS", "CLASS_CAPTIONS", "CLEAN_WORDS", "P_GOOD", "PHOTO_PHRASES", "PHOTO_SCENES", "SEVERITY",
    "TYPE_WORDS", "content_caption", "quality_caption",
    "CONTENT_ETA2_BAR", "ENTROPY_BAR", "LEVEL_ETA2_BAR", "VISIBLE", "WEAK_HELD_OUT_TYPES", "WEAK_SRCC",
    "eta_squared", "held_out_images", "lesson_image_size", "lesson_report", "model_image_size",
    "normalised_entropy", "report_lines", "scene_report", "teacher_scene_logits", "write_lesson_set",
    "zero_shot_by_type", "zero_shot_margins", "zero_shot_pooled", "zero_shot_table",
    "CAPTION_MODES", "FORMAT", "LessonRecipe", "config_hash",
    "WEIGHTS_NAME", "StaleWeightsError", "apply_delta", "build_weights", "cache_path", "cache_root",
    "committed_path", "delta_tensors", "load_lesson", "read_weights", "state_sha256", "tqdm_progress",
    "write_weights",
    "TOKEN_EMBEDDING", "Progress", "create_clip", "deterministic_torch", "round_to_store_dtype", "to_batch",
    "train_lesson",
]
