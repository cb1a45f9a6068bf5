"""Which precision runs: ``amp=None`` keeps today's behaviour (bf16 on CUDA only), ``"auto"``
uses bf16 on CPUs with native bf16 with the pixel stage kept in fp32, and the weights line says which runs."""
from __future__ import annotations

import pytest
import torch

import clipiqa
import clipiqa.inference as inference
from clipiqa.inference import cpu_has_native_bf16, precision_name, predict_batches, uses_bf16

SAPPHIRE = "processor : 0\nflags\t\t: fpu vme sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
SKYLAKE = "processor : 0\nflags\t\t: fpu vme sse avx2 avx512f avx512bw\n"
NATIVE = cpu_has_native_bf16()  # this machine, read before any test patches it


def test_native_bf16_is_read_from_cpu_flags():
    assert cpu_has_native_bf16(SAPPHIRE)
    assert cpu_has_native_bf16("flags : avx512_bf16\n")
    assert not cpu_has_native_bf16(SKYLAKE)
    assert not cpu_has_native_bf16("")


@pytest.mark.parametrize("native", [True, False])
def test_amp_settings(native, monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    assert not uses_bf16("cpu", None) and not uses_bf16("cpu", False) and uses_bf16("cpu", True)
    assert uses_bf16("cpu", "auto") == native
    assert uses_bf16("cuda", None) and not uses_bf16("cuda", False)
    assert not uses_bf16("meta", True)  # devices without autocast run in full precision
    assert precision_name("cpu") == "fp32"
    assert precision_name("cpu", "auto") == ("bf16 matmuls (oneDNN; pixel stage and head fp32)" if native
                                             else "fp32")
    with pytest.raises(ValueError, match="amp='fast' is not allowed"):
        uses_bf16("cpu", "fast")


def test_auto_keeps_the_pixel_stage_in_fp32_and_runs_bf16_matmuls_not_autocast(monkeypatch):
    """On a CPU, "auto" is fp32 tensors with oneDNN bf16 matmuls after the pixel stage (plain autocast is 4x
    slower there: clipiqa.inference.cpu_bf16_matmuls); amp=True is autocast; the setting is restored after."""
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    model = clipiqa.load_model("tiny", device="cpu")
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    seen = {}
    hooks = [block.mlp.c_fc.register_forward_hook(
        lambda m, i, o, k=k: seen.__setitem__(k, (o.dtype, matmul.fp32_precision)))
        for k, block in enumerate(model.clip.visual.transformer.resblocks)]
    x = torch.rand(2, 3, 224, 224)
    try:
        auto = predict_batches(model, [x], amp="auto")
        assert seen == {0: (torch.float32, before), 1: (torch.float32, "bf16")}
        assert matmul.fp32_precision == before
        plain = predict_batches(model, [x], amp=True)
        assert seen == {0: (torch.bfloat16, before), 1: (torch.bfloat16, before)}
        fp32 = predict_batches(model, [x], amp=None)
        assert seen == {0: (torch.float32, before), 1: (torch.float32, before)}
    finally:
        for h in hooks:
            h.remove()
    assert auto.margin.dtype == plain.margin.dtype == fp32.margin.dtype == torch.float32
    if NATIVE:  # oneDNN rounds to bf16 only where the CPU computes it
        assert not torch.equal(auto.margin, fp32.margin), "bf16 matmuls did not run"


def test_bf16_matmuls_restore_the_setting_after_an_error():
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    with pytest.raises(RuntimeError):
        with inference.cpu_bf16_matmuls():
            assert matmul.fp32_precision == "bf16"
            raise RuntimeError("boom")
    assert matmul.fp32_precision == before


def test_weights_line_says_precision_and_labels(capsys):
    from types import SimpleNamespace

    from clipiqa.weights import ModelSource, weights_line
    model = clipiqa.load_model("tiny")
    assert weights_line(model).endswith("cpu fp32 [random init: meaningless]")
    toy = SimpleNamespace(device=torch.device("cpu"), source=ModelSource(
        preset="lesson", arch="ViT-B-32", weights="lesson:committed /x/lesson.safetensors", random_init=False,
        model_cfg={}, preprocess_cfg={}, fingerprint="0123456789abcdef", toy=True))
    line = weights_line(toy)
    assert "lesson:committed /x/lesson.safetensors" in line and "0123456789abcdef" in line and "toy" in line
    real = SimpleNamespace(device=torch.device("cuda"), source=ModelSource(
        preset="vitb16-openai", arch="ViT-B-16", weights="hub:timm/vit_base_patch16_clip_224.openai",
        random_init=False, model_cfg={}, preprocess_cfg={}, fingerprint="feedfacefeedface"))
    line = weights_line(real)
    assert "hub timm/vit_base_patch16_clip_224.openai" in line and "[" not in line and "bf16" in line


def test_bf16_matmuls_from_two_threads_leave_the_process_setting_as_it_was():
    """Two scorers with amp="auto" (e.g. a panel's background run and a notebook cell) overlap and exit out of
    order: the process-wide oneDNN setting must come back to what it was, not stay at bf16."""
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    first, second = inference.cpu_bf16_matmuls(), inference.cpu_bf16_matmuls()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert matmul.fp32_precision == "bf16"  # the second scorer still runs
    second.__exit__(None, None, None)
    assert matmul.fp32_precision == before
