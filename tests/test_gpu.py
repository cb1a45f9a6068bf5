"""CUDA checks (skipped without a GPU; run by benchmarks/gpu_check.sh on a lent GPU machine)."""
import pandas as pd
import pytest
import torch

import clipiqa
from clipiqa.finetune import AdaptConfig, adapt
from clipiqa.data import build_demo_set

pytestmark = pytest.mark.gpu


def test_cuda_scores_match_cpu(images):
    cpu = clipiqa.load_model("tiny", device="cpu")
    gpu = clipiqa.load_model("tiny", device="cuda")
    with torch.no_grad():
        a = cpu.score(images)
        b = gpu.score(images.cuda()).cpu()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_bf16_adaptation_runs_on_cuda(tmp_path):
    table = build_demo_set(tmp_path / "demo", types=["gaussian_blur", "white_noise"], levels=(1, 3, 5), size=128)
    model = clipiqa.load_model("vitb16-random", device="cuda")
    history = adapt(model, table.sample(24, random_state=0), AdaptConfig(epochs=3, batch_size=24, augment="model"))
    losses = pd.DataFrame(history.steps)["loss"]
    assert losses.notna().all() and len(losses) == 3
    assert model.quality_tokens.device.type == "cuda"


def test_attribution_memory_is_bounded_on_cuda():
    from clipiqa.explain import attribute
    model = clipiqa.load_model("vitb16-random", device="cuda")
    x = torch.randn(2, 3, 224, 224, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    maps = attribute(model, x, method="ig")
    assert maps.shape == (2, 224, 224)
    assert torch.cuda.max_memory_allocated() < 8 * 2**30
