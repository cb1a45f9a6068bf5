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
    model.set_trainable("paper")
    with torch.no_grad():
        for _, p in model.adapter_parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_save_then_load_in_fresh_process_reproduces_scores(tmp_path, images):
    model = _trained(clipiqa.load_model("tiny"), images)
    model.eval()
    with torch.no_grad():
        expected = model.score(images)
    ckpt = clipiqa.save_checkpoint(model, tmp_path / "ckpt", trainable="paper", metrics={"srcc": 0.1})
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
