"""Dress rehearsal of the real path: the paper's ViT-B/16 architecture with random weights, laid into a
temporary Hugging Face cache exactly as the hub lays a download, offline. Everything a user runs with real weights
runs here: loading by preset name, `clipiqa score`, `clipiqa adapt` (paper trainable set), `clipiqa explain`, one
adaptation step and one scoring pass under bf16 autocast on the CPU; and everything printed says random init.

The numbers are meaningless (random weights); what is checked is that the real path works end to end.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import clipiqa
from clipiqa.metrics import srcc
from rehearsal import refuse_network, rehearsal_cache, rehearsal_env, use_cache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    """The ViT-B/16 gains from both cores (conftest sets one thread for the tiny model)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache():
    t0 = time.perf_counter()
    path = rehearsal_cache("vitb16-openai")
    print(f"\nrehearsal cache (random ViT-B/16) laid in {time.perf_counter() - t0:.1f} s")
    return path


@pytest.fixture(scope="module")
def b16(cache):
    """vitb16-openai loaded from the fake hub cache, offline, with sockets refused."""
    with pytest.MonkeyPatch.context() as mp:
        use_cache(mp, cache)
        refuse_network(mp)
        t0 = time.perf_counter()
        model = clipiqa.load_model("vitb16-openai", device="cpu")
        print(f"\nvitb16-openai loaded from the cache in {time.perf_counter() - t0:.1f} s")
    return model


@pytest.fixture
def offline_cache(cache, monkeypatch):
    use_cache(monkeypatch, cache)
    return cache


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo_table):
    """A handful of demo images (synthetic severities) with a labels CSV."""
    import shutil
    table = demo_table.head(8).copy()
    folder = tmp_path_factory.mktemp("rehearsal-photos")
    table["path"] = [shutil.copy(p, folder) for p in table["path"]]
    labels = folder / "labels.csv"
    pd.DataFrame({"path": table["path"], "score": 1 + 4 * table["q"],
                  "content_id": table["content_id"]}).to_csv(labels, index=False)
    return table, labels


def test_preset_resolves_from_the_hub_cache_and_says_random_init(b16, cache):
    from clipiqa.weights import weights_line
    source = b16.source
    assert source.weights.startswith(str(cache)) and source.weights.endswith("open_clip_model.safetensors")
    assert "models--timm--vit_base_patch16_clip_224.openai/snapshots/" in source.weights
    assert source.arch == "ViT-B-16" and len(b16.clip.visual.transformer.resblocks) == 12  # the full model
    assert b16.clip.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"  # OpenAI's
    assert source.random_init and b16.random_init
    line = weights_line(b16)
    assert source.weights in line and source.fingerprint in line and "random init" in line and "fp32" in line
    assert b16.transform_spec.size == 224


def test_same_weights_by_arch_tag_and_the_random_marker_is_read_without_loading(offline_cache, b16):
    from clipiqa.weights import weights_are_random
    assert weights_are_random("vitb16-openai") and weights_are_random("ViT-B-16:openai")
    by_tag = clipiqa.load_model("ViT-B-16:openai", device="cpu")
    assert by_tag.source.fingerprint == b16.source.fingerprint and by_tag.source.weights == b16.source.weights
    assert by_tag.random_init


def test_cli_score_adapt_explain_on_the_rehearsal_model(cache, photos, tmp_path, monkeypatch):
    table, labels = photos
    env = rehearsal_env(cache, OMP_NUM_THREADS="2")
    t0 = time.perf_counter()
    scored = subprocess.run([sys.executable, "-m", "clipiqa", "score", *table["path"], "--model", "vitb16-openai",
                             "--device", "cpu", "--out", str(tmp_path / "scores.csv")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    assert "random init" in scored.stderr and "models--timm--vit_base_patch16_clip_224.openai" in scored.stderr
    out = pd.read_csv(tmp_path / "scores.csv")
    assert (out["status"] == "ok").all() and len(out) == len(table)
    assert out["model"].str.contains("random init").all()
    t_score = time.perf_counter() - t0

    use_cache(monkeypatch, cache)
    from clipiqa.cli import main
    t0 = time.perf_counter()
    assert main(["adapt", "--labels", str(labels), "--model", "vitb16-openai", "--trainable", "last-blocks",
                 "--epochs", "1", "--batch-size", "4", "--augment", "none", "--device", "cpu",
                 "--out", str(tmp_path / "adapted")]) == 0
    card = clipiqa.read_checkpoint(tmp_path / "adapted").card
    assert card["backbone"]["random_init"] and card["backbone"]["preset"] == "vitb16-openai"
    assert card["tuned_blocks"] == 4 and card["trainable"] == "last-blocks"
    t_adapt = time.perf_counter() - t0

    t0 = time.perf_counter()
    assert main(["explain", table["path"].iloc[0], "--prompts", str(tmp_path / "adapted"), "--method", "ig",
                 "--ig-steps", "4", "--device", "cpu", "--out", str(tmp_path / "explained")]) == 0
    assert any((tmp_path / "explained").iterdir())
    t_explain = time.perf_counter() - t0
    print(f"\nrehearsal CLI: score {t_score:.1f} s (subprocess), adapt {t_adapt:.1f} s, explain {t_explain:.1f} s")


def test_one_bf16_adaptation_step_and_scoring_pass_on_cpu(b16, demo_table):
    from PIL import Image

    from clipiqa.data.transforms import eval_transform
    from clipiqa.finetune import EncodedSet, forward_cached
    from clipiqa.inference import predict_pil
    from clipiqa.losses import quality_loss, semantic_loss
    from clipiqa.qgr import QGRConfig, qgr_step

    model = b16
    images = [Image.open(p).convert("RGB") for p in demo_table["path"].head(4)]
    model.set_trainable("last-blocks")
    model.train()
    start = model.first_trainable_visual_block()
    encoded = EncodedSet(model, images, eval_transform(model), 1, start, 4)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=1e-2)
    index, view = torch.arange(4), torch.zeros(4, dtype=torch.long)
    x, teacher = encoded.batch(index, view)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_logits, s_logits = forward_cached(model, x, start)
    assert q_logits.dtype == torch.float32  # the head runs in fp32 outside autocast
    loss_q = quality_loss(q_logits, torch.tensor(demo_table["q"].head(4).to_numpy(), dtype=torch.float32))
    qgr_step(params, loss_q, semantic_loss(s_logits, teacher), QGRConfig(lam=5.0))
    optimizer.step()
    assert torch.isfinite(loss_q)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, params)), "the bf16 step changed nothing"
    model.eval()
    prediction = predict_pil(model, images, amp=True)  # one scoring pass under bf16 autocast
    assert torch.isfinite(prediction.margin).all() and prediction.margin.dtype == torch.float32


def test_bf16_scores_rank_like_fp32_on_the_rehearsal_model(b16, demo_table, monkeypatch):
    """amp="auto" may use bf16 on CPUs with native bf16 only if rankings survive: SRCC >= 0.999 against fp32.
    Plain bf16 autocast everywhere (amp=True) did not: 0.992 on these images (max |diff| 0.009 against a margin
    spread of 0.079), so "auto" keeps the pixel stage (patch embedding and first block) in fp32."""
    from PIL import Image

    import clipiqa.inference as inference
    images = [Image.open(p).convert("RGB") for p in demo_table["path"].head(32)]
    native = inference.cpu_has_native_bf16()
    assert inference.uses_bf16("cpu", "auto") == native
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda cpuinfo=None: True)  # the bf16 path on any CPU
    assert inference.uses_bf16("cpu", "auto") and "pixel stage" in inference.precision_name("cpu", "auto")
    with b16.adapters_off():
        fp32 = inference.predict_pil(b16, images, amp=False, batch_size=16).margin
        auto = inference.predict_pil(b16, images, amp="auto", batch_size=16).margin
    rho = srcc(auto.numpy(), fp32.numpy())
    print(f"\nSRCC against fp32 margins, 32 demo images, random ViT-B/16: auto {rho:.5f} (max |diff| "
          f"{float((auto - fp32).abs().max()):.3g}); margin spread {float(fp32.std()):.3g}; this CPU has native "
          f"bf16: {native}")
    assert not torch.equal(auto, fp32), "amp='auto' did not run bf16"
    assert rho >= 0.999


def test_pilot_gate_and_watch_on_the_rehearsal_model(cache, photos, tmp_path, monkeypatch, capsys):
    """The pilot's commands on the paper's architecture loaded as a real download is: gate fit, score --gate,
    watch --once twice (the second scores nothing)."""
    import json
    from pathlib import Path
    table, labels = photos
    use_cache(monkeypatch, cache)
    refuse_network(monkeypatch)
    from clipiqa.cli import main
    scores = tmp_path / "scores.csv"
    assert main(["score", *table["path"], "--model", "vitb16-openai", "--device", "cpu", "--out", str(scores)]) == 0
    session = tmp_path / "session"
    session.mkdir()
    labels_csv = session / "labels.csv"
    pd.DataFrame({"path": table["path"], "mos": [1, 2, 4, 5, 1, 2, 4, 5]}).to_csv(labels_csv, index=False)
    gate = tmp_path / "gate.json"
    assert main(["gate", "fit", "--labels", str(labels_csv), "--scores", str(scores), "--model", "vitb16-openai",
                 "--device", "cpu", "--bootstrap", "50", "--out", str(gate)]) == 0
    assert main(["score", *table["path"], "--model", "vitb16-openai", "--device", "cpu", "--gate", str(gate),
                 "--out", str(tmp_path / "decided.csv")]) == 0
    assert set(pd.read_csv(tmp_path / "decided.csv")["decision"]) <= {"pass", "reject"}
    (session / "settings.json").write_text(json.dumps({"model_name": "vitb16-openai", "checkpoint": None}))
    folder = str(Path(table["path"].iloc[0]).parent)
    run = ["watch", folder, "--session", str(session), "--gate", str(gate), "--once", "--json", "--device", "cpu"]
    capsys.readouterr()
    assert main(run) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["scored"] == len(table) and sum(first["decisions"].values()) == len(table)
    assert main(run) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["scored"] == 0


def test_pilot_cycle_versions_and_report_on_the_rehearsal_model(cache, demo_table, tmp_path, monkeypatch):
    """A re-labelling cycle (audit set, candidate, promotion or rejection), rollback and the HTML report with the
    paper's architecture loaded offline from the hub cache."""
    use_cache(monkeypatch, cache)
    refuse_network(monkeypatch)
    from clipiqa.finetune import AdaptConfig
    from clipiqa.pilot.report import build_report
    from clipiqa.pilot.versions import VersionLog, relabel_cycle, rollback
    from clipiqa.session import Session
    table = demo_table.head(30)
    session = Session(tmp_path / "line", images=table, model_name="vitb16-openai", device="cpu")
    for row in table.itertuples(index=False):
        session.label(row.path, 5 - min(int(row.level), 4))
    fast = AdaptConfig(trainable="text", epochs=1, augment="none", batch_size=32)
    first = relabel_cycle(session, fast, override="pilot start")
    second = relabel_cycle(session, fast)
    assert first["n_audit"] >= 6 and second["parent"] == first["candidate"]
    log = VersionLog(session.database_path)
    if session.active_checkpoint == second["candidate"]:
        assert rollback(session, log) == first["candidate"]
    assert session.active_checkpoint == first["candidate"]
    text = build_report(session)
    assert "random-init weights" in text and first["candidate"] in text
