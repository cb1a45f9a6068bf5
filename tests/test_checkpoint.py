"""Checkpoints: safetensors + card, exact reload in a fresh process, refusal of another backbone."""
import json
import subprocess
import sys

import pytest
import torch

import clipiqa
from clipiqa.checkpoint import CheckpointMismatchError
from clipiqa.weights import export_backbone


def _trained(model, images):
    model.set_trainable("last-blocks")
    with torch.no_grad():
        for _, p in model.adapter_parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_save_then_load_in_fresh_process_reproduces_scores(tmp_path, images):
    model = _trained(clipiqa.load_model("tiny"), images)
    model.eval()
    with torch.no_grad():
        expected = model.score(images)
    ckpt = clipiqa.save_checkpoint(model, tmp_path / "ckpt", trainable="last-blocks", metrics={"srcc": 0.1})
    torch.save(images, tmp_path / "images.pt")
    card = json.loads((tmp_path / "ckpt" / "card.json").read_text())
    assert card["backbone"]["arch"] == "ViT-B-32" and card["tuned_blocks"] == 1 and "random-init" in card["warning"]
    assert set(card["libraries"]) >= {"torch", "open_clip", "clipiqa"}
    code = (
        "import torch, clipiqa, sys\n"
        f"m = clipiqa.load_model('tiny', prompts={str(tmp_path / 'ckpt')!r})\n"
        f"x = torch.load({str(tmp_path / 'images.pt')!r}, weights_only=True)\n"
        "with torch.no_grad(): s = m.score(x)\n"
        f"torch.save(s, {str(tmp_path / 'scores.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    reloaded = torch.load(tmp_path / "scores.pt", weights_only=True)
    assert torch.equal(reloaded, expected)
    assert ckpt.suffix == ".safetensors"


def test_checkpoint_holds_only_learned_tensors(tmp_path):
    from safetensors.torch import load_file
    model = clipiqa.load_model("tiny")
    clipiqa.save_checkpoint(model, tmp_path / "p.safetensors")
    names = set(load_file(str(tmp_path / "p.safetensors")))
    assert names == {n for n, _ in model.adapter_parameters()}
    assert not any(n.startswith("clip.") for n in names)


def test_checkpoint_from_another_backbone_is_refused(tmp_path):
    other = clipiqa.load_model("tiny")
    with torch.no_grad():
        for p in other.clip.parameters():
            p.mul_(1.5)
    folder = export_backbone(other.clip, other.source, tmp_path / "other-backbone")
    other = clipiqa.load_model("tiny", weights=folder)
    clipiqa.save_checkpoint(other, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointMismatchError, match="fingerprint: checkpoint has"):
        clipiqa.load_model("tiny", prompts=tmp_path / "other.safetensors")


def test_pickle_files_are_never_loaded(tmp_path):
    import pickle
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps({"x": 1}))
    (tmp_path / "evil.json").write_text(json.dumps({"format": "clipiqa-checkpoint"}))
    with pytest.raises(Exception) as err:
        clipiqa.read_checkpoint(tmp_path / "evil.safetensors")
    assert not isinstance(err.value, AssertionError)


def test_missing_checkpoint_file_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter.safetensors"):
        clipiqa.read_checkpoint(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------- declared adapters
def _perturb_trainable(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))


def test_round_trip_rebuilds_exactly_the_declared_parts(tmp_path, images):
    meta = clipiqa.load_model("tiny")
    meta.set_trainable("prompts")
    _perturb_trainable(meta)
    clipiqa.save_checkpoint(meta, tmp_path / "meta", trainable="prompts")
    assert json.loads((tmp_path / "meta" / "card.json").read_text())["prompt_config"]["visual_tokens"] == 100

    fine = clipiqa.load_model("tiny", prompts=tmp_path / "meta")
    assert fine.visual_prompt.n_tokens == 100 and fine.n_tuned_blocks == 0
    vp_before = fine.visual_prompt.tokens.detach().clone()
    names = fine.set_trainable("last-blocks")  # the meta checkpoint's visual prompts stay, frozen
    assert not any(n.startswith("visual_prompt.") for n in names)
    _perturb_trainable(fine)
    assert torch.equal(fine.visual_prompt.tokens, vp_before)
    clipiqa.save_checkpoint(fine, tmp_path / "fine", trainable="last-blocks")

    back = clipiqa.load_model("tiny", prompts=tmp_path / "fine")
    assert back.adapter_spec == fine.adapter_spec == {"n_ctx": 4, "visual_tokens": 100, "visual_depth": None,
                                                      "tuned_blocks": 1}
    saved = dict(fine.adapter_parameters())
    assert {n for n, _ in back.adapter_parameters()} == set(saved)
    assert all(torch.equal(p, saved[n]) for n, p in back.adapter_parameters())
    fine.eval()
    with torch.no_grad():
        torch.testing.assert_close(back.logits(images), fine.logits(images), rtol=0, atol=0)


def test_checkpoint_without_visual_prompts_loads_without_them(tmp_path, images):
    model = _trained(clipiqa.load_model("tiny"), images)
    clipiqa.save_checkpoint(model, tmp_path / "paper", trainable="last-blocks")
    card = json.loads((tmp_path / "paper" / "card.json").read_text())
    assert card["prompt_config"]["visual_tokens"] == 0 and card["tuned_blocks"] == 1
    back = clipiqa.load_model("tiny", prompts=tmp_path / "paper")
    assert back.visual_prompt is None and back.n_tuned_blocks == 1
    assert not any(n.startswith("visual_prompt.") for n, _ in back.adapter_parameters())


def test_apply_checkpoint_builds_missing_parts_and_names_conflicting_ones(tmp_path):
    from clipiqa.checkpoint import apply_checkpoint
    from clipiqa.prompts import PromptConfig
    src = clipiqa.load_model("tiny")
    src.set_trainable("prompts")
    clipiqa.save_checkpoint(src, tmp_path / "vp")
    fresh = clipiqa.load_model("tiny")
    apply_checkpoint(fresh, tmp_path / "vp")
    assert fresh.visual_prompt.n_tokens == 100 and fresh.adapter_spec == src.adapter_spec
    other = clipiqa.load_model("tiny", prompts=PromptConfig(visual_tokens=8))
    with pytest.raises(CheckpointMismatchError, match=r"visual_tokens: checkpoint has 100, this model has 8"):
        apply_checkpoint(other, tmp_path / "vp")
    tuned = clipiqa.load_model("tiny")
    tuned.set_trainable("last-blocks")
    with pytest.raises(CheckpointMismatchError, match=r"tuned_blocks: checkpoint has 0, this model has 1"):
        apply_checkpoint(tuned, tmp_path / "vp")


# ---------------------------------------------------------------- integrity: hashes checked, no pickle
def _saved(tmp_path, name="ckpt"):
    model = clipiqa.load_model("tiny")
    model.set_trainable("text")
    _perturb_trainable(model)
    clipiqa.save_checkpoint(model, tmp_path / name, trainable="text")
    return tmp_path / name


def _header_len(path) -> int:
    import struct
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_card_records_the_tensor_files_sha256(tmp_path):
    import hashlib
    ckpt = _saved(tmp_path)
    card = json.loads((ckpt / "card.json").read_text())
    data = (ckpt / "adapter.safetensors").read_bytes()
    assert card["integrity"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert card["integrity"]["size"] == len(data)
    assert set(card["integrity"]["tensors_sha256"]) == {n for n, _ in clipiqa.load_model("tiny").adapter_parameters()}


def test_flipped_byte_in_tensor_data_is_a_hash_mismatch_naming_file_and_tensor(tmp_path):
    from clipiqa.checkpoint import CheckpointCorruptError
    ckpt = _saved(tmp_path)
    path = ckpt / "adapter.safetensors"
    data = bytearray(path.read_bytes())
    data[8 + _header_len(path) + 5] ^= 0x01  # a low mantissa bit of the first tensor: still a valid float
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=r"SHA-256.*changed") as info:
        clipiqa.read_checkpoint(ckpt)
    assert str(path) in str(info.value) and "text_prompt.ctx" in str(info.value), str(info.value)


@pytest.mark.parametrize("damage, words", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:5], "truncated"),
    (lambda b: b[:8] + b"{not json" + b[17:], "header"),
    (lambda b: (10**9).to_bytes(8, "little") + b[8:], "header"),
])
def test_corrupt_safetensors_errors_name_the_file_and_the_problem(tmp_path, damage, words):
    from clipiqa.checkpoint import CheckpointCorruptError
    ckpt = _saved(tmp_path)
    path = ckpt / "adapter.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointCorruptError) as info:
        clipiqa.read_checkpoint(ckpt)
    assert str(path) in str(info.value) and words in str(info.value), str(info.value)


def test_card_that_is_not_json_names_the_file(tmp_path):
    from clipiqa.checkpoint import CheckpointCorruptError
    ckpt = _saved(tmp_path)
    (ckpt / "card.json").write_text('{"format": "clipiqa-checkpoint", ')
    with pytest.raises(CheckpointCorruptError, match=r"card\.json.*not valid JSON"):
        clipiqa.read_checkpoint(ckpt)


def test_card_missing_required_keys_lists_them(tmp_path):
    from clipiqa.checkpoint import CheckpointCorruptError
    ckpt = _saved(tmp_path)
    card = json.loads((ckpt / "card.json").read_text())
    del card["backbone"], card["prompt_config"]
    (ckpt / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointCorruptError, match=r"missing.*backbone, prompt_config"):
        clipiqa.load_model("tiny", prompts=ckpt)


def test_non_finite_tensors_are_refused(tmp_path):
    """A checkpoint holding NaN (a diverged run, saved with a fresh hash) must not load and score 'ok'."""
    from clipiqa.checkpoint import CheckpointCorruptError
    model = clipiqa.load_model("tiny")
    model.set_trainable("text")
    with torch.no_grad():
        next(p for _, p in model.adapter_parameters()).fill_(float("nan"))
    clipiqa.save_checkpoint(model, tmp_path / "nan")
    with pytest.raises(CheckpointCorruptError, match=r"NaN or infinite"):
        clipiqa.load_model("tiny", prompts=tmp_path / "nan")


def test_old_card_without_hash_loads_with_a_warning(tmp_path):
    ckpt = _saved(tmp_path)
    card = json.loads((ckpt / "card.json").read_text())
    del card["integrity"]
    (ckpt / "card.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="no SHA-256"):
        checkpoint = clipiqa.read_checkpoint(ckpt)
    assert checkpoint.tensors


def test_save_keeps_modes_and_leaves_no_temp_files(tmp_path):
    import os
    import stat
    ckpt = _saved(tmp_path)
    os.chmod(ckpt / "adapter.safetensors", 0o640)
    os.chmod(ckpt / "card.json", 0o600)
    _saved(tmp_path)
    assert stat.S_IMODE(os.stat(ckpt / "adapter.safetensors").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(ckpt / "card.json").st_mode) == 0o600
    assert sorted(os.listdir(ckpt)) == ["adapter.safetensors", "card.json"]
    clipiqa.read_checkpoint(ckpt)
