"""Tests for clipiqa.imageio: every messy-image kind gets its defined outcome."""

from __future__ import annotations

import io
import pickle
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from bad_images import EXIF_STORED_SIZE, EXPECTED_REASONS, EXPECTED_SIZES, write_bad_images
from clipiqa.imageio import (
    DEFAULT_MAX_SIDE,
    IMAGE_EXTENSIONS,
    REASONS,
    ImageLoadError,
    list_images,
    load_image,
    load_rgb_array,
)


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """All messy-image kinds, written once for this module."""
    return write_bad_images(tmp_path_factory.mktemp("bad"))


def _load(bad, name) -> np.ndarray:
    return load_rgb_array(bad[name][0])


# ---------------------------------------------------------------- defined outcomes


def test_every_kind_has_its_defined_outcome(bad):
    assert set(EXPECTED_REASONS) | set(EXPECTED_SIZES) == set(bad)
    for name, (path, expected) in bad.items():
        if expected == "ok":
            im = load_image(path)
            assert im.mode == "RGB", name
            assert im.size == EXPECTED_SIZES[name], name
        else:
            with pytest.raises(ImageLoadError) as info:
                load_image(path)
            err = info.value
            assert err.reason == EXPECTED_REASONS[name], name
            assert err.reason in REASONS
            assert err.path == path and path in str(err), name


def test_error_messages_say_what_to_do(bad):
    with pytest.raises(ImageLoadError, match=r"truncated.*JPEG.*re-export or remove it"):
        load_image(bad["truncated_jpeg"][0])
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(bad["text_named_jpg"][0])
    with pytest.raises(ImageLoadError, match="raise max_pixels"):
        load_image(bad["bomb_png"][0])


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.reason == "missing"
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path)
    assert info.value.reason == "unreadable"


def test_corrupt_png_is_an_error_not_truncated(tmp_path):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[data.find(b"IDAT") + 200] ^= 0xFF
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "corrupt"


def test_error_is_a_valueerror_and_pickles(bad):
    with pytest.raises(ValueError) as info:
        load_image(bad["empty_jpg"][0])
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, ImageLoadError)
    assert (copy.path, copy.reason, str(copy)) == (info.value.path, "empty", str(info.value))


# ------------------------------------------------------------------- conversions


def test_exif_rotation_applied(bad):
    a = _load(bad, "exif_rotated_jpeg").astype(int)
    w, h = EXIF_STORED_SIZE
    assert a.shape == (w, h, 3)  # rotated: stored width became height
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])
    # the stored top-left red block is at the top-right after a 90-degree CW turn
    assert np.abs(a[2:10, -8:-2].mean(axis=(0, 1)) - red).max() < 20
    assert np.abs(a[2:10, 2:8].mean(axis=(0, 1)) - blue).max() < 20
    assert np.abs(a[-10:-2, -8:-2].mean(axis=(0, 1)) - blue).max() < 20


def test_16bit_png_scaled_not_clipped(bad):
    a = _load(bad, "png_16bit")
    assert np.all(a[..., 0] == a[..., 2])
    row = a[0, :, 0].astype(int)
    expected = np.rint(np.linspace(0, 65535, 256) / 257)
    assert np.abs(row - expected).max() <= 1
    assert 100 < row[128] < 156  # a clipping loader would give 255 here


def test_mode_i_tiff_scaled(bad):
    row = _load(bad, "mode_i_tiff")[0, :, 1].astype(int)
    assert np.abs(row - np.rint(np.linspace(0, 255, 256))).max() <= 1


def test_mode_f_tiff_in_unit_range_scaled(bad):
    row = _load(bad, "mode_f_tiff")[0, :, 0].astype(int)
    assert np.abs(row - np.rint(np.linspace(0, 255, 40))).max() <= 1


def test_mode_f_and_i_outside_known_ranges_use_minmax(tmp_path):
    f = np.tile(np.linspace(-3.0, 5.0, 9, dtype=np.float32), (4, 1))
    Image.fromarray(f).save(tmp_path / "f.tif")
    i = np.tile(np.array([-100000, 0, 100000], np.int32), (4, 1))
    Image.fromarray(i).save(tmp_path / "i.tif")
    small = np.tile(np.array([0, 100, 255], np.int32), (4, 1))
    Image.fromarray(small).save(tmp_path / "small.tif")
    assert list(load_rgb_array(tmp_path / "f.tif")[0, :, 0]) == \
        list(np.rint(np.linspace(0, 255, 9)).astype(np.uint8))
    assert list(load_rgb_array(tmp_path / "i.tif")[0, :, 0]) == [0, 128, 255]
    assert list(load_rgb_array(tmp_path / "small.tif")[0, :, 0]) == [0, 100, 255]


def test_alpha_composited_on_white(bad):
    rgba = _load(bad, "rgba_png")
    assert np.all(rgba[:, :20] == 255)          # transparent half -> white
    assert np.all(rgba[:, 20:] == [255, 0, 0])  # opaque half keeps its colour
    la = _load(bad, "la_png")
    assert np.all(la[:, :20] == 255)
    assert np.all(la[:, 20:] == la[0, 25]) and la[0, 25, 0] < 255


def test_palette_with_and_without_transparency(bad):
    p = _load(bad, "palette_png")
    assert np.all(p[:, :20] == [0, 0, 0]) and np.all(p[:, 20:] == [0, 200, 0])
    pt = _load(bad, "palette_transparent_png")
    assert np.all(pt[:, :20] == 255) and np.all(pt[:, 20:] == [0, 200, 0])


def test_cmyk_greyscale_and_bilevel(bad):
    cmyk = _load(bad, "cmyk_jpeg").astype(int)
    assert np.abs(cmyk.mean(axis=(0, 1)) - [0, 255, 255]).max() < 8
    grey = _load(bad, "grey_l_png")
    assert np.all(grey[..., 0] == grey[..., 1]) and grey.max() > 200
    bilevel = _load(bad, "bilevel_1_png")
    assert set(np.unique(bilevel)) == {0, 255}


@pytest.mark.parametrize("fmt,ext", [("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"),
                                     ("TIFF", "tiff")])
def test_other_formats_load(tmp_path, fmt, ext):
    rng = np.random.default_rng(1)
    path = tmp_path / f"x.{ext}"
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path, fmt)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (30, 20)


# ------------------------------------------------------------------- size limits


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_image_downscaled_to_max_side(tmp_path, fmt):
    y, x = np.mgrid[0:1000, 0:3000]
    a = np.stack([x % 256, y % 256, (x // 12) % 256], -1).astype(np.uint8)
    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(a).save(path, fmt)
    im = load_image(path)
    assert max(im.size) == DEFAULT_MAX_SIDE and im.mode == "RGB"
    assert abs(im.size[1] - 1000 * DEFAULT_MAX_SIDE / 3000) <= 1
    small = load_image(path, max_side=300)
    assert small.size == (300, 100)
    full = load_image(path, max_side=None)
    assert full.size == (3000, 1000)


def test_bomb_rejected_before_decoding(bad, monkeypatch):
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name in ("bomb_png", "huge_bomb_png"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DecompressionBombWarning leaks out
            with pytest.raises(ImageLoadError) as info:
                load_image(bad[name][0])
        assert info.value.reason == "too_large"
        assert time.perf_counter() - start < 1.0
    # a normal photo is refused the same way when the limit is set low
    with pytest.raises(ImageLoadError) as info:
        load_image(bad["good_photo_png"][0], max_pixels=1000)
    assert info.value.reason == "too_large"


def test_pillow_global_state_untouched(bad):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for path, _ in bad.values():
        try:
            load_image(path)
        except ImageLoadError:
            pass
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def test_result_is_detached_from_the_file(bad, tmp_path):
    im = load_image(bad["good_photo_png"][0])
    arr = load_rgb_array(bad["good_photo_png"][0])
    assert arr.dtype == np.uint8 and arr.shape == (400, 600, 3)
    assert np.array_equal(np.asarray(im), arr)


# ----------------------------------------------------------------------- listing


def test_list_images(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    names = ["b.JPG", "a.png", "notes.txt", "sub/c.Tiff", "sub/deeper/d.webp", "sub/e.gif"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    found = [p.replace(str(tmp_path) + "/", "") for p in list_images(tmp_path)]
    assert found == sorted(["a.png", "b.JPG", "sub/c.Tiff", "sub/deeper/d.webp", "sub/e.gif"])
    flat = [p.replace(str(tmp_path) + "/", "") for p in list_images(tmp_path, recursive=False)]
    assert flat == ["a.png", "b.JPG"]
    # explicitly named files stay, whatever their extension, and missing ones too
    odd, missing = str(tmp_path / "notes.txt"), str(tmp_path / "gone.jpg")
    out = list_images([odd, missing, tmp_path / "sub", odd])
    assert out[:2] == [odd, missing] and len(out) == 5
    assert list_images(str(tmp_path / "*.png")) == [str(tmp_path / "a.png")]
    assert ".jpg" in IMAGE_EXTENSIONS and ".tif" in IMAGE_EXTENSIONS
