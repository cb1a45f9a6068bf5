"""The shared name registry and the shared image cache (clipiqa.registry, clipiqa.data.image_cache)."""
import numpy as np
import pytest
from PIL import Image

import clipiqa.data.image_cache as image_cache
from clipiqa.data.image_cache import ImageCache
from clipiqa.registry import Registry


def test_registry_lists_every_choice_when_a_name_is_unknown():
    r = Registry("widget", describe=lambda e: e.upper())
    r.add("a", "first")
    r.add("b", "second")
    assert r.get_or_explain("a") == "first" and list(r) == ["a", "b"] and r.unknown(["a", "x", "y"]) == ["x", "y"]
    with pytest.raises(ValueError, match=r"unknown widget 'z'; use one of: a: FIRST; b: SECOND"):
        r.get_or_explain("z")


def test_registry_refuses_a_second_entry_of_a_name_unless_replaced():
    r = Registry("widget")
    r.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.add("a", 2)
    r.add("a", 2, replace=True)
    assert r["a"] == 2


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, side in enumerate((10, 20, 30)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((side, side, 3), i * 50, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _counting(monkeypatch):
    reads = []
    real = image_cache.load_image

    def load(path, *a, **k):
        reads.append(str(path))
        return real(path, *a, **k)
    monkeypatch.setattr(image_cache, "load_image", load)
    return reads


def test_cache_keeps_images_and_drops_the_least_recently_used(images, monkeypatch):
    reads = _counting(monkeypatch)
    cache = ImageCache(max_images=2)
    first = cache.get(images[:2])
    assert cache.get(images[:1])[0] is first[0] and reads == images[:2]  # a hit reads nothing
    cache.get(images[2:])  # third image: drops images[1], the least recently used
    cache.get(images[1:2])
    assert reads == images[:3] + [images[1]] and len(cache) == 2


def test_cache_byte_bound_counts_rgb_pixels(images, monkeypatch):
    reads = _counting(monkeypatch)
    cache = ImageCache(max_bytes=20 * 20 * 3)  # room for image 1 (20 px), not for 1 and 2 (30 px) together
    out = cache.get(images)
    assert [im.width for im in out] == [10, 20, 30]  # every image returned, whatever is kept
    assert cache.nbytes <= 20 * 20 * 3
    cache.get(images[2:])
    assert reads.count(images[2]) == 2  # too large to keep: read again


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_cache_bounds_are_checked(bad):
    with pytest.raises(ValueError, match="max_images"):
        ImageCache(max_images=bad)
