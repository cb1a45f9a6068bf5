"""Attributions and diagnostics (docs/design.md, 'Explainability'). The tiny model is random-init: its numbers
only check machinery.

The focus metric itself is validated on hand-built score functions whose behaviour is known exactly.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import clipiqa
from clipiqa.caveats import RANDOM_INIT, TOY
from clipiqa.explain import ATTRIBUTION_METHODS, attribute, completeness_error, make_baseline, frozen_clip
from clipiqa.explain.diagnostics import (compare_models, content_vs_distortion, distortion_focus,
                                         eta_squared, focus_ratio, rectangle_mask, scene_drift_table,
                                         summarize_scene_drift, to_model_input)

FAST = {"ig": {"n_steps": 4}, "occlusion": {"window": 112}, "smoothgrad": {"nt_samples": 2}}
LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def refs():
    from clipiqa.data.demo import demo_references
    return demo_references(256, names=["astronaut", "chelsea", "coffee", "rocket"])


def _laplace_energy(x: torch.Tensor) -> torch.Tensor:
    k = LAPLACE.to(x).view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1)
    return (F.conv2d(x, k, groups=x.shape[1]) ** 2).mean(dim=(1, 2, 3))


class TopLeftSharpness(nn.Module):
    """Sharpness of the top-left quadrant only: the rest of the image cannot influence it."""

    def forward(self, x):
        return -_laplace_energy(x[:, :, : x.shape[2] // 2, : x.shape[3] // 2])


class Sharpness(nn.Module):
    """Position-agnostic, but noise raises the local Laplacian energy wherever it is."""

    def forward(self, x):
        return -_laplace_energy(x)


class Brightness(nn.Module):
    """Ignores position and (zero-mean) noise alike."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------------- attribute
@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_every_method_gives_pixel_aligned_maps_and_restores_the_model(tiny, images, method):
    tiny.train()
    flags = [p.requires_grad for p in tiny.parameters()]
    maps = attribute(tiny, images[:2], method, **FAST.get(method, {}))
    assert maps.shape == (2, 224, 224) and maps.device.type == "cpu"
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    if method == "gradcam":
        assert (maps >= 0).all()
    assert (attribute(tiny, images[:1], method, absolute=True, **FAST.get(method, {})) >= 0).all()
    assert tiny.training and [p.requires_grad for p in tiny.parameters()] == flags
    assert all(p.grad is None for p in tiny.parameters())


def test_unknown_method_or_option_is_named(tiny, images):
    with pytest.raises(ValueError, match="unknown attribution method 'lime'.*ig.*occlusion.*smoothgrad.*gradcam"):
        attribute(tiny, images[:1], "lime")
    with pytest.raises(TypeError, match="'gradcam' does not take option.*n_steps.*it takes block"):
        attribute(tiny, images[:1], "gradcam", n_steps=4)


def test_a_method_added_through_the_public_hook_is_called_like_every_other(images):
    """register_attribution adds a method that attribute() runs with its own options (others refused by name);
    the same name twice is refused unless replaced."""
    from clipiqa.explain import ScoreFn, register_attribution

    seen = {}

    @register_attribution("input-times-one", "the input itself, scaled")
    def input_times(fn: ScoreFn, x, *, scale: float = 1.0):
        seen["model"] = fn.model
        return x * scale
    try:
        model = Brightness()
        maps = attribute(model, images[:2], "input-times-one", scale=2.0)
        assert maps.shape == (2, 224, 224) and seen["model"] is model
        torch.testing.assert_close(maps, 2.0 * images[:2].sum(1))
        with pytest.raises(TypeError, match="does not take option.*n_steps.*it takes scale"):
            attribute(model, images[:1], "input-times-one", n_steps=3)
        with pytest.raises(ValueError, match="already registered"):
            register_attribution("input-times-one", "again")(input_times)
    finally:
        ATTRIBUTION_METHODS.pop("input-times-one")


def test_gradcam_needs_an_iqa_model_and_skips_prompt_tokens(tiny, images):
    with pytest.raises(TypeError, match="IQAModel"):
        attribute(Brightness(), images[:1], "gradcam")
    # with adapters off the sequence has no prompt tokens; the grid is found either way
    assert attribute(frozen_clip(tiny), images[:1], "gradcam", block=0).shape == (1, 224, 224)
    with pytest.raises(ValueError, match="block=5"):
        attribute(tiny, images[:1], "gradcam", block=5)


def test_zero_shot_view_equals_adapters_off(tiny, images):
    with torch.no_grad(), tiny.adapters_off():
        expected = tiny(images)
    with torch.no_grad():
        torch.testing.assert_close(frozen_clip(tiny)(images), expected)
    assert tiny.adapters_enabled and frozen_clip(tiny).random_init


def test_ig_completeness_on_the_tiny_model(tiny, refs):
    x = torch.stack([to_model_input(tiny, im)[0] for im in list(refs.values())[:2]])
    with torch.no_grad():
        delta = tiny(x) - tiny(make_baseline(tiny, x, "black"))
    assert (delta.abs() > 1e-3).all()  # a non-trivial difference to explain
    maps = attribute(tiny, x, "ig", n_steps=32, baseline="black")
    error = completeness_error(tiny, x, maps, "black")
    assert (error < 0.01).all(), error  # measured ~1e-5 here
    # the check can fail: attributions that miss a tenth of the difference are caught
    assert (completeness_error(tiny, x, maps * 0.9, "black") > 0.05).all()


def test_blur_baseline_and_custom_target(tiny, images):
    base = make_baseline(tiny, images[:1], "blur", blur_sigma=4)
    assert base.shape == images[:1].shape and not torch.equal(base, images[:1])
    scene = attribute(tiny, images[:1], "ig", n_steps=4, baseline="blur",
                      target_fn=lambda m, x: m.scene_logits(x)[:, 0])
    assert scene.shape == (1, 224, 224) and scene.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- focus
def test_focus_ratio_pure():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    assert focus_ratio(np.ones((4, 4)), mask) == pytest.approx(1.0)
    inside = np.where(mask, 1.0, 0.0)
    assert focus_ratio(torch.tensor(-inside), mask) == pytest.approx(4.0)  # absolute values
    assert np.isnan(focus_ratio(np.zeros((4, 4)), mask))
    with pytest.raises(ValueError, match="same shape"):
        focus_ratio(np.ones((3, 4)), mask)
    m, box = rectangle_mask(224, 224, 0.25, corner=3)
    assert m.mean() == pytest.approx(0.25) and box == (112, 112, 224, 224)


def test_to_model_input_matches_the_model_preprocessing(tiny):
    image = (np.random.default_rng(0).random((300, 500, 3)) * 255).astype(np.uint8)
    x, crop = to_model_input(tiny, image)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert torch.equal(x, tiny.preprocess(Image.fromarray(image)))


def test_focus_is_high_where_a_regional_score_looks(refs):
    result = distortion_focus(TopLeftSharpness(), refs, "gaussian_blur", 4, placement="quadrants", n_steps=8)
    focus = result.table.set_index("reference")["focus"]
    assert result.table["mask_top"].tolist() == [0, 0, 112, 112]
    assert focus["astronaut"] > 2  # the mask is the top-left quadrant: all the attribution is inside
    assert focus["rocket"] < 0.5  # bottom-right: the score never looks there
    assert not result.random_init and result.summary["note"] == ""


def test_focus_follows_the_distortion_for_a_position_agnostic_score(refs):
    noisy = distortion_focus(Sharpness(), refs, "white_noise", 4, n_steps=8)
    assert noisy.summary["focus_mean"] > 2, noisy.table  # measured ~3: noise attracts the attribution
    assert noisy.summary["focus_clean_mean"] < 1.6
    flat = distortion_focus(Brightness(), refs, "white_noise", 4, n_steps=8)
    assert 0.7 < flat.summary["focus_mean"] < 1.4, flat.table  # measured ~0.9: no preference
    assert flat.maps.shape == (4, 224, 224) and len(flat.masks) == 4


# ---------------------------------------------------------------------------------------------- eta squared
def test_eta_squared_equals_a_hand_computation():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    groups = ["a", "a", "b", "b", "c", "c"]
    # grand mean 3.5; group means 1.5, 3.5, 5.5 -> SS_between = 2 * (4 + 0 + 4) = 16; SS_total = 17.5
    assert eta_squared(values, groups) == pytest.approx(16 / 17.5)
    assert np.isnan(eta_squared([2.0, 2.0, 2.0], [1, 2, 3]))
    assert eta_squared([1.0, 2.0, np.nan, 2.0], [0, 1, 1, 1]) == pytest.approx(1.0)


def test_eta_squared_on_a_synthetic_grid():
    # score = content effect + level effect, no interaction: the two shares add up to 1
    content = {"a": 0.0, "b": 1.0, "c": 2.0}
    rows = [(c, lv, content[c] - 0.5 * lv) for c in content for lv in range(1, 6)]
    table = pd.DataFrame(rows, columns=["reference", "level", "score"])
    e_content = eta_squared(table["score"], table["reference"])
    e_level = eta_squared(table["score"], table["level"])
    ss_total = ((table["score"] - table["score"].mean()) ** 2).sum()
    assert e_content == pytest.approx(5 * (1 + 0 + 1) / ss_total)
    assert e_level == pytest.approx(3 * 0.25 * (4 + 1 + 0 + 1 + 4) / ss_total)
    assert e_content + e_level == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- end to end
def test_content_vs_distortion_grid(tiny, refs):
    result = content_vs_distortion(tiny, refs, ["gaussian_blur", "white_noise"], levels=(1, 3, 5))
    t = result.table
    assert len(t) == 4 * (1 + 2 * 3) and set(t["level"]) == {0, 1, 3, 5}
    assert np.isfinite(t["score"]).all()  # the score explained is the logit margin (it does not saturate), not p_high
    for key in ("eta2_level", "eta2_content", "eta2_type"):
        assert 0 <= result.summary[key] <= 1
    assert result.random_init and result.summary["note"] == RANDOM_INIT.text and (t["note"] == RANDOM_INIT.text).all()
    again = content_vs_distortion(tiny, refs, ["gaussian_blur", "white_noise"], levels=(1, 3, 5))
    pd.testing.assert_frame_equal(t, again.table)  # deterministic from the seed


def test_diagnostics_compare_zero_shot_and_an_adapted_checkpoint(tiny, refs, tmp_path):
    tiny.add_visual_prompt()
    with torch.no_grad():  # an "adapted" model: moved prompts, saved and loaded as a checkpoint
        tiny.visual_prompt.tokens.add_(0.5)
        tiny.text_prompt.ctx.add_(0.3)
    clipiqa.save_checkpoint(tiny, tmp_path / "ckpt")
    adapted = clipiqa.load_model("tiny", device="cpu", prompts=tmp_path / "ckpt")
    models = {"zero-shot": frozen_clip(adapted), "adapted": adapted}
    table, tables = compare_models(models, dict(list(refs.items())[:2]), types=["gaussian_blur"], levels=(1, 5),
                                   method="gradcam", return_tables=True)
    assert set(table["model"]) == {"zero-shot", "adapted"}
    assert set(table["diagnostic"]) == {"distortion_focus", "content_vs_distortion", "scene_drift"}
    assert table.attrs["random_init"] and (table["note"] == RANDOM_INIT.text).all()
    drift = table[table["metric"] == "scene_drift_mean"].set_index("model")["value"]
    assert drift["zero-shot"] == pytest.approx(0.0, abs=1e-6) and drift["adapted"] > 0
    assert {"focus", "content", "scene"} == set(tables) and tables["focus"].columns[0] == "model"
    # IG also runs on the adapted model
    focus = distortion_focus(adapted, dict(list(refs.items())[:1]), n_steps=4)
    assert np.isfinite(focus.summary["focus_mean"])


def test_scene_drift_table_per_image(tiny, refs):
    table = scene_drift_table({"adapted": tiny}, refs)
    assert len(table) == 4 and set(table.columns) >= {"model", "image", "scene_drift", "top_scene",
                                                       "top_scene_label", "teacher_top_scene"}
    assert (table["scene_drift"] >= 0).all()
    label = dict(zip(clipiqa.SCENES, [clipiqa.SCENE_LABELS[s] for s in clipiqa.SCENES]))
    assert (table["top_scene_label"] == table["top_scene"].map(label)).all()
    summary = summarize_scene_drift(table)
    assert summary.loc[0, "scene_drift_mean"] == pytest.approx(table["scene_drift"].mean())


# ---------------------------------------------------------------------------------------------- reading the numbers
def _focus_table(focus, clean, drop=None, note="", distortion="gaussian_blur"):
    n = len(focus)
    return pd.DataFrame({"reference": [f"r{i}" for i in range(n)], "distortion": distortion, "level": 4,
                         "focus": focus, "focus_clean": clean, "score_drop": drop if drop is not None else [0.5] * n,
                         "score_unit": "margin", "note": note})


def test_focus_verdict_reads_the_gain_against_the_clean_control_and_its_spread():
    """The case users misread: focus above 1 (1.98) while the same region of the clean photo draws more (2.13):
    the attribution moved away from the damage, whatever "above 1" suggests."""
    from clipiqa.explain.reading import focus_verdict
    away = focus_verdict(_focus_table([1.95, 2.0, 1.99, 1.98], [2.12, 2.15, 2.11, 2.14]))
    assert "distortion: the attribution moves away from the distorted region" in away
    assert "focus 1.98 vs clean control 2.13" in away and "gain -0.15 ± 0.01 SE, n = 4" in away
    assert "onto" not in away
    onto = focus_verdict(_focus_table([2.4, 2.6, 2.5], [1.0, 1.1, 0.9]))
    assert "moves onto the distorted region" in onto and "gain +1.50" in onto
    still = focus_verdict(_focus_table([1.2, 0.8, 1.1, 0.9], [1.0, 1.0, 1.0, 1.0]))
    assert "content: the distortion does not move the attribution" in still
    one = focus_verdict(_focus_table([1.5], [1.0]))
    assert "no spread, indicative only" in one and "n = 1" in one
    assert "margin drop +0.50" in onto and "the distorted photo scores lower" in onto
    flat = focus_verdict(_focus_table([2.4, 2.6, 2.5], [1.0, 1.1, 0.9], drop=[-0.1, 0.1, 0.0]))
    assert "the score does not count it as worse" in flat


def test_verdicts_say_toy_model_and_random_init_with_the_existing_caveats():
    from clipiqa.explain.reading import focus_verdict
    assert focus_verdict(_focus_table([2.5, 2.6, 2.4], [1, 1, 1], note=TOY.text)).endswith(
        "[toy model trained on synthetic distortions]")
    assert focus_verdict(_focus_table([2.5, 2.6, 2.4], [1, 1, 1], note=RANDOM_INIT.text)).endswith(
        "[random init: meaningless]")


def test_a_position_agnostic_sharpness_score_reads_as_distortion(refs):
    noisy = distortion_focus(Sharpness(), refs, "white_noise", 4, n_steps=8)
    assert "moves onto the distorted region" in noisy.verdict, noisy.table  # gain ~ +2: noise draws the maps
    assert noisy.summary["focus_gain_se"] > 0 and noisy.summary["score_unit"] == "margin"
    flat = distortion_focus(Brightness(), refs, "white_noise", 4, n_steps=8)
    assert flat.verdict.startswith("white_noise 4 - distortion or content? content"), flat.table


def test_per_type_tables_and_model_verdicts(tiny, refs):
    from clipiqa.explain.reading import type_table, verdicts
    few = dict(list(refs.items())[:3])
    table, tables = compare_models({"zero-shot": frozen_clip(tiny), "adapted": tiny}, few,
                                   distortion=["gaussian_blur", "white_noise"], types=["gaussian_blur", "white_noise"],
                                   levels=(1, 5), method="gradcam", return_tables=True)
    assert {"distortion_focus: gaussian_blur", "distortion_focus: white_noise"} <= set(table["diagnostic"])
    units = table.set_index(["model", "diagnostic", "metric"])["unit"]
    assert units[("adapted", "distortion_focus: white_noise", "score_drop_mean")] == "margin"
    assert units[("adapted", "content_vs_distortion", "eta2_level")] == "share of margin variance"
    per_type = type_table(tables["focus"], tables["content"])
    assert len(per_type) == 4 and set(per_type["distortion"]) == {"gaussian_blur", "white_noise"}
    assert {"focus_gain", "gain_se", "attribution", "margin_drop", "srcc_level", "eta2_level"} <= set(per_type)
    assert (per_type["n"] == 3).all()
    lines = verdicts(tables)
    assert set(lines) == {"zero-shot", "adapted"}
    for line in lines.values():
        assert line.startswith("distortion or content? ") and "of the margin variance" in line
        assert "gaussian_blur" in line and "white_noise" in line and line.endswith("[random init: meaningless]")


def test_scores_say_their_unit(tiny, refs):
    from clipiqa.explain import p_high_target, plots
    few = dict(list(refs.items())[:2])
    margin = content_vs_distortion(tiny, few, ["gaussian_blur"], levels=(1, 5))
    prob = content_vs_distortion(tiny, few, ["gaussian_blur"], levels=(1, 5), target_fn=p_high_target)
    assert set(margin.table["score_unit"]) == {"margin"} and set(prob.table["score_unit"]) == {"p(good)"}
    assert prob.table["score"].between(0, 1).all()
    fig = plots.plot_content_vs_distortion(prob.table)
    assert "p(good)" in fig.axes[0].get_ylabel()
    assert "logit margin" in plots.plot_content_vs_distortion(margin.table).axes[0].get_ylabel()
    from matplotlib import pyplot as plt
    plt.close("all")


def _toy(model):
    """The tiny model labelled as the lesson toy (trained here: not random, not real CLIP)."""
    import dataclasses
    model.source = dataclasses.replace(model.source, random_init=False, toy=True)
    return model


def test_figures_of_the_toy_say_toy_model_and_draw_the_test_region(tiny, refs):
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    from clipiqa.explain import plots
    toy = _toy(tiny)
    few = dict(list(refs.items())[:2])
    focus = distortion_focus(toy, few, method="gradcam")
    assert (focus.table["note"] == TOY.text).all() and focus.verdict.endswith("[toy model trained on synthetic "
                                                                                "distortions]")
    cvd = content_vs_distortion(toy, few, ["gaussian_blur"], levels=(1, 5))
    scene = scene_drift_table({"zero-shot": frozen_clip(toy), "adapted": toy}, few)
    for fig in (plots.plot_focus(focus.table), plots.plot_content_vs_distortion(cvd.table),
                plots.plot_scene_drift(scene), plots.plot_focus_maps(focus)):
        assert any("toy model" in t.get_text() for t in fig.texts), fig
    maps = plots.plot_focus_maps({"adapted": focus})
    boxes = [p for ax in maps.axes for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == 2  # the distorted rectangle on each photo
    top, left, bottom, right = focus.boxes[0]
    assert boxes[0].get_width() == right - left and boxes[0].get_height() == bottom - top
    with pytest.raises(ValueError, match="keep_maps=True"):
        plots.plot_focus_maps(distortion_focus(toy, few, method="gradcam", keep_maps=False))
    plt.close("all")


# ---------------------------------------------------------------------------------------------- sanity check
class Weighted(nn.Module):
    """A linear score ``sum(w * x)`` whose learned weights ``w`` favour the top-left: its attributions are the
    weights (times the input), so re-initialising ``w`` must change them."""

    def __init__(self, size=32):
        super().__init__()
        self.layer = nn.Linear(1, 1)  # a layer with reset_parameters, holding nothing the score uses
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        blob = torch.exp(-((yy - 6.0) ** 2 + (xx - 6.0) ** 2) / 30.0)
        self.weights = Pattern(blob.expand(3, size, size).clone())

    def forward(self, x):
        return (self.weights.w * x).sum(dim=(1, 2, 3)) + 0 * self.layer.weight.sum()


class Pattern(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def reset_parameters(self):
        nn.init.normal_(self.w)


def test_randomization_check_fails_for_a_model_compared_with_itself(tiny, refs):
    from clipiqa.explain.sanity import randomization_check
    few = dict(list(refs.items())[:2])
    result = randomization_check(tiny, few, "ig", randomized=tiny, n_steps=4)
    assert result.table["spearman"].tolist() == pytest.approx([1.0, 1.0])
    assert not result.passed and "fails the sanity check" in result.line and "median 1.00" in result.line
    assert result.line.endswith("[random init: meaningless]")


def test_randomization_check_reinitialises_a_copy_never_the_model(tiny, refs):
    from clipiqa.explain.sanity import randomization_check
    few = dict(list(refs.items())[:2])
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    state = torch.random.get_rng_state()
    cascading = randomization_check(tiny, few, "gradcam", blocks=2)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())  # the user's model is untouched
    assert torch.equal(state, torch.random.get_rng_state())  # and so is the global random state
    assert cascading.table["step"].unique().tolist() == ["visual block 1 re-initialised",
                                                         "visual blocks 0-1 re-initialised"]
    assert len(cascading.table) == 4 and cascading.table["spearman"].lt(1).all()
    independent = randomization_check(frozen_clip(tiny), few, "gradcam", blocks=2, mode="independent")
    assert independent.table["step"].unique().tolist() == ["visual block 1 re-initialised",
                                                           "visual block 0 re-initialised"]
    with pytest.raises(ValueError, match="blocks=3 is not allowed; this model has 2 visual blocks"):
        randomization_check(tiny, few, blocks=3)
    with pytest.raises(TypeError, match="layers="):
        randomization_check(Brightness(), few)


def test_randomization_check_passes_when_the_maps_follow_the_learned_weights():
    from matplotlib import pyplot as plt

    from clipiqa.explain import plots
    from clipiqa.explain.sanity import randomization_check
    model = Weighted()
    x = torch.ones(2, 3, 32, 32)  # a flat input: the maps are the weights alone
    result = randomization_check(model, x, "ig", layers=["weights"], n_steps=8)
    assert result.passed and "passes" in result.line, result.table
    assert result.table["spearman"].abs().max() < 0.3
    assert torch.equal(model.weights.w[0, 6, 6], torch.tensor(1.0))  # the model keeps its weights
    fig = plots.plot_sanity_check(result)
    assert "passes" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(ValueError, match="changed none of its parameters"):  # a module with nothing to reset
        randomization_check(Brightness(), x, layers=[""], n_steps=2)


# ---------------------------------------------------------------------------------------------- plots
def test_plots_return_figures_with_the_random_init_caption(tiny, refs):
    from matplotlib import pyplot as plt

    from clipiqa.explain import plots
    few = dict(list(refs.items())[:2])
    focus = distortion_focus(tiny, few, method="gradcam")
    cvd = content_vs_distortion(tiny, few, ["gaussian_blur"], levels=(1, 5))
    scene = scene_drift_table({"zero-shot": frozen_clip(tiny), "adapted": tiny}, few)
    figures = [plots.plot_attribution(focus.images[0], focus.maps[0], title="x", random_init=True),
               plots.plot_attributions(focus.images, {"gradcam": focus.maps}, random_init=True),
               plots.plot_focus(focus.table), plots.plot_content_vs_distortion(cvd.table),
               plots.plot_scene_drift(scene)]
    for fig in figures:
        assert any(t.get_text() == RANDOM_INIT.text for t in fig.texts)
        plt.close(fig)
    labels = [t.get_text() for t in plots.plot_scene_drift(scene).axes[1].get_legend().get_texts()]
    plt.close("all")
    assert all(label != "plant" for label in labels)


@pytest.mark.gpu
def test_attribution_on_cuda_matches_cpu(images):
    cpu = clipiqa.load_model("tiny", device="cpu")
    gpu = clipiqa.load_model("tiny", device="cuda")
    for method, options in (("ig", {"n_steps": 8}), ("gradcam", {}), ("occlusion", {"window": 56})):
        a = attribute(cpu, images[:2], method, **options)
        b = attribute(gpu, images[:2], method, **options)
        assert b.device.type == "cpu" and b.shape == a.shape
        # same maps up to float noise (cuDNN may use TF32 convolutions)
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert corr > 0.98, (method, corr)
