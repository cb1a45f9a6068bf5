"""The trainable-set rule (clipiqa.adapters), on hand-made names: which tensor each set trains; and the renamed
values (``paper`` -> ``last-blocks`` / ``grmp``) read from old configs, cards and command lines."""
import pytest

import clipiqa

from clipiqa.adapters import TRAINABLE_SETS, trainable_set, trains, tuned_block_count
from clipiqa.commands.common import augment_arg, trainable_arg
from clipiqa.data.transforms import TransformSpec, variant_name
from clipiqa.finetune import AdaptConfig
from clipiqa.meta import MetaConfig

NAMES = ["text_prompt.ctx", "visual_prompt.tokens", "visual_prompt.proj.weight", "tuned.visual_blocks.0.attn.w",
         "tuned.text_ln_final.weight"]


@pytest.mark.parametrize("which, expected", [
    ("prompts", [True, True, True, False, False]),
    ("last-blocks", [True, False, False, True, True]),
    ("text", [True, False, False, False, False]),
    ("none", [False] * 5),
])
def test_each_set_trains_exactly_its_tensors(which, expected):
    assert [trains(which, n) for n in NAMES] == expected


def test_the_old_name_paper_is_last_blocks():
    assert trainable_set("paper") == "last-blocks"
    assert [trains("paper", n) for n in NAMES] == [trains("last-blocks", n) for n in NAMES]
    assert "paper" not in TRAINABLE_SETS


def test_an_unknown_set_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"trainable set 'all' is not allowed; use one of prompts, last-blocks"):
        trainable_set("all")


@pytest.mark.parametrize("k, n_visual, n_text, expected", [(4, 12, 12, 4), (4, 3, 12, 2), (4, 12, 2, 1), (1, 1, 1, 1)])
def test_tuned_block_count(k, n_visual, n_text, expected):
    assert tuned_block_count(k, n_visual, n_text) == expected


def test_old_names_in_configs_cards_and_the_command_line_read_as_the_new_ones():
    assert (AdaptConfig(trainable="paper", augment="paper").trainable, AdaptConfig(augment="paper").augment) == \
        ("last-blocks", "grmp")
    meta = MetaConfig(trainable="paper", augment="paper")
    assert (meta.trainable, meta.augment) == ("last-blocks", "grmp")
    assert (trainable_arg("paper"), augment_arg("paper"), variant_name("paper")) == ("last-blocks", "grmp", "grmp")
    assert TransformSpec.from_dict({"name": "paper", "resize": 244, "resize_mode": "squash"}).name == "grmp"
    with pytest.raises(ValueError, match="AdaptConfig.trainable='all'.*'last-blocks', 'prompts' or 'text'"):
        AdaptConfig(trainable="all")


def test_a_checkpoint_card_names_the_set_by_its_current_name(tmp_path):
    model = clipiqa.load_model("tiny", device="cpu")
    clipiqa.save_checkpoint(model, tmp_path / "old", trainable="paper")
    clipiqa.save_checkpoint(model, tmp_path / "label", trainable="my own set")  # a label: kept as given
    assert clipiqa.read_checkpoint(tmp_path / "old").card["trainable"] == "last-blocks"
    assert clipiqa.read_checkpoint(tmp_path / "label").card["trainable"] == "my own set"
