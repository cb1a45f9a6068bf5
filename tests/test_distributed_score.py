"""`clipiqa score` under torchrun (gloo, 2 CPU processes): sharded output equals the single-process output."""
import os
import socket
import subprocess
import sys

import pandas as pd

from bad_images import write_bad_images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_scoring_equals_single_process(tmp_path, photo_dir):
    write_bad_images(tmp_path / "mixed")
    inputs = [str(photo_dir), str(tmp_path / "mixed")]
    single, sharded = tmp_path / "single.csv", tmp_path / "sharded.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    base = ["-m", "clipiqa", "score", *inputs, "--model", "tiny", "--device", "cpu", "--batch-size", "3"]
    one = subprocess.run([sys.executable, *base, "--out", str(single)], env=env, capture_output=True, text=True)
    assert one.returncode == 2, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *base[0:1],
                          *base[1:], "--out", str(sharded)], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode != 0 and sharded.is_file(), two.stderr[-2000:]
    a, b = pd.read_csv(single, keep_default_na=False), pd.read_csv(sharded, keep_default_na=False)
    assert list(a["path"]) == list(b["path"])  # merged in input order
    assert list(a["status"]) == list(b["status"])
    ok = a["status"] == "ok"
    diff = (a.loc[ok, "score"].astype(float) - b.loc[ok, "score"].astype(float)).abs().max()
    assert diff < 1e-5
