"""The line dashboard served by Voila (`clipiqa dashboard`) in Debian's Chromium: an image that arrives in the
line's folder gets its score on the page without a reload (tiny random-init model: the machinery only)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "test-output" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: install Debian's chromium"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("voila") is None, reason="voila is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image(path: Path, seed: int) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)


def test_dashboard_under_voila_shows_a_new_images_score(tmp_path):
    from playwright.sync_api import sync_playwright
    session, line = tmp_path / "session", tmp_path / "line"
    session.mkdir()
    line.mkdir()
    (session / "settings.json").write_text(json.dumps({"model_name": "tiny", "weights": None, "checkpoint": None,
                                                       "device": "cpu"}))
    for k in range(3):
        _image(line / f"first_{k}.png", k)
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPLBACKEND", None)
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "clipiqa.cli", "dashboard", str(session), "--folder", str(line),
                             "--interval", "1", "--port", str(port), "--no-browser"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"voila did not start: {(tmp_path / 'voila.log').read_text()[-2000:]}")
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.get_by_text("first_2.png").wait_for()
            assert page.get_by_text("Line dashboard").count() >= 1
            assert page.locator(".clipiqa-random-init").count() == 1  # the caveat is on the operator's screen
            _image(line / "new_arrival.png", 99)
            page.get_by_text("new_arrival.png").wait_for(timeout=120_000)  # scored and shown, no reload
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "line_dashboard.png"), full_page=True)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
