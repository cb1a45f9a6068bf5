"""The trainable-set rule (clipiqa.adapters), on hand-made names: which tensor each set trains. The name
``paper`` (never released: now ``last-blocks`` / ``grmp``) is refused from configs and command lines with the
choices; checkpoint cards written with it still load."""
import json

import pytest

import clipiqa

from clipiqa.adapters import TRAINABLE_SETS, trainable_set, trains, tuned_block_count
from clipiqa.cli import main
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


def test_an_unknown_set_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"trainable set 'all' is not allowed; use one of prompts, last-blocks"):
        trainable_set("all")


@pytest.mark.parametrize("k, n_visual, n_text, expected", [(4, 12, 12, 4), (4, 3, 12, 2), (4, 12, 2, 1), (1, 1, 1, 1)])
def test_tuned_block_count(k, n_visual, n_text, expected):
    assert tuned_block_count(k, n_visual, n_text) == expected


def test_the_unreleased_name_paper_is_refused_with_the_choices(capsys):
    assert "paper" not in TRAINABLE_SETS
    with pytest.raises(ValueError, match="trainable set 'paper' is not allowed; use one of prompts, last-blocks"):
        trainable_set("paper")
    with pytest.raises(ValueError, match="AdaptConfig.trainable='paper'.*'last-blocks', 'prompts' or 'text'"):
        AdaptConfig(trainable="paper")
    with pytest.raises(ValueError, match="AdaptConfig.augment='paper'.*'none', 'model' or 'grmp'"):
        AdaptConfig(augment="paper")
    with pytest.raises(ValueError, match="MetaConfig.trainable='paper'"):
        MetaConfig(trainable="paper")
    with pytest.raises(ValueError, match="transform variant 'paper' is not allowed; use one of model, grmp"):
        variant_name("paper")
    for args in (["adapt", "--trainable", "paper"], ["pretrain", "--augment", "paper"]):
        with pytest.raises(SystemExit):
            main(args)
        assert "invalid choice: 'paper'" in capsys.readouterr().err


def test_a_card_written_before_the_rename_still_loads(tmp_path):
    """Checkpoint cards on disk are read as written then: an evaluation transform named ``paper`` is the grmp spec."""
    model = clipiqa.load_model("tiny", device="cpu")
    model.transform_spec = TransformSpec(name="paper", resize=244, resize_mode="squash")  # as an old card has it
    clipiqa.save_checkpoint(model, tmp_path / "old", trainable="last-blocks")
    assert json.loads((tmp_path / "old" / "card.json").read_text())["eval_transform"]["name"] == "paper"
    back = clipiqa.load_model("tiny", prompts=tmp_path / "old", device="cpu")
    assert back.transform_spec.name == "grmp" and back.transform_spec.resize == 244
