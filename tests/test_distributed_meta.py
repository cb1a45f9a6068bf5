"""DDP on CPU: the helpers are no-ops alone and correct with gloo; ``torchrun`` meta pre-training with two
processes gives the same meta parameters as one process (tiny random-init model: machinery only)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clipiqa import distributed as ddp
from clipiqa.checkpoint import read_checkpoint
from clipiqa.cli import main
from torchrun_helpers import torchrun

TYPES = ["gaussian_blur", "white_noise", "jpeg", "darken", "pixelate", "desaturate"]



# ------------------------------------------------------------------------------------------- helpers alone
def test_helpers_are_no_ops_without_a_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.init_distributed() is False
    assert (ddp.get_rank(), ddp.get_world_size(), ddp.is_main(), ddp.is_distributed()) == (0, 1, True, False)
    t = [torch.ones(3), torch.arange(2.0)]
    assert ddp.all_reduce_sum_(t) is t and torch.equal(t[0], torch.ones(3))
    ddp.all_reduce_mean_(t)
    ddp.broadcast_(t)
    assert torch.equal(t[1], torch.arange(2.0))
    assert ddp.gather_objects({"a": 1}) == [{"a": 1}]
    assert ddp.all_reduce_max(True) == 1.0
    assert ddp.shard(list(range(5))) == [0, 1, 2, 3, 4]
    assert ddp.shard(list(range(5)), rank=1, world_size=2) == [1, 3]
    with pytest.raises(ValueError):
        ddp.shard([1], rank=2, world_size=2)
    assert ddp.device_for_rank("cpu") == "cpu"
    ddp.barrier()
    ddp.cleanup()


HELPER_SCRIPT = textwrap.dedent("""
    import torch
    from clipiqa import distributed as ddp
    assert ddp.init_distributed(device="cpu")
    r, w = ddp.get_rank(), ddp.get_world_size()
    assert w == 2 and ddp.is_main() == (r == 0)
    t = [torch.full((2,), float(r + 1)), torch.tensor([[float(r)]])]
    ddp.all_reduce_sum_(t)
    assert t[0].tolist() == [3.0, 3.0] and t[1].item() == 1.0
    m = [torch.tensor([float(r)])]
    ddp.all_reduce_mean_(m)
    assert m[0].item() == 0.5
    b = [torch.tensor([float(r + 10)])]
    ddp.broadcast_(b, src=1)
    assert b[0].item() == 11.0
    assert ddp.gather_objects({"rank": r}) == [{"rank": 0}, {"rank": 1}]
    assert ddp.all_reduce_max(r == 1) == 1.0
    assert ddp.shard(list("abcde")) == (["a", "c", "e"] if r == 0 else ["b", "d"])
    ddp.barrier()
    ddp.cleanup()
    open(f"ok-{r}", "w").write("ok")  # a file per rank: printed lines of two processes can interleave
""")


def test_helpers_with_two_gloo_processes(tmp_path):
    script = tmp_path / "helpers.py"
    script.write_text(HELPER_SCRIPT)
    done = torchrun([str(script)], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ok-0").is_file() and (tmp_path / "ok-1").is_file()


# ------------------------------------------------------------------------------------------- meta pre-training
LOOPS = {
    # Reptile directions all-reduced, then an Adam outer step whose moments every rank keeps identically
    "reptile-adam": ["--outer-optimizer", "adam", "--meta-lr", "0.01"],
    # the released loop (comparison only): every rank runs the sequential loop, rank 0's inner model is broadcast
    "released": ["--algorithm", "released", "--meta-lr", "0.5"],
}


@pytest.mark.parametrize("loop", ["reptile-adam", pytest.param("released", marks=pytest.mark.slow)])
def test_torchrun_meta_update_equals_single_process(tmp_path, loop):
    """Four training tasks in meta batches of two (one task per rank per step), two held-out tasks evaluated
    sharded; random crops and dropout on. Meta parameters after 2 meta steps agree to 1e-6."""
    common = ["pretrain", "--tasks", "demo", "--model", "tiny", "--device", "cpu", "--epochs", "1",
              "--inner-steps", "2", "--batch-size", "4", "--size", "64", "--types", *TYPES, "--levels", "2", "5",
              "--tasks-per-batch", "2", "--holdout", "jpeg,darken", "--inner-lr", "1e-2", *LOOPS[loop],
              "--cache-dir", str(tmp_path / "cache")]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(common + ["--out", str(single)]) == 0
    repo = Path(__file__).resolve().parents[1]
    done = torchrun(["-m", "clipiqa", *common, "--out", str(multi)], cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es)" in done.stderr

    for name in ("last", "best"):
        a, b = read_checkpoint(single / name).tensors, read_checkpoint(multi / name).tensors
        assert a.keys() == b.keys()
        for n in a:
            torch.testing.assert_close(b[n], a[n], rtol=0, atol=1e-6, msg=f"{name}/{n}")
    h1, h2 = pd.read_csv(single / "history.csv"), pd.read_csv(multi / "history.csv")
    assert list(h1.columns) == list(h2.columns) and len(h1) == len(h2)
    steps = h1[h1["kind"] == "step"]
    if loop == "released":  # synthetic tasks are one dataset: one phase, one outer step per epoch
        assert len(steps) == 1 and (steps["update_norm"] > 0).all()
    else:
        assert len(steps) == 2 and (steps["update_norm"] > 0).all()  # the meta parameters moved
    assert (steps["rel_move"] > 0).all()
    assert list(h1["tasks"].fillna("")) == list(h2["tasks"].fillna(""))
    numeric = [c for c in h1.columns if c not in ("kind", "tasks", "theta_hash", "seconds")]
    np.testing.assert_allclose(h1[numeric].to_numpy(float), h2[numeric].to_numpy(float), rtol=1e-5, atol=1e-6)
    # only rank 0 wrote: one state folder, no stray temporary folders
    assert sorted(p.name for p in multi.iterdir()) == ["best", "history.csv", "last", "state"]
