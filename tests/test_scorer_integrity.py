"""Exported scorers and checkpoint cards are verified before they score: a flipped byte, a swapped graph
or an edited scorer.json / card is refused naming the file; score_onnx.py gives the rows of `clipiqa score` on a
folder of hostile images (same scan, loader, pixel limits, CSV rule), checks --out before scoring, writes its CSV
atomically, and turns onnxruntime's raw errors into one line naming the file."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_images import write_bad_images
from PIL import Image

import clipiqa
from clipiqa.checkpoint import CheckpointCorruptError, CheckpointMismatchError
from clipiqa.cli import main
from clipiqa.csvio import read_csv
from clipiqa.export import export_onnx
from clipiqa.onnx_runner import OnnxScorer, ScorerError

ATOL = 1e-4
BLOCKED = ("torch", "clipiqa", "torchvision", "open_clip", "pandas")
PROBE = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked in this test: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = ['score_onnx.py'] + {argv!r}
try:
    runpy.run_path({runner!r}, run_name='__main__')
except SystemExit as e:
    sys.exit(e.code)
"""


def standalone(onnx: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    """score_onnx.py beside ``onnx`` in a fresh process where clipiqa, torch and pandas cannot be imported."""
    probe = PROBE.format(blocked=BLOCKED, argv=[str(onnx), *args], runner=str(onnx.with_name("score_onnx.py")))
    env = dict(os.environ, HOME=str(home)) if home is not None else None
    if env is not None:
        env.pop("XDG_CACHE_HOME", None)
        env.pop("ORT_DISABLE_TELEMETRY", None)
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, timeout=300, env=env,
                          cwd=onnx.parent)
    done.err = done.stderr.decode("utf-8", "replace")
    return done


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two exported scorers of the tiny model: zero-shot, and with a perturbed text context (another graph)."""
    root = tmp_path_factory.mktemp("exports")
    model = clipiqa.load_model("tiny", device="cpu")
    (root / "zero").mkdir()
    zero = export_onnx(model, root / "zero" / "scorer.onnx")
    model.set_trainable("text")
    with torch.no_grad():
        for _, p in model.adapter_parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    model.enable_adapters(True)
    (root / "other").mkdir()
    other = export_onnx(model, root / "other" / "scorer.onnx")
    return zero, other


@pytest.fixture
def deploy(tmp_path, exports):
    """A fresh copy of the zero-shot scorer's folder (to tamper with)."""
    shutil.copytree(exports[0].parent, tmp_path / "deploy")
    return tmp_path / "deploy" / "scorer.onnx"


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _onnx_cli(onnx, folder, out, capsys, *extra):
    code = main(["score", str(folder), "--onnx", str(onnx), "--out", str(out), *extra])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------ a changed byte is refused
def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped byte", "swapped graph", "truncated"])
def test_a_changed_onnx_file_is_refused_before_scoring(deploy, exports, photos, tmp_path, capsys, damage):
    if damage == "flipped byte":
        _flip_byte(deploy)
    elif damage == "swapped graph":
        shutil.copyfile(exports[1], deploy)
    else:
        deploy.write_bytes(deploy.read_bytes()[: deploy.stat().st_size // 3])
    code, err = _onnx_cli(deploy, photos, tmp_path / "a.csv", capsys)
    assert code == 1 and str(deploy) in err and "does not match the SHA-256" in err and "export" in err, err
    assert "scored" not in err.replace("nothing was scored", "") and not (tmp_path / "a.csv").exists()
    done = standalone(deploy, str(photos), "--out", str(tmp_path / "b.csv"))
    assert done.returncode == 1 and "does not match the SHA-256" in done.err and str(deploy) in done.err, done.err
    assert "Traceback" not in done.err and len(done.err.strip().splitlines()) == 1, done.err
    assert not (tmp_path / "b.csv").exists()


# ------------------------------------------------------------------------------ an edited scorer.json is refused
@pytest.mark.parametrize("edit", ["mean", "size", "label"])
def test_an_edited_scorer_json_is_refused_naming_the_entry(deploy, photos, tmp_path, capsys, edit):
    meta_path = deploy.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    if edit == "mean":
        meta["preprocess"]["mean"][0] = 0.981
    elif edit == "size":
        meta["preprocess"]["resize"] = 256
    else:
        meta["label"] = ""
    meta_path.write_text(json.dumps(meta, indent=4))
    code, err = _onnx_cli(deploy, photos, tmp_path / "a.csv", capsys)
    assert code == 1 and str(meta_path) in err and "edited" in err, err
    assert ("preprocess" if edit != "label" else "label") in err and not (tmp_path / "a.csv").exists()
    done = standalone(deploy, str(photos))
    assert done.returncode == 1 and "edited" in done.err and done.stdout == b"", done.err


def test_a_reformatted_scorer_json_still_scores(deploy, photos):
    meta_path = deploy.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(reversed(list(meta.items()))), indent=1))
    assert len(OnnxScorer(deploy).score_paths([str(p) for p in sorted(photos.iterdir())])) == 3


def test_an_old_scorer_json_without_entry_hashes_scores_with_a_warning_and_its_graph_is_still_checked(deploy,
                                                                                                  photos):
    meta_path = deploy.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["integrity"]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="no hash of its own entries"):
        rows = OnnxScorer(deploy).score_paths([str(p) for p in sorted(photos.iterdir())])
    assert all(r["status"] == "ok" for r in rows)
    _flip_byte(deploy)
    with pytest.warns(UserWarning), pytest.raises(ScorerError, match="does not match the SHA-256"):
        OnnxScorer(deploy)


def _unsealed(deploy: Path, **preprocess) -> None:
    """An old-style scorer.json (no entry hashes) whose onnx_sha256 matches the graph as it now is."""
    from clipiqa.onnx_runner import file_sha256
    meta_path = deploy.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["integrity"]
    meta["preprocess"].update(preprocess)
    meta["onnx_sha256"] = file_sha256(deploy)
    meta_path.write_text(json.dumps(meta))


def test_a_graph_and_json_from_different_exports_give_one_line_naming_both(deploy, photos, tmp_path):
    _unsealed(deploy, size=200, resize=200)
    done = standalone(deploy, str(photos), "--out", str(tmp_path / "rows.csv"))
    assert done.returncode == 1 and "Traceback" not in done.err, done.err
    assert str(deploy) in done.err and "size 200" in done.err and "different exports" in done.err, done.err
    assert not (tmp_path / "rows.csv").exists()


def test_a_truncated_model_that_onnxruntime_cannot_load_is_one_line(deploy, photos):
    deploy.write_bytes(deploy.read_bytes()[:5000])
    _unsealed(deploy)
    done = standalone(deploy, str(photos))
    assert done.returncode == 1 and "Traceback" not in done.err, done.err
    assert f"{deploy} cannot be loaded by onnxruntime" in done.err and "export" in done.err, done.err


# ----------------------------------------------------------------------- score_onnx.py gives clipiqa score's rows
def test_non_utf8_names_round_trip_like_clipiqa_score(deploy, photos, tmp_path, capsys):
    raw = os.path.join(os.fsencode(photos), b"caf\xe9 \"x\",1.png")
    with open(raw, "wb") as f:
        Image.new("RGB", (30, 30), (200, 10, 10)).save(f, format="PNG")
    done = standalone(deploy, str(photos), "--out", str(tmp_path / "standalone.csv"))
    assert done.returncode == 0, done.err
    code, err = _onnx_cli(deploy, photos, tmp_path / "clipiqa.csv", capsys)
    assert code == 0, err
    mine, theirs = read_csv(tmp_path / "standalone.csv"), read_csv(tmp_path / "clipiqa.csv")
    assert list(mine["path"]) == list(theirs["path"]) and os.fsdecode(raw) in list(mine["path"])
    assert b"caf\xe9 \"\"x\"\",1.png\"" in (tmp_path / "standalone.csv").read_bytes()


def test_out_into_a_missing_folder_fails_before_scoring(deploy, photos, tmp_path):
    done = standalone(deploy, str(photos), "--out", str(tmp_path / "missing" / "rows.csv"))
    assert done.returncode == 1 and "Traceback" not in done.err, done.err
    assert "does not exist" in done.err and str(tmp_path / "missing") in done.err and "scored" not in \
        done.err.replace("nothing was scored", ""), done.err


def test_a_failed_write_leaves_the_previous_csv_and_no_partial_file(deploy, photos, tmp_path, monkeypatch, capsys):
    import clipiqa.onnx_runner as runner
    out = tmp_path / "rows.csv"
    out.write_text("previous complete file\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    assert runner.main([str(deploy), str(photos), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left" in err and str(out) in err, err
    assert out.read_text() == "previous complete file\n"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".clipiqa-tmp")]


# ----------------------------------------------------------------- hostile images, --out checked, atomic writes
def _hostile_folder(root: Path) -> Path:
    folder = root / "hostile"
    write_bad_images(folder)
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    photo.save(folder / "photo.avif")
    photo.save(folder / "photo.jp2")
    (folder / "broken.jp2").write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 20)
    big = Image.fromarray(np.tile(np.arange(4200, dtype=np.uint8), (3000, 1)))
    big.save(folder / "big_baseline.jpg", quality=70)
    big.save(folder / "big_progressive.jpg", quality=70, progressive=True)
    with open(os.path.join(os.fsencode(folder), b"n\xe4me.png"), "wb") as f:
        photo.save(f, format="PNG")
    return folder


def test_hostile_images_give_equal_rows_through_all_three_scorers(deploy, tmp_path, capsys):
    """torch `clipiqa score`, `clipiqa score --onnx` and score_onnx.py without clipiqa: same paths in the same
    order, same status, margins within 1e-4 (16-bit PNG, AVIF, JPEG 2000, bombs, the progressive-JPEG pixel
    rule, a name that is not UTF-8)."""
    folder = _hostile_folder(tmp_path)
    limit = ["--max-pixels", "4M"]  # baseline 4200x3000 decodes at 1/2 scale (3.2 MP); progressive holds 12.6 MP
    assert main(["score", str(folder), "--model", "tiny", "--device", "cpu", "--out", str(tmp_path / "torch.csv"),
                 *limit]) == 2
    torch_err = capsys.readouterr().err
    code, onnx_err = _onnx_cli(deploy, folder, tmp_path / "onnx.csv", capsys, *limit)
    assert code == 2, onnx_err
    done = standalone(deploy, str(folder), "--out", str(tmp_path / "standalone.csv"), *limit)
    assert done.returncode == 2, done.err
    tables = [read_csv(tmp_path / f"{name}.csv") for name in ("torch", "onnx", "standalone")]
    reference = tables[0].set_index("path")
    expect_error = {"bomb.png", "huge_bomb.png", "big_progressive.jpg", "broken.jp2", "truncated.jpg", "empty.jpg"}
    for name in expect_error:
        assert reference.loc[str(folder / name), "status"] == "error", name
    for name in ("grey16.png", "photo.avif", "photo.jp2", "big_baseline.jpg", "n\udce4me.png"):
        assert reference.loc[os.fsdecode(os.path.join(os.fsencode(str(folder)), os.fsencode(name))),
                             "status"] == "ok", name
    for table in tables[1:]:
        assert list(table["path"]) == list(tables[0]["path"])
        assert list(table["status"]) == list(tables[0]["status"])
        ok = (table["status"] == "ok").to_numpy()
        diff = np.abs(table["logit_margin"].to_numpy()[ok] - tables[0]["logit_margin"].to_numpy()[ok])
        assert diff.max() <= ATOL, diff.max()
    for err in (torch_err, onnx_err, done.err):  # every failed file also has its line on stderr
        assert all(str(folder / name) in err for name in expect_error), err


# ------------------------------------------------------------------------- onnxruntime leaves the home alone
def test_onnxruntime_writes_nothing_under_home(deploy, photos, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = standalone(deploy, str(photos), home=home)
    assert done.returncode == 0, done.err
    assert not list(home.rglob("*")), sorted(map(str, home.rglob("*")))


def test_a_pickle_weights_file_is_one_line_naming_it(tmp_path, photos, capsys):
    import pickle
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3], "note": object.__name__}))
    assert main(["score", str(photos), "--model", "tiny", "--weights", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"weights file {path} cannot be loaded" in err and "never unpickled" in err, err


# ------------------------------------------------------------------------------ an edited card is refused
@pytest.fixture
def checkpoint(tmp_path):
    model = clipiqa.load_model("tiny")
    model.set_trainable("text")
    clipiqa.save_checkpoint(model, tmp_path / "ckpt", trainable="text")
    return tmp_path / "ckpt"


def _edit_card(ckpt: Path, edit) -> None:
    card = json.loads((ckpt / "card.json").read_text())
    edit(card)
    (ckpt / "card.json").write_text(json.dumps(card, indent=2))


@pytest.mark.parametrize("entry, edit", [
    ("eval_transform", lambda c: c["eval_transform"]["mean"].__setitem__(0, 0.981)),
    ("eval_transform", lambda c: c["eval_transform"].update(size=300, resize=300)),
    ("eval_transform", lambda c: c["eval_transform"].update(resize_mode="squash")),
    ("prompt_config", lambda c: c["prompt_config"].update(classnames=["high qualitx", "low quality"])),
    ("backbone", lambda c: c["backbone"].update(weights="another.safetensors")),
])
def test_an_edited_card_is_refused_naming_the_card_and_the_entry(checkpoint, entry, edit):
    _edit_card(checkpoint, edit)
    with pytest.raises(CheckpointCorruptError) as info:
        clipiqa.load_model("tiny", prompts=checkpoint)
    message = str(info.value)
    assert str(checkpoint / "card.json") in message and "edited" in message and entry in message, message
    assert "save the checkpoint again" in message


def test_a_reformatted_card_loads(checkpoint):
    card = json.loads((checkpoint / "card.json").read_text())
    (checkpoint / "card.json").write_text(json.dumps(dict(reversed(list(card.items())))))
    clipiqa.read_checkpoint(checkpoint)


def test_an_old_card_without_entry_hashes_loads_with_a_warning(checkpoint):
    _edit_card(checkpoint, lambda c: c["integrity"].pop("card_fields_sha256"))
    with pytest.warns(UserWarning, match="no hash of its own entries"):
        model = clipiqa.load_model("tiny", prompts=checkpoint)
    assert model.adapters_enabled


def test_an_old_card_with_a_size_the_backbone_cannot_take_names_the_card(checkpoint):
    def edit(card):
        card["integrity"].pop("card_fields_sha256")
        card["eval_transform"].update(size=300, resize=300)
    _edit_card(checkpoint, edit)
    with pytest.warns(UserWarning), pytest.raises(CheckpointMismatchError) as info:
        clipiqa.load_model("tiny", prompts=checkpoint)
    assert str(checkpoint / "card.json") in str(info.value) and "size 300" in str(info.value)
