"""Scene retention: how far an adapted model's scene branch moved from its frozen self (QGR's teacher)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipiqa.data import build_demo_set
from clipiqa.factory import load_model
from clipiqa.protocol import run_protocol
from clipiqa.protocol.scenes import scene_agreement, scene_kl, scene_retention


def test_kl_and_agreement_on_hand_made_logits():
    same = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    assert scene_kl(same, same) == pytest.approx(0.0, abs=1e-12)
    assert scene_kl(same, same + 5.0) == pytest.approx(0.0, abs=1e-12)  # a common shift is no change
    assert scene_agreement(same, same) == 1.0
    # teacher certain of scene 0, student uniform over 2 scenes: KL = log 2
    teacher = np.array([[100.0, 0.0]])
    assert scene_kl(teacher, np.zeros((1, 2))) == pytest.approx(math.log(2), rel=1e-9)
    swapped = same[:, ::-1]
    assert scene_agreement(same, swapped) == 0.0 and scene_kl(same, swapped) > 0.5


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    df = build_demo_set(cache_dir=tmp_path_factory.mktemp("demo"), types=["gaussian_blur"], levels=(1, 5), size=64)
    keep = sorted(df["content_id"].unique())[:6]
    return df[df["content_id"].isin(keep)].reset_index(drop=True)


def test_an_untouched_model_retains_every_scene_and_a_moved_one_does_not(demo):
    from PIL import Image
    model = load_model("lesson", device="cpu")
    images = [Image.open(p).convert("RGB") for p in demo["path"]]
    untouched = scene_retention(model, images)
    assert untouched == {"scene_kl": pytest.approx(0.0, abs=1e-9), "scene_agree": 1.0}
    model.set_trainable("last-blocks", 1)
    with torch.no_grad():  # what a wild fine-tuning step does to the last visual block
        for name, p in model.named_parameters():
            if p.requires_grad and name.startswith("tuned.visual"):
                p.add_(torch.randn_like(p) * 0.5)
    moved = scene_retention(model, images)
    assert moved["scene_kl"] > 0.01 and moved["scene_agree"] <= 1.0


def test_protocol_rows_carry_scene_retention_for_adapted_arms(demo):
    res = run_protocol(demo, ["zero-shot", "ft"], shots=8, n_splits=1,
                       model_factory=lambda prompts=None: load_model("tiny", device="cpu", prompts=prompts),
                       overrides={"epochs": 1, "augment": "none"}, n_boot=20)
    per = res.per_split.set_index("method")
    assert per.loc["ft", "scene_kl"] >= 0 and 0 <= per.loc["ft", "scene_agree"] <= 1
    assert np.isnan(per.loc["zero-shot"].get("scene_kl", np.nan))  # nothing adapted: no retention to measure
