"""Weight resolution: local paths never touch the network, offline failure is fast and says what to do."""
import socket
import time

import pytest
import torch

import clipiqa
from clipiqa.weights import WeightsUnavailableError, export_backbone


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("CLIPIQA_WEIGHTS", raising=False)


@pytest.mark.parametrize("offline_flag", ["1", "0"])
def test_missing_weights_fail_fast_with_instructions(offline_flag, monkeypatch, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline_flag)
    if offline_flag == "0":  # no flag: the reachability probe itself must fail fast
        def unreachable(*args, **kwargs):
            raise OSError("network is unreachable")
        monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        clipiqa.load_model("vitb16-openai")
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    for hint in ("weights=", "CLIPIQA_WEIGHTS", "huggingface-cli download", "HF_HOME", "'tiny' preset"):
        assert hint in message


def test_tiny_saved_to_folder_loads_by_path_without_network(tmp_path, images, no_network):
    model = clipiqa.load_model("tiny")
    with torch.no_grad():
        model.clip.logit_scale.fill_(3.0)  # make the saved backbone differ from a fresh tiny
        expected = model.score(images)
    folder = export_backbone(model.clip, model.source, tmp_path / "tiny-weights")
    assert (folder / "open_clip_config.json").is_file() and (folder / "open_clip_model.safetensors").is_file()
    loaded = clipiqa.load_model("tiny", weights=folder)
    assert loaded.random_init  # the label travels with the folder
    assert loaded.source.weights == str(folder.resolve())
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(images), expected, rtol=0, atol=0)


def test_weights_env_folder_and_bare_file(tmp_path, images, monkeypatch, no_network):
    model = clipiqa.load_model("tiny")
    folder = export_backbone(model.clip, model.source, tmp_path / "weights" / "tiny")
    bare = clipiqa.load_model("tiny", weights=folder / "open_clip_model.safetensors")  # preset config used
    with torch.no_grad():
        torch.testing.assert_close(bare.score(images), model.score(images), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clipiqa.load_model("tiny", weights=tmp_path / "nope")


def test_unknown_preset_lists_available():
    with pytest.raises(ValueError, match="vitb16-openai.*vitb32-openai|tiny"):
        clipiqa.load_model("vit-huge")


def test_fingerprint_identifies_weights():
    a = clipiqa.load_model("tiny").source.fingerprint
    b = clipiqa.load_model("tiny").source.fingerprint
    assert a == b and len(a) == 16


def test_weights_line_names_file_and_fingerprint_on_stderr(tmp_path, photo_dir, capsys, no_network):
    from clipiqa.cli import main
    model = clipiqa.load_model("tiny")
    folder = export_backbone(model.clip, model.source, tmp_path / "tiny-weights")
    assert main(["score", str(photo_dir), "--model", "tiny", "--weights", str(folder), "--device", "cpu",
                 "--out", str(tmp_path / "s.csv")]) == 0
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("model "))
    assert str(folder.resolve()) in line and model.source.fingerprint in line
    assert "cpu fp32" in line and "[random init: meaningless]" in line


def test_random_init_travels_with_the_weights_file(tmp_path, no_network):
    from safetensors import safe_open

    from clipiqa.weights import weights_are_random
    model = clipiqa.load_model("tiny")
    folder = export_backbone(model.clip, model.source, tmp_path / "w")
    with safe_open(str(folder / "open_clip_model.safetensors"), "pt") as f:
        assert f.metadata()["clipiqa_random_init"] == "true"
    bare = tmp_path / "copied.safetensors"
    bare.write_bytes((folder / "open_clip_model.safetensors").read_bytes())  # the file alone, no config
    assert clipiqa.load_model("tiny", weights=bare).random_init
    assert weights_are_random("tiny") and weights_are_random("tiny", weights=folder)
    assert weights_are_random("tiny", weights=bare) and weights_are_random(str(folder))
    by_folder_name = clipiqa.load_model(str(folder))
    assert by_folder_name.source.arch == "ViT-B-32" and by_folder_name.source.preset == str(folder.resolve())
    assert by_folder_name.source.fingerprint == model.source.fingerprint


def test_weights_line_says_what_the_lesson_toy_is():
    import clipiqa
    from clipiqa.weights import weights_line
    model = clipiqa.load_model("lesson", device="cpu")
    line = weights_line(model)
    visual = model.clip.visual
    layers, width = len(visual.transformer.resblocks), visual.transformer.width
    assert f"a toy open_clip ViT: {model.transform_spec.size} px, {layers} layers, width {width}" in line
    assert model.source.arch not in line  # not the name of a real CLIP its config borrows
