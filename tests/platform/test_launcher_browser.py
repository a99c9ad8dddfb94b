"""The user's path on Binder, in a real browser: JupyterLab (started through binder/start), the "latentsky
explorer" tile of its launcher, and the app it opens through jupyter-server-proxy, map drawn.

Headless Chromium (Debian's ``chromium``, ``make sysdeps``) driven by Playwright; the server runs in a fresh
HOME whose cache holds nothing, so the app opens on the sample it prepares itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("LATENTSKY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
TOKEN = "latentsky-test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: `make sysdeps` installs it"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on the course, started as Binder starts it (binder/start ... jupyter lab)."""
    tmp = tmp_path_factory.mktemp("lab")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTSKY_", "XDG_", "JUPYTER"))}
    env.update(HOME=str(tmp), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    # A home without the sample's results: binder/start prepares them in the background (as on a JupyterHub
    # with persistent homes) and the app opens on the sample's PCA map meanwhile; the test does not wait.
    cmd = [
        str(REPO / "binder" / "start"),
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={REPO / 'notebooks'}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp / "lab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start:\n" + (tmp / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield {"url": url, "log": tmp / "lab.log", "home": tmp}
    finally:
        # JupyterLab, the app it started and binder/start's background preparation share this session.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_launcher_tile_opens_the_app(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"{lab['url']}/lab?token={TOKEN}")
            tile = page.locator(".jp-LauncherCard", has_text="latentsky explorer")
            tile.wait_for(timeout=60000)
            page.screenshot(path=tmp_path / "launcher.png")
            app = None
            for _ in range(5):  # on a loaded machine the launcher may draw its tiles before it wires them
                try:
                    with context.expect_page(timeout=30000) as opened:
                        tile.click()
                    app = opened.value
                    break
                except sync_api.TimeoutError:
                    continue
            assert app is not None, "clicking the launcher tile opened no page in 150 s"
            errors = []
            app.on("pageerror", lambda e: errors.append(str(e)))
            app.wait_for_load_state(timeout=150000)
            assert app.url.startswith(f"{lab['url']}/latentsky/"), app.url
            app.wait_for_selector("text=125 spectra", timeout=150000)
            app.wait_for_selector(".latentsky-explore canvas", state="attached", timeout=30000)
            app.wait_for_timeout(1000)
            app.screenshot(path=tmp_path / "app.png")
            assert errors == [], errors
        finally:
            browser.close()
