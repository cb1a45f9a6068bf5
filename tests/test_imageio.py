"""Tests for clipiqa.imageio: every messy-image kind gets its defined outcome."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from bad_images import EXIF_STORED_SIZE, EXPECTED_REASONS, EXPECTED_SIZES, write_bad_images
import clipiqa.imageio
from clipiqa.imageio import (
    DEFAULT_MAX_SIDE,
    IMAGE_EXTENSIONS,
    REASONS,
    ImageLoadError,
    SkippedFilesWarning,
    list_images,
    load_image,
    load_rgb_array,
    readable_extensions,
    scan_images,
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
    assert info.value.reason == "not_a_file"


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
    with pytest.warns(SkippedFilesWarning, match="notes.txt"):  # the .txt file is reported, not dropped silently
        found = [p.replace(str(tmp_path) + "/", "") for p in list_images(tmp_path)]
    assert found == sorted(["a.png", "b.JPG", "sub/c.Tiff", "sub/deeper/d.webp", "sub/e.gif"])
    with pytest.warns(SkippedFilesWarning):
        flat = [p.replace(str(tmp_path) + "/", "") for p in list_images(tmp_path, recursive=False)]
    assert flat == ["a.png", "b.JPG"]
    # explicitly named files stay, whatever their extension, and missing ones too
    odd, missing = str(tmp_path / "notes.txt"), str(tmp_path / "gone.jpg")
    out = list_images([odd, missing, tmp_path / "sub", odd])
    assert out[:2] == [odd, missing] and len(out) == 5
    assert list_images(str(tmp_path / "*.png")) == [str(tmp_path / "a.png")]
    assert ".jpg" in IMAGE_EXTENSIONS and ".tif" in IMAGE_EXTENSIONS


# ------------------------------------------------------------------ big photos: draft mode, --max-pixels

BIG = (12000, 9000)  # 108 MP, a current phone camera


@pytest.fixture(scope="module")
def big_jpegs(tmp_path_factory) -> dict[str, str]:
    """108-MP greyscale JPEGs (baseline and progressive), a few MB each on disk."""
    folder = tmp_path_factory.mktemp("big")
    im = Image.new("L", BIG, 128)
    paths = {"baseline": str(folder / "big108.jpg"), "progressive": str(folder / "big108_progressive.jpg")}
    im.save(paths["baseline"], quality=80)
    im.save(paths["progressive"], quality=80, progressive=True)
    return paths


def test_108mp_baseline_jpeg_loads_with_defaults_through_draft_mode(big_jpegs):
    im = load_image(big_jpegs["baseline"])
    assert im.size == (DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE * 3 // 4) and im.mode == "RGB"


def test_108mp_progressive_jpeg_needs_a_raised_max_pixels(big_jpegs):
    """A progressive JPEG keeps every DCT coefficient while decoding, whatever the scale: the full size counts."""
    with pytest.raises(ImageLoadError, match=r"progressive.*--max-pixels") as info:
        load_image(big_jpegs["progressive"])
    assert info.value.reason == "too_large"
    assert load_image(big_jpegs["progressive"], max_pixels=120_000_000).size == (2048, 1536)


def test_max_pixels_counts_what_is_decoded_not_declared(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (10, 20, 30)).save(path, quality=80)
    assert load_image(path, max_pixels=4_000_000, max_side=2000).size == (2000, 1500)  # decoded at 1/2: 3 MP
    with pytest.raises(ImageLoadError, match=r"12,000,000 pixels.*4,000,000"):
        load_image(path, max_pixels=4_000_000, max_side=None)  # no reduction: the full 12 MP decode


def test_max_pixels_above_pillows_limit_never_decodes_a_bomb(bad, monkeypatch):
    """A limit above Pillow's hard limit is capped at it: the 900-MP PNG bomb is still refused undecoded."""
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, *a, **k: pytest.fail("pixels were decoded"))
    for limit in (10**12, None):
        with pytest.raises(ImageLoadError, match="Pillow's safety limit") as info:
            load_image(bad["huge_bomb_png"][0], max_pixels=limit)
        assert info.value.reason == "too_large"


def test_jpeg_above_pillows_hard_limit_loads_in_draft_mode(tmp_path, monkeypatch):
    """A 200-MP phone JPEG is above Pillow's open-time limit (179 MP); in draft mode it decodes 1/64 of that."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000_000)  # scaled-down stand-in: hard limit 4 MP
    path = tmp_path / "phone.jpg"
    Image.new("L", (3000, 2000), 90).save(path)  # 6 MP > 4 MP
    assert load_image(path, max_pixels=None, max_side=400).size == (400, 267)
    with pytest.raises(ImageLoadError, match="Pillow's safety limit"):
        load_image(path, max_pixels=None, max_side=None)  # a full decode stays refused


def test_mpo_phone_photo_uses_draft_mode_too(tmp_path):
    """Phones write MPO (JPEG + extra frames); it is a JPEG to the decoder and decodes in draft mode."""
    path = tmp_path / "phone.jpg"
    first, second = Image.new("RGB", (4000, 3000), (200, 10, 10)), Image.new("RGB", (400, 300))
    first.save(path, "MPO", save_all=True, append_images=[second])
    with Image.open(path) as im:
        assert im.format == "MPO"
    assert load_image(path, max_pixels=4_000_000, max_side=1000).size == (1000, 750)


# -------------------------------------------------------------------------------- odd files


def _in_thread(fn, timeout=10.0):
    """Run fn in a daemon thread; fail (instead of hanging) if it blocks."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            result["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def test_fifo_is_named_as_a_pipe_and_never_blocks(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="named pipe") as info:
        _in_thread(lambda: load_image(fifo))
    assert info.value.reason == "not_a_file" and "empty" not in str(info.value)


def test_folder_and_broken_symlink_are_named(tmp_path):
    with pytest.raises(ImageLoadError, match="folder") as info:
        load_image(tmp_path)
    assert info.value.reason == "not_a_file"
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageLoadError, match="symbolic link") as info:
        load_image(link)
    assert info.value.reason == "missing"


def test_avif_and_every_pillow_format_are_scanned(tmp_path):
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    Image.new("RGB", (32, 24), (0, 120, 240)).save(tmp_path / "a.avif")
    Image.new("RGB", (32, 24), (0, 120, 240)).save(tmp_path / "b.qoi")
    assert [p.rsplit("/", 1)[-1] for p in list_images(tmp_path)] == ["a.avif", "b.qoi"]
    assert load_image(tmp_path / "a.avif").size == (32, 24)
    exts = readable_extensions()
    assert {".avif", ".jpg", ".png", ".tif", ".webp", ".qoi"} <= exts
    assert ".h5" not in exts and ".pdf" not in exts  # stubs / write-only formats are not "images"


def test_scan_reports_what_it_skipped(tmp_path):
    (tmp_path / "real").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "real" / "x.png")
    (tmp_path / "linked").symlink_to(tmp_path / "real")          # the same folder twice: scanned once
    (tmp_path / "real" / "loop").symlink_to(tmp_path)             # a loop back to the top
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "raw.cr9").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.jpg")
    result = _in_thread(lambda: scan_images(tmp_path))
    assert [os.path.relpath(p, tmp_path) for p in result.images] == ["real/x.png"]
    why = {os.path.relpath(s.path, tmp_path): s.reason for s in result.skipped}
    assert why == {"notes.txt": "unsupported_format", "raw.cr9": "unsupported_format", "pipe.jpg": "not_a_file",
                   "real/loop": "symlink_loop", "linked": "already_scanned"}
    text = "\n".join(result.describe())
    assert "named pipe" in text and ".cr9" in text and "loop" in text
    with pytest.warns(SkippedFilesWarning, match="skipped 5"):
        list_images(tmp_path)


def test_scan_reports_an_unreadable_folder(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x.png").write_bytes(b"x")
    (tmp_path / "ok.png").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)  # root here can read anything: fake the refusal
    result = scan_images(tmp_path)
    assert result.images == [str(tmp_path / "ok.png")]
    assert [(s.path, s.reason) for s in result.skipped] == [(str(tmp_path / "locked"), "unreadable_folder")]
    assert "Permission denied" in result.skipped[0].detail


def test_clean_folder_scan_warns_nothing(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list_images(tmp_path) == [str(tmp_path / "x.png")]


_RSS_PROBE = """
import importlib.util, json, sys
def peak_kb():  # VmHWM: this process's own peak (ru_maxrss would carry the forking parent's peak over exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
spec = importlib.util.spec_from_file_location("imageio_probe", sys.argv[1])
m = importlib.util.module_from_spec(spec); sys.modules["imageio_probe"] = m; spec.loader.exec_module(m)
from PIL import Image
Image.init()
before = peak_kb()
m.load_image(sys.argv[2], **json.loads(sys.argv[3]))
print((peak_kb() - before) / 1024)
"""


def _peak_rss_mb(path: str, **kwargs) -> float:
    """Peak RSS growth (MB) of one load_image call in a fresh process (imageio loaded alone, without torch)."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, clipiqa.imageio.__file__, path, json.dumps(kwargs)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from /proc (Linux)")
def test_draft_mode_keeps_memory_flat_for_a_108mp_jpeg(big_jpegs):
    """Measured here: the 108-MP greyscale JPEG costs ~65 MB in draft mode (a 3000x2250 decode, its RGB copy and
    the Lanczos reduction to 2048 px) and ~620 MB decoded whole; an RGB photo of that size ~80 MB vs ~830 MB."""
    drafted = _peak_rss_mb(big_jpegs["baseline"])
    whole = _peak_rss_mb(big_jpegs["baseline"], max_side=None, max_pixels=200_000_000)
    assert whole > 300, whole  # the full decode really is big: the probe measures something
    assert drafted < 100, drafted
