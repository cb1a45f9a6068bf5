"""Tests for clipiqa.data.demo (the embedded demo set)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from clipiqa.data import demo
from clipiqa.data.demo import (
    DEFAULT_TYPES,
    DEMO_COLUMNS,
    PHOTOS,
    available_photos,
    build_demo_set,
    demo_references,
    stable_seed,
)
from clipiqa.data.distortions import DISTORTIONS, apply_distortion

SMALL = dict(types=["gaussian_blur", "white_noise"], size=48)


def test_all_photos_load_offline():
    assert available_photos() == list(PHOTOS)
    assert len(PHOTOS) == 11


def test_demo_references_are_square_uint8():
    refs = demo_references(64)
    assert list(refs) == list(PHOTOS)
    for img in refs.values():
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert len({img.tobytes() for img in refs.values()}) == len(refs)
    with pytest.raises(ValueError, match="unknown demo photos"):
        demo_references(64, names=["lena"])


def test_stable_seed_is_stable():
    assert stable_seed(0, "astronaut", "jpeg") == stable_seed(0, "astronaut", "jpeg")
    assert stable_seed(0, "astronaut", "jpeg") != stable_seed(1, "astronaut", "jpeg")
    assert stable_seed("a") == 7299139317422481125  # fixed forever: not Python's hash()


def test_build_table_columns_attrs_and_labels(tmp_path):
    df = build_demo_set(tmp_path, **SMALL)
    assert tuple(df.columns) == DEMO_COLUMNS
    assert len(df) == 11 * (1 + 2 * 5)
    assert df.attrs["dataset"] == "demo" and df.attrs["synthetic"] is True
    assert df.attrs["score_range"] == (0, 5) and df.attrs["higher_better"] is False
    assert "not human MOS" in df.attrs["label_kind"]
    refs = df[df.distortion == "reference"]
    assert (refs.level == 0).all() and (refs.mos == 0).all() and (refs.q == 1.0).all()
    dist = df[df.distortion != "reference"]
    assert np.allclose(dist.q, 1 - dist.level / 5) and np.allclose(dist.mos, dist.level)
    assert set(dist.level) == {1, 2, 3, 4, 5} and df.mos_std.isna().all()
    assert set(df.content_id) == set(PHOTOS)
    for path in df.path:
        assert os.path.isabs(path) and os.path.isfile(path)
    with Image.open(df.path.iloc[3]) as im:
        assert im.size == (48, 48) and im.mode == "RGB"


def test_files_match_apply_distortion(tmp_path):
    df = build_demo_set(tmp_path, types=["white_noise"], levels=(2,), size=48, seed=7)
    row = df[(df.content_id == "coffee") & (df.distortion == "white_noise")].iloc[0]
    ref = demo_references(48, names=["coffee"])["coffee"]
    want = apply_distortion(ref, "white_noise", 2, rng=stable_seed(7, "coffee", "white_noise"))
    assert np.array_equal(np.asarray(Image.open(row.path)), want)


def test_second_call_reuses_cache(tmp_path, monkeypatch):
    first = build_demo_set(tmp_path, **SMALL)
    mtimes = {p: os.stat(p).st_mtime_ns for p in first.path}

    def fail(*args, **kwargs):
        raise AssertionError("the cache was not reused")

    monkeypatch.setattr(demo, "apply_distortion", fail)
    start = time.perf_counter()
    second = build_demo_set(tmp_path, **SMALL)
    assert time.perf_counter() - start < 5
    assert second.equals(first)
    assert {p: os.stat(p).st_mtime_ns for p in second.path} == mtimes


def test_changed_settings_rebuild(tmp_path):
    a = build_demo_set(tmp_path, seed=0, **SMALL)
    pixels = np.asarray(Image.open(a[a.distortion == "white_noise"].path.iloc[0]))
    b = build_demo_set(tmp_path, seed=1, **SMALL)
    again = np.asarray(Image.open(b[b.distortion == "white_noise"].path.iloc[0]))
    assert not np.array_equal(pixels, again)
    assert json.loads((tmp_path / "manifest.json").read_text())["settings"]["seed"] == 1


def test_interrupted_build_resumes(tmp_path, monkeypatch):
    df = build_demo_set(tmp_path, **SMALL)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    os.unlink(df.path.iloc[5])
    calls = []
    real = demo.apply_distortion
    monkeypatch.setattr(demo, "apply_distortion", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = build_demo_set(tmp_path, **SMALL)
    assert len(calls) == 1 and os.path.isfile(again.path.iloc[5])


def test_deterministic_across_folders(tmp_path):
    a = build_demo_set(tmp_path / "a", **SMALL)
    b = build_demo_set(tmp_path / "b", **SMALL)
    for pa, pb in zip(a.path, b.path):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))


def test_default_cache_dir_uses_env_and_settings_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPIQA_CACHE", str(tmp_path))
    df = build_demo_set(levels=(1,), **SMALL)
    folder = df.attrs["cache_dir"]
    assert os.path.dirname(folder) == str(tmp_path)
    assert os.path.basename(folder).startswith("demo-")
    other = build_demo_set(levels=(2,), **SMALL)
    assert other.attrs["cache_dir"] != folder


def test_types_and_levels_validated(tmp_path):
    with pytest.raises(ValueError, match="unknown distortion types"):
        build_demo_set(tmp_path, types=["nope"])
    with pytest.raises(ValueError, match="levels"):
        build_demo_set(tmp_path, levels=(0, 6))
    df = build_demo_set(tmp_path, types="all", levels=(1,), size=16, include_references=False)
    assert set(df.distortion) == set(DISTORTIONS) and (df.level == 1).all()


def test_demo_set_and_meta_tasks_share_their_cache_root_types_and_references(tmp_path, monkeypatch):
    """The demo set and the synthetic meta tasks go under the same $CLIPIQA_CACHE, accept and refuse the same
    distortion names, and square their references the same way."""
    from clipiqa.data import demo_references
    from clipiqa.meta import synthetic_tasks
    monkeypatch.setenv("CLIPIQA_CACHE", str(tmp_path))
    refs = demo_references(size=24, names=["astronaut", "coffee"])
    tasks = synthetic_tasks(refs, types="all", levels=(1,), size=24)
    assert [t.name for t in tasks] == list(DISTORTIONS)  # "all", as build_demo_set takes it
    assert os.path.dirname(tasks[0].table.attrs["cache_dir"]) == str(tmp_path)
    for build in (lambda t: build_demo_set(tmp_path / "d", types=t), lambda t: synthetic_tasks(refs, types=t)):
        with pytest.raises(ValueError, match=r"unknown distortion types \['nope'\]; valid: .*\(or 'all'\)"):
            build(["nope"])
    clean = tasks[0].table.query("level == 0").set_index("content_id")["path"]
    for name, ref in refs.items():
        assert np.array_equal(np.asarray(Image.open(clean[name])), ref)


def test_default_types_cover_every_category():
    cats = {DISTORTIONS[t].category for t in DEFAULT_TYPES}
    assert len(DEFAULT_TYPES) == 8 and len(cats) == 8


@pytest.mark.slow
def test_default_build(tmp_path):
    """The default build (11 photos x 8 types x 5 levels at 256 px + references);
    measured about 5 s on 2 cores."""
    df = build_demo_set(tmp_path)
    assert len(df) == 11 * (1 + len(DEFAULT_TYPES) * 5)
    assert set(df.distortion) == set(DEFAULT_TYPES) | {"reference"}
