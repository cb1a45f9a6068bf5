"""Shared fixtures. Every model here is the random-init `tiny` preset: numbers from it are never quality
results, only checks that the machinery computes what it should."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # fixture builders: fixtures_datasets, bad_images
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves a core to subprocess tests


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def tiny():
    """The tiny model with its (untrained) prompts switched on, as a model in training sees them."""
    import clipiqa
    return clipiqa.load_model("tiny", device="cpu").enable_adapters()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 224, 224, generator=g)


@pytest.fixture
def photo_dir(tmp_path):
    """A folder of four real packaged photos (scikit-image / matplotlib) as JPEG and PNG."""
    from PIL import Image
    from skimage import data
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg", quality=92)
    return folder


@pytest.fixture(scope="session")
def demo_table(tmp_path_factory):
    """A small embedded demo set (synthetic severities, not human MOS), shuffled so contents mix."""
    from clipiqa.data import build_demo_set
    table = build_demo_set(tmp_path_factory.mktemp("demo"), types=["gaussian_blur", "white_noise"], size=64)
    return table.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture
def meta_image_reads(monkeypatch):
    """Every image path meta pre-training reads, as ``(phase, path)`` with phase "eval" while a held-out task
    is scored and "train" otherwise (spies on ``clipiqa.meta``'s image store)."""
    from clipiqa.data.image_cache import ImageCache
    from clipiqa.meta.runner import Runner
    reads: list[tuple[str, str]] = []
    phase = {"now": "train"}
    original_get, original_eval = ImageCache.get, Runner.evaluate_task

    def get(self, paths):
        paths = list(paths)
        reads.extend((phase["now"], p) for p in paths)
        return original_get(self, paths)

    def evaluate_task(self, name, theta):
        phase["now"] = "eval"
        try:
            return original_eval(self, name, theta)
        finally:
            phase["now"] = "train"

    monkeypatch.setattr(ImageCache, "get", get)
    monkeypatch.setattr(Runner, "evaluate_task", evaluate_task)
    return reads


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Synthetic meta pre-training tasks (tests/meta_fixtures.py: TYPES x PHOTOS at 64 px)."""
    from meta_fixtures import build_tasks
    return build_tasks(tmp_path_factory.mktemp("meta-tasks"))


@pytest.fixture
def no_network(monkeypatch):
    """Any network access fails the test."""
    from rehearsal import refuse_network
    refuse_network(monkeypatch)
