"""The ``lesson`` preset: a toy CLIP trained here on synthetic distortions, whose zero-shot prompts do rank quality.

Numbers from it are real but toy: they show that the machinery learns, never how real CLIP behaves.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import clipiqa
from clipiqa import lesson
from clipiqa.data.procedural import KINDS, procedural_image
from clipiqa.metrics import chance_band, srcc
from clipiqa.caveats import TOY
from clipiqa.presets import PRESETS

TOY_LABEL = TOY.label

ZERO_SHOT_BAR = 0.6
"""Measured with the committed weights: pooled SRCC 0.70 on 121 held-out images (chance band +-0.18; per type
gaussian_blur 0.68, white_noise 0.73). With the scene loss strong enough to pull every image onto its scene's
caption (weight 0.4-1.0, smoothing 0.05-0.15) it fell to -0.07-0.04; the recipe before scene captions with broken
``no_quality`` captions (same steps): -0.035 (per type -0.224 / 0.125), far below the bar."""
PRESET = PRESETS["lesson"]
RECIPE = lesson.LessonRecipe.from_dict(PRESET.lesson)


def _small_recipe(**changes) -> lesson.LessonRecipe:
    """A few-step version of the real recipe: same code path, seconds instead of minutes."""
    base = dict(PRESET.lesson, steps=3, groups=2, variants=2, procedural_instances=1, warmup=1,
                train_photos=["rocket"], train_kinds=["stripes"])
    base.update(changes)
    return lesson.LessonRecipe.from_dict(base)


SMALL_CFG = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 32, "head_width": 32},
             "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1}}


@pytest.fixture(scope="session")
def lesson_model():
    """One load of the lesson model for the whole session (committed weights; built into the user cache when
    they are missing or stale: the first test then waits for the build)."""
    return clipiqa.load_model("lesson", device="cpu")


# ------------------------------------------------------------------------------------------ preset and labels
def test_preset_is_a_toy_with_disjoint_held_out_lists():
    assert PRESET.toy and not PRESET.random_init and PRESET.label == TOY_LABEL
    assert TOY_LABEL in PRESET.description.lower()
    assert set(RECIPE.pretrain_types).isdisjoint(RECIPE.heldout_types)
    assert set(RECIPE.train_photos).isdisjoint(RECIPE.heldout_photos)
    assert set(RECIPE.train_kinds).isdisjoint(RECIPE.heldout_kinds)
    assert RECIPE.heldout_types and RECIPE.heldout_photos and RECIPE.heldout_kinds
    # every distortion type and content is either seen in pre-training or held out
    assert set(RECIPE.pretrain_types) | set(RECIPE.heldout_types) == set(lesson.DISTORTIONS)
    assert set(RECIPE.train_photos) | set(RECIPE.heldout_photos) == set(lesson.PHOTOS)
    assert set(RECIPE.train_kinds) | set(RECIPE.heldout_kinds) == set(KINDS)


def test_models_command_lists_lesson_with_its_description(capsys):
    from clipiqa.cli import main
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("lesson "))
    assert TOY_LABEL in line and "synthetic distortions" in line


def test_recipe_errors_name_the_field():
    with pytest.raises(ValueError, match=r"LessonRecipe.heldout_types=.*also in pretrain_types"):
        _small_recipe(heldout_types=["jpeg", *RECIPE.heldout_types], pretrain_types=["jpeg"])
    with pytest.raises(ValueError, match=r"LessonRecipe.captions='nonsense'"):
        _small_recipe(captions="nonsense")
    with pytest.raises(ValueError, match=r"LessonRecipe.steps=0"):
        _small_recipe(steps=0)


# ----------------------------------------------------------------------------------------- loading offline
def test_load_model_lesson_works_offline_and_is_labelled_toy(lesson_model, monkeypatch):
    assert lesson_model.source.toy and not lesson_model.random_init
    assert lesson_model.source.label == TOY_LABEL
    assert lesson_model.source.card()["label"] == TOY_LABEL and lesson_model.source.card()["toy"] is True
    assert lesson_model.source.weights.startswith("lesson:")
    assert lesson_model.source.extra["lesson"]["heldout_types"] == list(RECIPE.heldout_types)

    def refuse(*args, **kwargs):
        raise OSError("network refused by the test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    again = clipiqa.load_model("lesson", device="cpu")
    assert again.source.fingerprint == lesson_model.source.fingerprint


def test_committed_weights_are_small_and_current():
    path = lesson.committed_path()
    assert path.is_file(), "clipiqa/presets/lesson.safetensors is missing: run `python -m clipiqa.lesson build`"
    assert path.stat().st_size < 2_000_000
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["config_hash"] == lesson.config_hash(PRESET.model_cfg, RECIPE), (
        "the lesson recipe or model config changed: rebuild with `python -m clipiqa.lesson build`")


def test_rebuild_command_names_the_committed_config(capsys):
    """``python -m clipiqa.lesson hash`` (the entry that also runs ``build``) prints the committed file's hash."""
    from clipiqa.lesson.__main__ import _main
    assert _main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == lesson.config_hash(PRESET.model_cfg, RECIPE)


def test_cli_notes_the_toy_model(lesson_model, capsys):
    from clipiqa.cli import random_init_warning
    random_init_warning(lesson_model)
    err = capsys.readouterr().err
    assert TOY_LABEL in err and "random-init" not in err


# --------------------------------------------------------------------------------------------- zero-shot
def zero_shot_on_held_out_contents(model) -> tuple[float, dict[str, float], int]:
    """Pooled SRCC of the antonym margin against -level, per-type SRCC (the type's rows and the references), and
    n; contents never seen in training (3 photos, 4 evaluation instances of the 2 held-out kinds), the
    pre-training types, levels 0-5, images made at the model's input size."""
    table = lesson.zero_shot_table(model, photos=RECIPE.heldout_photos, kinds=RECIPE.heldout_kinds,
                                   types=RECIPE.pretrain_types, instances=4)
    per_type = {t: srcc(part["margin"], -part["level"])
                for t in RECIPE.pretrain_types
                for part in [table[(table["distortion"] == t) | (table["level"] == 0)]]}
    return srcc(table["margin"], -table["level"]), per_type, len(table)


def as_model(clip):
    """A trained (or untrained) lesson CLIP as an IQAModel with the default prompts, like ``load_model``."""
    import open_clip
    from clipiqa.model import IQAModel
    from clipiqa.prompts import PromptConfig
    source = clipiqa.weights.ModelSource(preset="lesson-variant", arch=PRESET.arch, weights="variant",
                                         random_init=False, model_cfg=PRESET.model_cfg,
                                         preprocess_cfg=dict(open_clip.get_model_preprocess_cfg(clip)), toy=True)
    return IQAModel(clip, open_clip.get_tokenizer(PRESET.arch, context_length=clip.context_length), source,
                    PromptConfig())


def scene_failures(report: dict) -> list[str]:
    """Which of the scene teacher's bars a ``scene_report`` misses (empty: it knows its scenes)."""
    out = []
    if not report["entropy"] <= lesson.ENTROPY_BAR:
        out.append(f"entropy {report['entropy']:.3f} > {lesson.ENTROPY_BAR}")
    if not report["content_eta2"] >= lesson.CONTENT_ETA2_BAR:
        out.append(f"content eta2 {report['content_eta2']:.3f} < {lesson.CONTENT_ETA2_BAR}")
    if not report["level_eta2"] <= lesson.LEVEL_ETA2_BAR:
        out.append(f"level eta2 {report['level_eta2']:.3f} > {lesson.LEVEL_ETA2_BAR}")
    return out


def test_zero_shot_ranks_quality_on_held_out_contents(lesson_model):
    """Frozen model, antonym prompts ("Good photo." / "Bad photo."), logit margin, one inference path."""
    rho, per_type, n = zero_shot_on_held_out_contents(lesson_model)
    band = chance_band(n)
    assert rho >= ZERO_SHOT_BAR, f"zero-shot SRCC {rho:.3f} on {n} images (chance band +-{band:.3f}), {per_type}"
    assert rho > 2 * band
    assert all(r > band for r in per_type.values()), per_type


# ------------------------------------------------------------------------------------------------- scenes
def test_scene_measures_on_known_logits():
    assert lesson.normalised_entropy(np.zeros((2, 9))) == pytest.approx([1.0, 1.0])
    assert lesson.normalised_entropy(np.array([[100.0] + [0.0] * 8])) == pytest.approx([0.0], abs=1e-30)
    rng = np.random.default_rng(0)
    by_group = np.repeat(rng.normal(size=(3, 9)), 4, axis=0)  # 3 groups of 4 identical rows
    groups = np.repeat(["a", "b", "c"], 4)
    assert lesson.eta_squared(by_group, groups) == pytest.approx(1.0)
    assert lesson.eta_squared(by_group + 7.0 * rng.normal(size=(12, 1)), groups) == pytest.approx(1.0)  # shifts
    assert lesson.eta_squared(by_group, np.tile(["x", "y", "z", "w"], 3)) == pytest.approx(0.0, abs=1e-12)


def test_teacher_knows_its_scenes_on_the_demo_set(lesson_model):
    """The frozen model's scene distribution (the teacher QGR distils) on the notebooks' demo set: confident,
    set by the content, hardly moved by the distortion level."""
    report = lesson.scene_report(lesson_model)
    assert report["n"] == 11 * (1 + 3 * 5)
    assert not scene_failures(report), report


def test_weak_held_out_types_are_visible_and_weak_for_zero_shot(lesson_model):
    """The documented held-out types where labels have something to teach: zero-shot is weak on held-out
    contents, yet the distortion shows at 64 px."""
    assert set(lesson.WEAK_HELD_OUT_TYPES) <= set(RECIPE.heldout_types)
    table = lesson.zero_shot_by_type(lesson_model, RECIPE.heldout_photos, RECIPE.heldout_kinds,
                                     lesson.WEAK_HELD_OUT_TYPES)
    assert (table["visible"] >= lesson.VISIBLE).all(), table
    assert (table["srcc"] < lesson.WEAK_SRCC).all(), table


def test_lesson_report_computes_the_quoted_numbers(lesson_model):
    report = lesson.lesson_report(lesson_model, held_out_types=lesson.WEAK_HELD_OUT_TYPES)
    assert report["zero_shot"]["srcc"] >= ZERO_SHOT_BAR and report["zero_shot"]["n"] == 121
    assert report["weak_types"] == list(lesson.WEAK_HELD_OUT_TYPES)
    assert report["scene"]["passes"] == (not scene_failures(report["scene"]))
    lines = lesson.report_lines(report)
    assert len(lines) == 3 and all(line.startswith("toy model") for line in lines)
    assert f"{report['scene']['entropy']:.2f}" in lines[0] and f"{report['zero_shot']['srcc']:.2f}" in lines[1]


def test_broken_frozen_learner_fails_the_scene_and_zero_shot_checks():
    """A learner whose parameters cannot move (lr 1e-12) fails the checks a trained toy must pass: its scene
    teacher is near-uniform and its zero-shot quality is inside the chance band. (Content still sets the
    untrained model's scene logits, measured eta squared 0.96: random features follow the pixels; confidence is
    what training adds; the recipe's stored temperature, which training does not learn, is set all the same, so
    the teacher is judged as sharp as the real toy's.)"""
    recipe = lesson.LessonRecipe.from_dict(dict(PRESET.lesson, steps=2, warmup=1, lr=1e-12))
    clip, _ = lesson.train_lesson(PRESET.model_cfg, recipe, PRESET.arch)
    init = dict(lesson.create_clip(PRESET.model_cfg, PRESET.arch, recipe.seed).named_parameters())
    moved = max(float((p.detach() - init[name].detach()).abs().max()) for name, p in clip.named_parameters()
                if name != "logit_scale")
    assert moved < 1e-3  # fp16 rounding of the init at most: the learner did not move
    model = as_model(clip)
    failures = scene_failures(lesson.scene_report(model))
    assert any(f.startswith("entropy") for f in failures), failures
    rho, _, n = zero_shot_on_held_out_contents(model)
    assert abs(rho) < chance_band(n) < ZERO_SHOT_BAR


def test_scene_captions_are_what_make_the_teacher_know_its_scenes():
    """Short runs of the recipe from one seed (60 steps, small batches): with the scene captions the teacher is
    already confident and set by the content; the broken scene-less variant (scene_weight 0) stays uniform.
    Measured at 80 steps: entropy 0.04 against 1.00."""
    base = dict(PRESET.lesson, steps=60, warmup=5, groups=8, variants=2)
    entropy = {}
    for weight in (PRESET.lesson["scene_weight"], 0.0):
        recipe = lesson.LessonRecipe.from_dict(dict(base, scene_weight=weight))
        clip, _ = lesson.train_lesson(PRESET.model_cfg, recipe, PRESET.arch)
        report = lesson.scene_report(as_model(clip))
        entropy[weight] = report["entropy"]
        if weight:
            assert not scene_failures(report), report
    assert entropy[0.0] > lesson.ENTROPY_BAR, entropy


# ------------------------------------------------------------------------------------ training and storage
def test_training_is_deterministic_and_seeded():
    recipe = _small_recipe()
    a, losses_a = lesson.train_lesson(SMALL_CFG, recipe)
    b, losses_b = lesson.train_lesson(SMALL_CFG, recipe)
    c, _ = lesson.train_lesson(SMALL_CFG, _small_recipe(seed=1))
    assert losses_a == losses_b
    assert lesson.state_sha256(a.state_dict()) == lesson.state_sha256(b.state_dict())
    assert lesson.state_sha256(a.state_dict()) != lesson.state_sha256(c.state_dict())
    assert torch.get_num_threads() == 1  # the thread setting of the caller (conftest) is restored


def test_stored_delta_round_trips_and_refuses_a_stale_config(tmp_path):
    recipe = _small_recipe()
    path = tmp_path / "w.safetensors"
    clip = lesson.build_weights(path, SMALL_CFG, recipe)
    init = lesson.create_clip(SMALL_CFG, "ViT-B-32", recipe.seed)
    rows = lesson.delta_tensors(clip, init, recipe.store_dtype)["token_embedding.rows"]
    assert 0 < len(rows) < 500  # only the caption vocabulary is stored, not 49408 rows
    assert path.stat().st_mode & 0o777 == 0o644  # readable by all (mkstemp alone makes it 0600)
    back = lesson.read_weights(path, SMALL_CFG, recipe, "ViT-B-32")
    assert lesson.state_sha256(back.state_dict()) == lesson.state_sha256(clip.state_dict())
    with pytest.raises(lesson.StaleWeightsError, match="config"):
        lesson.read_weights(path, SMALL_CFG, _small_recipe(seed=5), "ViT-B-32")


def test_two_processes_building_at_once_share_one_build(tmp_path):
    script = (
        "import json, sys; from clipiqa import lesson; "
        f"r = lesson.LessonRecipe.from_dict(json.loads({json.dumps(json.dumps(_small_recipe().to_dict()))})); "
        f"cfg = json.loads({json.dumps(json.dumps(SMALL_CFG))}); "
        "clip, where = lesson.load_lesson(cfg, r, use_committed=False, progress=lambda d, t: None); "
        "print(where.split()[0], lesson.state_sha256(clip.state_dict()))"
    )
    env = dict(os.environ, CLIPIQA_CACHE=str(tmp_path), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    kinds = sorted(o[0].split()[0] for o in outs)
    shas = {o[0].split()[1] for o in outs}
    assert kinds == ["lesson:built", "lesson:cache"] and len(shas) == 1
    assert len(list(tmp_path.glob("lesson-*/*.safetensors"))) == 1
    assert not list(tmp_path.glob("lesson-*/*.tmp"))


def test_fast_batch_conversion_equals_open_clip_eval_transform(lesson_model):
    imgs = [procedural_image(k, 0, 256) for k in ("stripes", "clouds")]
    mean, std = lesson_model.source.preprocess_cfg["mean"], lesson_model.source.preprocess_cfg["std"]
    from PIL import Image
    expected = torch.stack([lesson_model.preprocess(Image.fromarray(i)) for i in imgs])
    assert torch.equal(lesson.to_batch(imgs, lesson.model_image_size(lesson_model), mean, std), expected)


# ------------------------------------------------------------------------------------ captions and contents
def test_captions_carry_quality_and_the_zero_shot_strings():
    rng = np.random.default_rng(0)
    clean = {lesson.quality_caption(rng, "a rocket", "others", None, 0, antonym_fraction=0.0) for _ in range(50)}
    assert clean == {f"a {w} photo." for w in lesson.CLEAN_WORDS}
    bad = {lesson.quality_caption(rng, "a rocket", "others", "gaussian_blur", 5, antonym_fraction=0.0)
           for _ in range(20)}
    assert bad == {"a extremely blurry photo."}
    named = {lesson.quality_caption(rng, "a rocket", "others", "white_noise", 1, antonym_fraction=0.0,
                                    content_fraction=1.0) for _ in range(5)}
    assert named == {"a slightly noisy photo of a rocket."}
    antonyms = {lesson.quality_caption(rng, "a rocket", "others", None, 0, antonym_fraction=1.0)
                for _ in range(200)}
    assert antonyms == {"Good photo.", "high quality."}
    worst = {lesson.quality_caption(rng, "a rocket", "others", "jpeg", 5, antonym_fraction=1.0) for _ in range(200)}
    assert worst == {"Bad photo.", "low quality."}
    assert list(lesson.P_GOOD) == sorted(lesson.P_GOOD, reverse=True) and lesson.P_GOOD[0] == 1 > lesson.P_GOOD[-1]


def test_captions_train_the_exact_zero_shot_strings():
    """The antonym captions are the very prompts the frozen model scores with (and the class words of CoOp)."""
    from clipiqa.prompts import PromptConfig
    cfg = PromptConfig()
    assert lesson.ANTONYMS == cfg.antonyms
    assert lesson.CLASS_CAPTIONS == tuple(f"{c}." for c in cfg.classnames)


def test_broken_caption_variants_drop_the_quality_signal():
    words = {"blurry", "noisy", "compressed", "good", "bad", "quality", "sharp", "clean", "Good", "Bad", "pristine",
             "high", "low"}
    photos = lesson.photo_contents(["rocket"])
    procs = lesson.procedural_contents(["stripes"], 1, 64, 0)
    recipe = _small_recipe(captions="no_quality", groups=4, variants=4, render_size=64)
    _, captions, _, _ = lesson.sample_batch(photos, procs, recipe, 0)
    assert not any(set(c.replace(".", "").split()) & words for c in captions)
    full = _small_recipe(groups=4, variants=4, render_size=64)
    shuffled = _small_recipe(captions="shuffled", groups=4, variants=4, render_size=64)
    _, c_full, _, _ = lesson.sample_batch(photos, procs, full, 0)
    _, c_shuf, _, _ = lesson.sample_batch(photos, procs, shuffled, 0)
    assert sorted(c_full) == sorted(c_shuf) and c_full != c_shuf


def test_procedural_images_are_deterministic_and_distinct():
    for kind in KINDS:
        a, b = procedural_image(kind, 7, 64), procedural_image(kind, 7, 64)
        assert a.dtype == np.uint8 and a.shape == (64, 64, 3) and np.array_equal(a, b)
        assert not np.array_equal(a, procedural_image(kind, 8, 64))
        assert a.std() > 5  # never flat: blur and noise must show
    with pytest.raises(ValueError, match="unknown procedural kind"):
        procedural_image("nope", 0)


# ------------------------------------------------------------------------------------------ broken on purpose
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CLIPIQA_LESSON_BROKEN") != "1",
                    reason="trains a full broken lesson model (minutes); set CLIPIQA_LESSON_BROKEN=1")
@pytest.mark.parametrize("captions", ["no_quality", "shuffled"])
def test_broken_captions_fail_the_zero_shot_bar(captions, tmp_path):
    """The zero-shot test can fail: the same recipe with captions stripped of quality words (or shuffled across
    the batch) trains a model whose antonym margin does not rank quality."""
    recipe = lesson.LessonRecipe.from_dict(dict(PRESET.lesson, captions=captions))
    clip, _ = lesson.train_lesson(PRESET.model_cfg, recipe, PRESET.arch)
    model = as_model(clip)
    rho, per_type, n = zero_shot_on_held_out_contents(model)
    print(f"broken ({captions}) zero-shot SRCC {rho:.3f} on {n} images, per type {per_type}")
    assert rho < ZERO_SHOT_BAR


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CLIPIQA_LESSON_BROKEN") != "1",
                    reason="trains a full broken lesson model (minutes); set CLIPIQA_LESSON_BROKEN=1")
def test_scene_less_captions_fail_the_scene_checks():
    """The scene checks can fail: the same recipe without scene captions (scene_weight 0) trains a teacher whose
    scene logits follow the distortion level, not the content. Measured on that recipe (the toy committed before
    scene captions, whose recipe it is): content eta2 0.03, level eta2 0.31, top scene right on 8 % of images;
    its entropy is 0.74 at the temperature training left and 0.42 at the stored 30, so the temperature alone can
    pass the entropy bar, which is why the content and level bars are checked too."""
    recipe = lesson.LessonRecipe.from_dict(dict(PRESET.lesson, scene_weight=0.0))
    clip, _ = lesson.train_lesson(PRESET.model_cfg, recipe, PRESET.arch)
    failures = scene_failures(lesson.scene_report(as_model(clip)))
    print(f"scene-less captions: {failures}")
    assert any(f.startswith("content eta2") for f in failures), failures
