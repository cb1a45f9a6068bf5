"""`clipiqa score` under torchrun (gloo, 2 CPU processes): sharded output equals the single-process output."""
import os
import subprocess
import sys

import pandas as pd

from bad_images import write_bad_images
from torchrun_helpers import torchrun


def test_sharded_scoring_equals_single_process(tmp_path, photo_dir):
    write_bad_images(tmp_path / "mixed")
    inputs = [str(photo_dir), str(tmp_path / "mixed")]
    single, sharded = tmp_path / "single.csv", tmp_path / "sharded.csv"
    args = ["-m", "clipiqa", "score", *inputs, "--model", "tiny", "--device", "cpu", "--batch-size", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(single)], env=env, capture_output=True, text=True)
    assert one.returncode == 2, one.stderr
    two = torchrun([*args, "--out", str(sharded)])
    assert two.returncode != 0 and sharded.is_file(), two.stderr[-2000:]  # exit 2 on a rank: some files failed
    a, b = pd.read_csv(single, keep_default_na=False), pd.read_csv(sharded, keep_default_na=False)
    assert list(a["path"]) == list(b["path"])  # merged in input order
    assert list(a["status"]) == list(b["status"])
    ok = a["status"] == "ok"
    diff = (a.loc[ok, "score"].astype(float) - b.loc[ok, "score"].astype(float)).abs().max()
    assert diff < 1e-5
